"""``xmr teacher export|import``."""

from __future__ import annotations

NAME = "teacher"
HELP = "export a trained model's top-K as a teacher store, or import another library's scores"
DESCRIPTION = """\
A teacher store holds, for every training point, the teacher's top-K labels and raw logits
(CSR: int32 ids, fp16 logits; memory-mapped during training).

  xmr teacher export --model runs/teacher/model --dataset debian-deps -k 32 --out runs/tstore
  xmr teacher import --scores preds.txt -k 32 --probabilities --out runs/tstore

`import` reads scores in the sparse text format (header `rows cols`, then `label:score ...` per
row), e.g. another library's predictions on the training set; --probabilities stores log(p) as
the logit so that softmax over the top-K gives back the renormalised probabilities."""


def register(p) -> None:
    from xmr.cli._types import positive_int

    from xmr.cli._common import add_dataset_args

    sub = p.add_subparsers(dest="action", metavar="ACTION")
    e = sub.add_parser("export", help="run a trained xmr model over a dataset split")
    e.add_argument("--model", required=True)
    add_dataset_args(e)
    e.set_defaults(split="train")
    e.add_argument("-k", type=positive_int, default=32, help="labels kept per row (default: %(default)s)")
    e.add_argument("--out", required=True)
    e.set_defaults(func=run_export)
    i = sub.add_parser("import", help="import external scores in sparse text format")
    i.add_argument("--scores", required=True)
    i.add_argument("-k", type=positive_int, default=32, help="labels kept per row (default: %(default)s)")
    i.add_argument("--probabilities", action="store_true", help="scores are probabilities: store log(p)")
    i.add_argument("--out", required=True)
    i.set_defaults(func=run_import)
    p.set_defaults(func=lambda args: p.print_help() or 2)


def run_export(args) -> int:

    from xmr.cli._common import load_split
    from xmr.teachers.store import from_topk
    from xmr.train.model import XMRModel
    from xmr.utils.hashing import sha256_file

    ds, X, _ = load_split(args)
    model = XMRModel.load(args.model, expect_num_labels=ds.num_labels, expect_num_features=ds.num_features)
    scores, ids = model.predict(X, args.k, progress=True)
    meta = {"source": "xmr model", "model": str(args.model),
            "model_sha256": sha256_file(f"{args.model}/weights.pt"), "dataset": args.dataset,
            "split": args.split, "temperature": 1.0, "k": args.k}
    from_topk(ids, scores, ds.num_labels, meta).save(args.out)
    print(f"teacher store with top-{args.k} of {ids.shape[0]} rows written to {args.out}")
    return 0


def run_import(args) -> int:
    import numpy as np

    from xmr.data.formats import read_sparse_text
    from xmr.teachers.store import from_scores_csr
    from xmr.utils.hashing import sha256_file

    S = read_sparse_text(args.scores).tocsr()
    if args.probabilities:
        if S.nnz and (S.data.min() < 0 or S.data.max() > 1):
            raise ValueError(f"{args.scores}: --probabilities given but scores lie in "
                             f"[{S.data.min()}, {S.data.max()}], outside [0, 1]")
        S.data = np.log(np.maximum(S.data, 1e-30)).astype(np.float32)
    meta = {"source": "imported scores", "scores": str(args.scores), "scores_sha256": sha256_file(args.scores),
            "probabilities": bool(args.probabilities), "temperature": 1.0, "k": args.k}
    from xmr.errors import XMRError

    try:
        store = from_scores_csr(S, args.k, meta)
    except ValueError as exc:
        raise XMRError(f"{args.scores}: {exc}") from None
    store.save(args.out)
    print(f"teacher store with top-{args.k} of {S.shape[0]} rows written to {args.out}")
    return 0
