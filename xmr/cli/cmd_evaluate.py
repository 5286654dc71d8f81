"""``xmr evaluate``."""

from __future__ import annotations

NAME = "evaluate"
HELP = "P@k, nDCG@k, recall@k, PSP@k, PSnDCG@k of a saved model on a dataset split"


def register(p) -> None:
    from xmr.cli._types import positive_int_list

    from xmr.cli._common import add_dataset_args

    p.add_argument("--model", required=True, help="model folder (OUT/model of `xmr train`)")
    add_dataset_args(p)
    p.add_argument("--ks", type=positive_int_list, default=(1, 3, 5), help="comma-separated cut-offs (default: 1,3,5)")
    p.add_argument("--by-frequency", action="store_true",
                   help="also P@1 and PSP@1 per bucket of the training frequency of each test "
                        "point's most frequent positive (0, 1-4, 5-19, 20-99, 100-999, >= 1000)")
    p.add_argument("--plot", default=None, metavar="PNG", help="with --by-frequency: draw it to this PNG")
    p.set_defaults(func=run)


def run(args) -> int:
    import json

    from xmr.cli._common import load_split
    from xmr.eval.model_eval import evaluate_model
    from xmr.models.xmr_model import XMRModel

    ks = tuple(args.ks)
    ds, _, _ = load_split(args, args.model)
    model = XMRModel.load(args.model, expect_num_labels=ds.num_labels, expect_num_features=ds.num_features)
    m = evaluate_model(model, ds, ks=ks, split=args.split, by_frequency=args.by_frequency)
    if args.by_frequency and args.plot:
        from xmr.eval.frequency import plot_by_frequency

        plot_by_frequency({str(args.model): m["by_frequency"]}, args.plot)
    print(json.dumps(m, indent=2))
    return 0
