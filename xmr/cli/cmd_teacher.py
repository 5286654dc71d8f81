"""``xmr teacher export|import``."""

from __future__ import annotations

NAME = "teacher"
HELP = "export a trained model's top-K as a teacher store, or import another library's scores"
DESCRIPTION = """\
A teacher store holds, for every training point, the teacher's top-K labels and raw logits
(CSR: int32 ids, fp16 logits; memory-mapped during training).

  xmr teacher export --dataset NAME|DIR --folds 5 [--config t.json] [--set model.dim=256] -k 32 --out runs/tstore
  xmr teacher export --model runs/teacher/model --dataset debian-deps -k 32 --out runs/tstore
  xmr teacher import --scores preds.txt -k 32 --probabilities --out runs/tstore

  xmr teacher fit --backend omikuji --dataset debian-deps --folds 5 -k 32 --out runs/tree
  xmr teacher combine runs/tstore runs/tree --weights 1,1 -k 32 --out runs/ensemble
  xmr teacher report runs/tstore runs/tree runs/ensemble --dataset debian-deps

`fit` trains a tree teacher (omikuji or napkinXC, from the optional extra `xmr[peers]`) per
fold and stores each training point's out-of-fold top-K probabilities. `combine` averages the
probabilities of several stores (an ensemble). `report` measures each store on the training
points against their labels: log-loss, ECE, top-K recall, P@1, P@5 — the teacher's quality in
the sense of Menon et al. (2020): how well it estimates p*(y|x), which is what distillation
needs (prefer the lower log-loss).

`import` reads scores in the sparse text format (header `rows cols`, then `label:score ...` per
row), e.g. another library's predictions on the training set; --probabilities stores log(p) as
the logit so that softmax over the top-K gives back the renormalised probabilities.

`export` without --model trains the teacher itself, cross-fitted: the training points are split
into --folds folds (default 5) and each fold is scored by a teacher trained on the other folds
(the config: --config/--set as for `xmr train`; loss.preset defaults to softmax, and without
--config valid_fraction=0, eval_every=0). --folds 1 trains one teacher on all points that scores
its own training points (memorised labels; not recommended). With --model an already trained
model scores the chosen split (it has seen its own training points)."""


def register(p) -> None:
    from xmr.cli._types import positive_int

    from xmr.cli._common import add_dataset_args

    sub = p.add_subparsers(dest="action", metavar="ACTION")
    e = sub.add_parser("export", help="train a cross-fitted teacher (or run a trained model) "
                       "and store its top-K on the training points")
    e.add_argument("--model", default=None, help="score with this trained model instead of "
                   "training cross-fitted teachers")
    add_dataset_args(e)
    e.set_defaults(split="train")
    e.add_argument("--folds", type=positive_int, default=None,
                   help="cross-fitting folds when training the teacher (default 5)")
    e.add_argument("--config", default=None, help="teacher TrainConfig JSON (see xmr train --print-config)")
    e.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a teacher config value (repeatable)")
    e.add_argument("--seed", type=int, default=None, help="fold assignment seed (default: config seed)")
    e.add_argument("--workdir", default=None, help="keep each fold's teacher run here")
    e.add_argument("--no-progress", action="store_true", help="no progress bar")
    e.add_argument("-k", type=positive_int, default=32, help="labels kept per row (default: %(default)s)")
    e.add_argument("--out", required=True)
    e.set_defaults(func=run_export)
    i = sub.add_parser("import", help="import external scores in sparse text format")
    i.add_argument("--scores", required=True)
    i.add_argument("-k", type=positive_int, default=32, help="labels kept per row (default: %(default)s)")
    i.add_argument("--probabilities", action="store_true", help="scores are probabilities: store log(p)")
    i.add_argument("--out", required=True)
    i.set_defaults(func=run_import)
    f = sub.add_parser("fit", help="cross-fitted tree teacher (omikuji or napkinXC) of the training split")
    f.add_argument("--backend", choices=("omikuji", "napkinxc"), default="omikuji")
    add_dataset_args(f, split=False)
    f.add_argument("--folds", type=int, default=5, help="cross-fitting folds (1: score own training points)")
    f.add_argument("-k", type=int, default=32)
    f.add_argument("--threads", type=int, default=1)
    f.add_argument("--seed", type=int, default=0)
    f.add_argument("--out", required=True)
    f.set_defaults(func=run_fit)
    c = sub.add_parser("combine", help="average the probabilities of several teacher stores")
    c.add_argument("stores", nargs="+")
    c.add_argument("--weights", default=None, help="comma-separated weights (default: equal)")
    c.add_argument("--taus", default=None, help="comma-separated temperatures (default: 1)")
    c.add_argument("-k", type=int, default=32)
    c.add_argument("--out", required=True)
    c.set_defaults(func=run_combine)
    r = sub.add_parser("report", help="log-loss, ECE, top-K recall and P@k of teacher stores")
    r.add_argument("stores", nargs="+")
    add_dataset_args(r, split=False)
    r.add_argument("--tau", type=float, default=1.0)
    r.add_argument("--calibrate", action="store_true",
                   help="also fit τ_t (lowest out-of-fold ECE over a grid; use it as loss.tau_t)")
    r.add_argument("--json", action="store_true", help="print JSON instead of a table")
    r.set_defaults(func=run_report)
    p.set_defaults(func=lambda args: p.print_help() or 2)


def run_export(args) -> int:
    if args.model is None:
        return _export_cross_fitted(args)
    if args.folds not in (None, 1) or args.config or args.overrides:
        from xmr.errors import ConfigError

        raise ConfigError("--model scores with an already trained model: --folds, --config and "
                          "--set apply only when the teacher is trained here (without --model)")

    from xmr.cli._common import load_split
    from xmr.models.xmr_model import XMRModel
    from xmr.teachers.store import from_topk
    from xmr.utils.hashing import sha256_file

    ds, X, _ = load_split(args, args.model)
    model = XMRModel.load(args.model, expect_num_labels=ds.num_labels, expect_num_features=ds.num_features)
    scores, ids = model.predict(X, args.k, progress=True)
    meta = {"source": "xmr model", "model": str(args.model),
            "model_sha256": sha256_file(f"{args.model}/weights.pt"), "dataset": ds.name,
            "split": args.split, "temperature": 1.0, "k": args.k}
    from_topk(ids, scores, ds.num_labels, meta).save(args.out)
    print(f"teacher store with top-{args.k} of {ids.shape[0]} rows written to {args.out}")
    return 0


def _export_cross_fitted(args) -> int:
    from xmr.cli._common import DATA_FIELDS
    from xmr.errors import ConfigError
    from xmr.teachers.export import export_teacher
    from xmr.train.config import TrainConfig

    if args.split != "train":
        raise ConfigError("a trained teacher is exported on the training split only")
    folds = 5 if args.folds is None else args.folds
    if folds < 1:
        raise ConfigError(f"--folds: expected an integer >= 1, got {folds}")
    if args.config:
        cfg = TrainConfig.from_json(args.config)
    else:
        cfg = TrainConfig()
        cfg.loss.preset = "softmax"
        cfg.data.valid_fraction = 0.0
        cfg.eval_every = 0
    cfg = cfg.with_overrides(args.overrides)
    for k in DATA_FIELDS:  # --dataset, --format, ... given on the command line win over the config
        if getattr(args, k, None) is not None:
            setattr(cfg.data, k, getattr(args, k))
    if args.k < 1:
        raise ConfigError(f"-k: expected a positive integer, got {args.k}")
    res = export_teacher(cfg, None, k=args.k, folds=folds, seed=args.seed, out=args.out,
                         workdir=args.workdir, progress=not args.no_progress)
    print(f"teacher store with top-{args.k} of {res.store.num_rows} rows ({folds} fold(s), "
          f"{'out-of-fold' if folds > 1 else 'own training points'}) written to {args.out}")
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


def _floats(text, what: str):
    if text is None:
        return None
    try:
        return [float(v) for v in text.split(",")]
    except ValueError:
        raise ValueError(f"{what}: expected comma-separated numbers, got {text!r}") from None


def run_fit(args) -> int:
    from xmr.cli._common import data_config
    from xmr.data.loaders import load_from_config
    from xmr.teachers.trees import fit_tree_teacher

    ds = load_from_config(data_config(args))
    store = fit_tree_teacher(ds.X_trn, ds.Y_trn, args.backend, folds=args.folds, k=args.k,
                             seed=args.seed, threads=args.threads, progress=True)
    store.meta.update(dataset=ds.name, split="train")
    store.save(args.out)
    print(f"{args.backend} teacher ({args.folds} folds) with top-{args.k} of {store.num_rows} "
          f"rows written to {args.out}")
    return 0


def run_combine(args) -> int:
    from xmr.teachers.combine import combine_stores
    from xmr.teachers.store import TeacherStore

    stores = [TeacherStore.load(s) for s in args.stores]
    w, taus = _floats(args.weights, "--weights"), _floats(args.taus, "--taus")
    for name, v in (("--weights", w), ("--taus", taus)):
        if v is not None and len(v) != len(stores):
            raise ValueError(f"{name}: expected {len(stores)} values (one per store), got {len(v)}")
    out = combine_stores(stores, w, k=args.k, taus=taus)
    out.meta["out_of_fold"] = all(bool(s.meta.get("out_of_fold", False)) for s in stores)
    out.save(args.out)
    print(f"ensemble of {len(stores)} stores with top-{args.k} of {out.num_rows} rows written to {args.out}")
    return 0


def run_report(args) -> int:
    import json

    from xmr.cli._common import data_config
    from xmr.data.loaders import load_from_config
    from xmr.teachers.report import teacher_report
    from xmr.teachers.store import TeacherStore

    ds = load_from_config(data_config(args))
    rows = {}
    for s in args.stores:
        st = TeacherStore.load(s)
        rows[s] = teacher_report(st, ds.Y_trn, tau=args.tau)
        if args.calibrate:
            from xmr.teachers.report import calibrate_temperature

            rows[s]["calibrated"] = calibrate_temperature(st, ds.Y_trn)
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    print(f"{'store':<40s} {'log-loss':>9s} {'ECE':>7s} {'recall@K':>9s} {'P@1':>7s} {'P@5':>7s}  out-of-fold")
    for s, r in rows.items():
        print(f"{s:<40s} {r['log_loss']:>9.3f} {r['ece']:>7.3f} {r['top_k_recall']:>9.3f} "
              f"{r['P@1']:>7.3f} {r['P@5']:>7.3f}  {'yes' if r['out_of_fold'] else 'NO (optimistic)'}")
        if "calibrated" in r:
            c = r["calibrated"]
            print("    τ_t by out-of-fold ECE: " + ", ".join(
                f"{e['tau']:g}: {e['ece']:.3f}" for e in c["grid"]) + f"  -> loss.tau_t={c['tau']:g}")
    return 0
