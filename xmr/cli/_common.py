"""Argument helpers shared by the CLI commands."""

from __future__ import annotations

import json
from pathlib import Path

DATASET_HELP = ("dataset: a registered name (debian-deps, or one prepared with `xmr data "
                "prepare`) or a path — a folder of XC train.txt/test.txt, trn_X_Xf.txt/... "
                "sparse files, X_trn.npz/... matrices, train.tsv/test.tsv labelled text, LF "
                "trn.json.gz/tst.json.gz, a prepared folder, or one .tsv/XC file (split by "
                "--test-fraction/--split-seed)")


def add_dataset_args(p, split: bool = True, default=None) -> None:
    """``--dataset`` and the data options; a value left unset falls back to the model's
    training config (when the command has ``--model``), else to the DataConfig default."""
    p.add_argument("--dataset", default=default, metavar="NAME|PATH",
                   help=DATASET_HELP + " (default: the dataset the model was trained on, else "
                        "debian-deps)")
    p.add_argument("--root", default=None,
                   help="root of prepared datasets and converted copies ($XMR_DATA or ~/xmr_data)")
    p.add_argument("--format", default=None, choices=("xc", "sparse", "npz", "tsv", "lf"),
                   help="force the layout of a dataset folder (default: detect)")
    p.add_argument("--min-df", type=int, default=None, help="TF-IDF min_df of text datasets")
    p.add_argument("--test-fraction", type=float, default=None,
                   help="single-file datasets and debian-deps: test share of the seeded split")
    p.add_argument("--split-seed", type=int, default=None, help="seed of that split")
    p.add_argument("--prop-a", type=float, default=None, help="propensity constant A")
    p.add_argument("--prop-b", type=float, default=None, help="propensity constant B")
    if split:
        p.add_argument("--split", choices=("train", "test"), default="test", help="which split")


DATA_FIELDS = ("dataset", "root", "format", "min_df", "test_fraction", "split_seed", "prop_a",
           "prop_b")


def model_data_config(model_dir) -> dict:
    """The ``data`` section of a saved model's training config ({} when there is none)."""
    if model_dir is None:
        return {}
    try:
        meta = json.loads((Path(model_dir) / "config.json").read_text())
    except (OSError, ValueError):
        return {}
    # a damaged config.json is reported by the model loader, with its file named; here it
    # only means "no data options to fall back on"
    tc = meta.get("train_config") if isinstance(meta, dict) else None
    data = tc.get("data") if isinstance(tc, dict) else None
    return dict(data) if isinstance(data, dict) else {}


def data_config(args, model_dir=None):
    """A :class:`DataConfig` from the flags, falling back to the model's training data."""
    from xmr.train.config import DataConfig

    base = {k: v for k, v in model_data_config(model_dir).items() if k in DATA_FIELDS}
    given = {k: getattr(args, k, None) for k in DATA_FIELDS}
    if given["dataset"] is not None and given["dataset"] != base.get("dataset"):
        base = {}  # another dataset: the model's data options do not apply to it
    d = DataConfig()
    for k in DATA_FIELDS:
        v = given[k] if given[k] is not None else base.get(k)
        if v is not None:
            setattr(d, k, v)
    return d


def load_split(args, model_dir=None):
    from xmr.data.loaders import load_from_config

    ds = load_from_config(data_config(args, model_dir))
    split = getattr(args, "split", "test")
    X, Y = (ds.X_trn, ds.Y_trn) if split == "train" else (ds.X_tst, ds.Y_tst)
    return ds, X, Y
