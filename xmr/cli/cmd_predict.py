"""``xmr predict``."""

from __future__ import annotations

NAME = "predict"
HELP = "top-k labels of a saved model for every row of a dataset split"


def register(p) -> None:
    from xmr.cli._types import positive_int

    from xmr.cli._common import add_dataset_args

    p.add_argument("--model", required=True, help="model folder (OUT/model of `xmr train`)")
    add_dataset_args(p)
    p.add_argument("-k", type=positive_int, default=5, help="labels per row (default: %(default)s)")
    p.add_argument("--out", required=True, help="output .npz with arrays ids i64[n,k] and scores f32[n,k]")
    p.set_defaults(func=run)


def run(args) -> int:
    import numpy as np

    from xmr.cli._common import load_split
    from xmr.train.model import XMRModel
    from xmr.utils.atomic import atomic_open

    ds, X, _ = load_split(args)
    model = XMRModel.load(args.model, expect_num_labels=ds.num_labels, expect_num_features=ds.num_features)
    scores, ids = model.predict(X, args.k, progress=True)
    with atomic_open(args.out, "wb") as f:
        np.savez(f, ids=ids, scores=scores)
    print(f"wrote top-{args.k} of {ids.shape[0]} rows to {args.out}")
    return 0
