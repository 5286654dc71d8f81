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
    import time

    import numpy as np

    from xmr.cli._common import load_split
    from xmr.eval import evaluate
    from xmr.eval.propensity import inverse_propensity
    from xmr.train.model import XMRModel

    ds, X, Y = load_split(args)
    ks = tuple(args.ks)
    model = XMRModel.load(args.model, expect_num_labels=ds.num_labels, expect_num_features=ds.num_features)
    pairs = ds.filter_pairs if args.split == "test" else None
    # filtered pairs are dropped from the ranking: predict enough extra labels to keep k
    extra = int(np.bincount(pairs[:, 0]).max()) if pairs is not None and len(pairs) else 0
    t0 = time.perf_counter()
    _, ids = model.predict(X, max(ks) + extra)
    ms = 1000 * (time.perf_counter() - t0) / max(X.shape[0], 1)
    inv = inverse_propensity(ds.Y_trn, A=ds.prop_a, B=ds.prop_b)
    m = evaluate(Y, ids, ks=ks, inv_prop=inv, filter_pairs=pairs)
    m["predict_ms_per_query"] = ms
    if args.by_frequency:
        from xmr.eval.frequency import by_frequency

        m["by_frequency"] = by_frequency(ds.Y_trn, Y, ids, inv, filter_pairs=pairs)
        if args.plot:
            from xmr.eval.frequency import plot_by_frequency

            plot_by_frequency({str(args.model): m["by_frequency"]}, args.plot)
    print(json.dumps(m, indent=2))
    return 0
