"""``xmr evaluate``."""

from __future__ import annotations

NAME = "evaluate"
HELP = "P@k, nDCG@k, recall@k, PSP@k, PSnDCG@k of a saved model on a dataset split"


def register(p) -> None:
    from xmr.cli._common import add_dataset_args

    p.add_argument("--model", required=True, help="model folder (OUT/model of `xmr train`)")
    add_dataset_args(p)
    p.add_argument("--ks", default="1,3,5", help="cut-offs (default: %(default)s)")
    p.add_argument("--by-frequency", action="store_true",
                   help="also P@1 and PSP@1 per bucket of the training frequency of each test "
                        "point's most frequent positive (0, 1-4, 5-19, 20-99, 100-999, >= 1000)")
    p.add_argument("--plot", default=None, metavar="PNG", help="with --by-frequency: draw it to this PNG")
    p.set_defaults(func=run)


def run(args) -> int:
    import json

    from xmr.cli._common import load_split
    from xmr.errors import ConfigError
    from xmr.eval.model_eval import evaluate_model
    from xmr.train.model import XMRModel

    try:
        ks = tuple(int(k) for k in args.ks.split(","))
    except ValueError:
        raise ConfigError(f"--ks: expected comma-separated integers, got {args.ks!r}") from None
    ds, _, _ = load_split(args, args.model)
    model = XMRModel.load(args.model, expect_num_labels=ds.num_labels, expect_num_features=ds.num_features)
    m, ids = evaluate_model(model, ds, ks=ks, split=args.split, return_ids=True)
    if args.by_frequency:
        from xmr.eval.frequency import by_frequency
        from xmr.eval.propensity import inverse_propensity

        Y = ds.Y_tst if args.split == "test" else ds.Y_trn
        pairs = ds.filter_pairs if args.split == "test" else None
        inv = inverse_propensity(ds.Y_trn, A=ds.prop_a, B=ds.prop_b)
        m["by_frequency"] = by_frequency(ds.Y_trn, Y, ids, inv, filter_pairs=pairs)
        if args.plot:
            from xmr.eval.frequency import plot_by_frequency

            plot_by_frequency({str(args.model): m["by_frequency"]}, args.plot)
    print(json.dumps(m, indent=2))
    return 0
