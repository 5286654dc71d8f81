"""Argument helpers shared by the CLI commands."""

from __future__ import annotations


def add_dataset_args(p, split: bool = True) -> None:
    p.add_argument("--dataset", default="debian-deps",
                   help="dataset name (debian-deps, or a prepared registry dataset) or prepared folder")
    p.add_argument("--root", default=None, help="root of prepared datasets ($XMR_DATA or ~/xmr_data)")
    if split:
        p.add_argument("--split", choices=("train", "test"), default="test", help="which split")


def load_split(args):
    from xmr.data.loaders import load_dataset

    ds = load_dataset(args.dataset, args.root)
    split = getattr(args, "split", "test")
    X, Y = (ds.X_trn, ds.Y_trn) if split == "train" else (ds.X_tst, ds.Y_tst)
    return ds, X, Y
