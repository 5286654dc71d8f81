"""`xmr index build|search`: build a FAISS label index from embeddings or a model, and query it."""

from __future__ import annotations

import argparse
from pathlib import Path

NAME = "index"
HELP = "build or search a FAISS label index (top-k labels by inner product)"
DESCRIPTION = """\
Build a FAISS index over label embeddings and search it.

  xmr index build --embeddings labels.npy --out idx/ --factory HNSW32 --set efSearch=256
  xmr index build --model runs/model/ --out idx/ --factory 'IVF{nlist},Flat' --set nprobe=64
  xmr index build --model runs/model/ --out idx/ --no-mips     # raw inner product
  xmr index search --index idx/ --queries q.npy -k 10 --out top10.npz
  xmr index search --index idx/ --model runs/model/ --dataset NAME|PATH [--split test] -k 10

--embeddings is a float .npy of shape [L, d] (row j = label j); --model is a saved xmr model
folder whose weights.pt holds the label table under the key 'label_table.weight'. Factory
strings: Flat, IVF{nlist},Flat ({nlist} = about 4*sqrt(L) unless --set nlist=N), HNSW32,
IVF{nlist},PQ16, ... The flags and --set fill one IndexConfig (xmr.index.config): --set takes
build parameters (nlist, efConstruction, train_points_per_list) and search parameters (nprobe,
efSearch, ht, k_factor, max_codes), which are saved with the index (values are JSON: 64, 2.5);
`search --set` overrides the latter. An unknown name or a wrong type is refused up front.

--mips indexes [w, sqrt(M^2 - ||w||^2)] under L2 and searches with [q, 0] (Bachrach et al.
2014): the same ranking as the inner product, but HNSW and IVF keep their recall when the row
norms vary, as in a trained label table (HNSW32 10-recall@10 on a debian-deps model: 0.80 raw,
0.97 with the reduction). It is the default with --model (and --metric ip), off with
--embeddings; the index records it and `search` applies the query side and returns inner
products.
"""


def register(parser: argparse.ArgumentParser) -> None:
    from xmr.cli._types import positive_int

    sub = parser.add_subparsers(dest="action", metavar="ACTION")
    b = sub.add_parser("build", help="build an index and save it as a folder")
    src = b.add_mutually_exclusive_group(required=True)
    src.add_argument("--embeddings", type=Path, metavar="FILE.npy",
                     help="label embeddings, float array [L, d]")
    src.add_argument("--model", type=Path, metavar="MODEL_DIR",
                     help="a saved model folder (weights.pt, key label_table.weight)")
    b.add_argument("--out", type=Path, required=True, metavar="DIR", help="index folder to write")
    b.add_argument("--factory", default="HNSW32", help="FAISS factory string (default HNSW32)")
    b.add_argument("--metric", default="ip", choices=["ip", "l2"], help="default ip")
    b.add_argument("--mips", action=argparse.BooleanOptionalAction, default=None,
                   help="MIPS->L2 reduction (default: on with --model and --metric ip, off with "
                        "--embeddings)")
    b.add_argument("--shards", type=int, default=1, help="label-range shards (default 1)")
    b.add_argument("--gpu", default="auto", choices=["auto", "yes", "no"],
                   help="use a GPU when FAISS sees one (default auto)")
    b.add_argument("--seed", type=int, default=0)
    b.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", dest="params",
                   help="index parameter, repeatable (nlist, efConstruction, nprobe, "
                        "efSearch, ...)")

    s = sub.add_parser("search", help="top-k labels for query embeddings")
    s.add_argument("--index", type=Path, required=True, metavar="DIR")
    q = s.add_mutually_exclusive_group(required=True)
    q.add_argument("--queries", type=Path, metavar="FILE.npy",
                   help="query embeddings, float array [n, d]")
    q.add_argument("--model", type=Path, metavar="MODEL_DIR",
                   help="embed the rows of --dataset's --split with this model as the queries")
    from xmr.cli._common import add_dataset_args

    add_dataset_args(s)
    s.add_argument("-k", type=positive_int, default=10, help="labels per query (default 10)")
    s.add_argument("--out", type=Path, metavar="FILE.npz",
                   help="write ids (i64[n,k], -1 padded) and scores (f32[n,k]) here")
    s.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", dest="params",
                   help="search parameter override, repeatable (nprobe, efSearch, ...)")
    parser.set_defaults(func=run)


def build_config(args):
    """The :class:`~xmr.index.config.IndexConfig` of ``xmr index build``: its flags, then
    ``--set``."""
    from xmr.index.config import IndexConfig

    cfg = IndexConfig(factory=args.factory, metric=args.metric, mips=args.mips,
                      shards=args.shards, seed=args.seed,
                      use_gpu={"auto": "auto", "yes": True, "no": False}[args.gpu])
    return cfg.validate().with_overrides(args.params)


def search_params(items) -> dict:
    """``xmr index search --set``: FAISS search parameters only, read as
    :class:`~xmr.index.config.IndexConfig` fields (so names and types are checked)."""
    from xmr.errors import ConfigError
    from xmr.index.config import FAISS_PARAMS, SEARCH_PARAMS, IndexConfig
    from xmr.utils.config import parse_assignment

    cfg = IndexConfig().with_overrides(items)
    for item in items:
        key = ".".join(parse_assignment(item)[0])
        if key not in FAISS_PARAMS:
            raise ConfigError(f"--set: expected a search parameter ({', '.join(SEARCH_PARAMS)}), "
                              f"got {key!r}, an option of `xmr index build`")
    return cfg.faiss_params()


def _load_matrix(path: Path, what: str):
    import numpy as np

    from xmr.errors import FormatError

    if not path.is_file():
        raise FormatError(path, None, f"a .npy file of {what}", "no such file")
    try:
        a = np.load(path, allow_pickle=False)
    except (ValueError, OSError) as exc:
        raise FormatError(path, None, f"a .npy file of {what}", f"unreadable ({exc})") from None
    if not isinstance(a, np.ndarray) or a.ndim != 2 or not np.issubdtype(a.dtype, np.floating):
        shape = getattr(a, "shape", "?")
        dtype = getattr(a, "dtype", type(a).__name__)
        raise FormatError(path, None, f"a 2-D float array of {what}",
                          f"shape {shape} dtype {dtype}")
    return a


def run(args) -> int:
    import time

    import numpy as np

    from xmr.errors import XMRError
    from xmr.index.label_index import LabelIndex
    from xmr.utils.atomic import atomic_open

    action = getattr(args, "action", None)
    if action not in ("build", "search"):
        raise XMRError("expected an action, build or search (see `xmr index --help`)")
    if action == "build":
        opts = build_config(args).build_kwargs()
        if args.embeddings:
            emb = _load_matrix(args.embeddings, "label embeddings [L, d]")
        t0 = time.perf_counter()
        try:
            if args.embeddings:
                index = LabelIndex.build(emb, **{**opts, "mips": bool(opts["mips"])})
            else:
                from xmr.api import build_index

                index = build_index(args.model, **opts)  # reads weights.pt
        except XMRError:
            raise
        except (ValueError, TypeError) as exc:
            raise XMRError(str(exc)) from None
        dt = time.perf_counter() - t0
        index.save(args.out)
        print(f"built {index.factory} index{' (MIPS->L2)' if index.mips else ''} over "
              f"{index.num_labels} labels of dim {index.dim} "
              f"({len(index.shards_)} shard(s)) in {dt:.2f}s; search params "
              f"{index.search_params}; saved to {args.out}")
        return 0
    else:  # search
        params = search_params(args.params)
        if args.queries is not None:
            Q = _load_matrix(args.queries, "query embeddings [n, d]")
        else:
            from xmr.api import embed
            from xmr.cli._common import load_split
            from xmr.models.xmr_model import XMRModel

            ds, X, _ = load_split(args, args.model)
            model = XMRModel.load(args.model, expect_num_labels=ds.num_labels,
                                  expect_num_features=ds.num_features)
            Q = embed(model, X)
        index = LabelIndex.load(args.index, expect_dim=Q.shape[1])
        try:
            if params:
                index.set_params(**params)
            t0 = time.perf_counter()
            scores, ids = index.search(Q, args.k)
        except (ValueError, TypeError) as exc:
            raise XMRError(str(exc)) from None
        dt = time.perf_counter() - t0
        if args.out:
            with atomic_open(args.out, "wb") as f:
                np.savez(f, ids=ids, scores=scores)
        padded = int((ids < 0).sum())
        print(f"searched {Q.shape[0]} queries, k={args.k}, in {dt:.3f}s "
              f"({Q.shape[0] / max(dt, 1e-9):.0f} queries/s); {padded} padded results"
              + (f"; wrote {args.out}" if args.out else ""))
        if not args.out:
            for r in range(min(3, Q.shape[0])):
                print(f"  query {r}: " + " ".join(f"{i}:{s:.4g}" for i, s in
                                                  zip(ids[r], scores[r]) if i >= 0))
        return 0
