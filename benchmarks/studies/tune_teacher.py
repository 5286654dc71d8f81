"""Seeded search of the distillation recipe on a validation split (issue 13, points 3-4).

The student's recipe comes from ``tune_student``; this script tunes what distillation adds: the
teacher (tree / neural / ensemble, cross-fitted), α, τ_t and the form of the teacher term, and
compares the reductions with a teacher (decoupled, OvA). Every run uses the training points of
debian-deps' seeded split only: 10 % of them (the trainer's own ``split_valid`` rule, seed 0)
are the validation rows, and **the teacher is cross-fitted on the other 90 % alone**, so no
validation label reaches the student through the teacher's scores. The test split is never
read. Results: ``benchmarks/results/tune_teacher.json`` (rendered in the README).

    python -m benchmarks.studies.tune_teacher                       # about 40 minutes on 2 cores
    python -m benchmarks.studies.tune_teacher --quick               # smoke run
    python -m benchmarks.studies.tune_teacher --only alpha=0.25     # chosen runs (names below)
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np

from benchmarks._common import write_result
from benchmarks.studies.tune_student import run_one

VALID_FRACTION = 0.1


def base_config(quick: bool):
    """The student recipe ``tune_student`` chose (and the demo runs)."""
    from xmr.train.config import TrainConfig

    cfg = TrainConfig(seed=0, eval_every=1, threads=0)
    cfg.loss.preset = "softmax"
    cfg.model.dim = 32 if quick else 96
    cfg.optim.epochs = 1 if quick else 8
    cfg.data.valid_fraction = VALID_FRACTION
    cfg.early_stopping_patience = 2
    cfg.restore_best = True
    return cfg


#: name -> (teacher or None, {dotted key: value})
RUNS = {
    "softmax": (None, {}),
    "distill tree a=0.5": ("tree", {"loss.preset": "distill", "loss.alpha": 0.5}),
    "distill tree a=0.25": ("tree", {"loss.preset": "distill", "loss.alpha": 0.25}),
    "distill tree a=0.1": ("tree", {"loss.preset": "distill", "loss.alpha": 0.1}),
    "distill tree a=0.25 tau=2": ("tree", {"loss.preset": "distill", "loss.alpha": 0.25, "loss.tau_t": 2.0}),
    "distill tree a=0.25 tau=0.5": ("tree", {"loss.preset": "distill", "loss.alpha": 0.25, "loss.tau_t": 0.5}),
    # the decoupled teacher term: the teacher's labels compete with the negatives only
    "distill tree a=0.5 dec-term": ("tree", {"loss.preset": "distill", "loss.alpha": 0.5,
                                             "loss.teacher_term": "decoupled"}),
    "distill tree a=0.25 dec-term": ("tree", {"loss.preset": "distill", "loss.alpha": 0.25,
                                              "loss.teacher_term": "decoupled"}),
    "distill tree a=0.75 dec-term": ("tree", {"loss.preset": "distill", "loss.alpha": 0.75,
                                              "loss.teacher_term": "decoupled"}),
    # one-versus-all over all labels, alone and with the tree's per-label probabilities
    "ova": (None, {"loss.reduction": "ova", "model.label_bias": True}),
    "distill tree a=0.5 ova": ("tree", {"loss.preset": "distill", "loss.alpha": 0.5,
                                        "loss.reduction": "ova", "model.label_bias": True}),
    # the GLaS label-table regulariser on the plain student
    "softmax glas=0.1": (None, {"loss.glas": 0.1}),
    "softmax glas=1": (None, {"loss.glas": 1.0}),
    # more epochs for distilled students (the a=0.5 student was still rising at epoch 8)
    # a sharper tree teacher (τ_t < 1) with the decoupled teacher term
    "distill tree a=0.5 dec-term tau=0.5": ("tree", {"loss.preset": "distill", "loss.alpha": 0.5,
                                                     "loss.teacher_term": "decoupled",
                                                     "loss.tau_t": 0.5}),
    "distill tree a=0.75 dec-term tau=0.5": ("tree", {"loss.preset": "distill", "loss.alpha": 0.75,
                                                      "loss.teacher_term": "decoupled",
                                                      "loss.tau_t": 0.5}),
    "distill tree a=0.5 dec-term tau=0.25": ("tree", {"loss.preset": "distill", "loss.alpha": 0.5,
                                                      "loss.teacher_term": "decoupled",
                                                      "loss.tau_t": 0.25}),
    "double-distill tree a=0.5 dec-term tau=0.5": ("tree", {"loss.preset": "double-distill",
                                                            "loss.alpha": 0.5,
                                                            "loss.teacher_term": "decoupled",
                                                            "loss.tau_t": 0.5}),
    # capacity: the teacher regularises, so a wider student may now pay (Menon et al.'s point)
    "softmax d=192": (None, {"model.dim": 192}),
    "distill tree a=0.5 dec-term tau=0.5 d=192": ("tree", {"loss.preset": "distill", "loss.alpha": 0.5,
                                                           "loss.teacher_term": "decoupled",
                                                           "loss.tau_t": 0.5, "model.dim": 192}),
    "double-distill tree a=0.5 tau=0.5": ("tree", {"loss.preset": "double-distill", "loss.alpha": 0.5,
                                                   "loss.tau_t": 0.5}),
    "distill tree a=0.5 dec-term 12ep": ("tree", {"loss.preset": "distill", "loss.alpha": 0.5,
                                                  "loss.teacher_term": "decoupled",
                                                  "optim.epochs": 12}),
}


def set_key(cfg, key: str, value):
    sec, name = key.split(".")
    setattr(getattr(cfg, sec), name, value)


def fit_teacher(kind: str, X, Y, fit_rows, folds: int, threads: int, quick: bool):
    """Cross-fitted teacher on ``fit_rows`` only; rows outside it get no entries."""
    from xmr.teachers.store import TeacherStore

    n, L = Y.shape
    if kind == "tree":
        from xmr.teachers.trees import fit_tree_teacher

        st = fit_tree_teacher(X[fit_rows], Y[fit_rows], "omikuji", folds=folds, k=32, seed=0,
                              threads=threads)
    else:
        raise ValueError(kind)
    # scatter the fit rows' entries into a store over all n rows (validation rows empty)
    lens = np.zeros(n, np.int64)
    lens[fit_rows] = np.diff(st.indptr)
    indptr = np.zeros(n + 1, np.int64)
    np.cumsum(lens, out=indptr[1:])
    return TeacherStore(indptr=indptr, ids=np.asarray(st.ids), logits=np.asarray(st.logits),
                        num_labels=L, meta={**st.meta, "fit_rows": int(len(fit_rows))})


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--only", action="append", default=None, help="run only these names (repeatable)")
    ap.add_argument("--folds", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", default=None)
    ap.add_argument("--cache", default=None, help="folder keeping the fitted teachers between runs")
    ap.add_argument("--calibrate", action="store_true",
                    help="record the tree teacher's calibrated τ_t (also done whenever it is used)")
    args = ap.parse_args(argv)
    import torch

    torch.set_num_threads(args.threads)
    from xmr.data.debian import load_debian_deps
    from xmr.eval.propensity import inverse_propensity
    from xmr.train.loop import split_valid

    ds = load_debian_deps(seed=0)
    X, Y = ds.X_trn, ds.Y_trn
    if args.quick:
        X, Y = X[:3000], Y[:3000]
    inv = inverse_propensity(Y, A=ds.prop_a, B=ds.prop_b)
    fit_rows, valid_rows = split_valid(X.shape[0], VALID_FRACTION, 0)
    names = args.only or list(RUNS)
    t_start = time.perf_counter()
    teachers, runs = {}, []
    out = Path(args.out) if args.out else None
    calibration = {}
    if out is not None and out.exists():  # resume: keep the runs already measured
        import json

        prev = json.loads(out.read_text())["results"]
        runs, calibration = prev["runs"], prev.get("calibration", {})
        done = {r["name"] for r in runs}
        names = [n for n in names if n not in done]

    def teacher(kind):
        if kind not in teachers:
            from xmr.teachers.report import calibrate_temperature
            from xmr.teachers.store import TeacherStore

            cache = Path(args.cache) / f"{kind}-f{args.folds}-n{X.shape[0]}" if args.cache else None
            if cache is not None and cache.exists():
                teachers[kind] = TeacherStore.load(cache)
            else:
                t0 = time.perf_counter()
                teachers[kind] = fit_teacher(kind, X, Y, fit_rows, args.folds, args.threads,
                                             args.quick)
                print(f"teacher {kind}: {time.perf_counter() - t0:.0f} s", flush=True)
                if cache is not None:
                    teachers[kind].save(cache)
            # the τ_t the library would pick (lowest ECE on the teacher's out-of-fold rows)
            calibration[kind] = calibrate_temperature(teachers[kind], Y, rows=fit_rows)
        return teachers[kind]

    def save():
        return write_result("tune_teacher" if not args.quick else "tune_teacher_quick",
                            {"dataset": "debian-deps", "split": "training points of the seeded "
                             "80/20 split; 10 % of them (split_valid, seed 0) as validation; "
                             "teachers cross-fitted on the other 90 % only; test never read",
                             "base": base_config(args.quick).to_dict(), "folds": args.folds,
                             "threads": args.threads},
                            {"runs": runs, "calibration": calibration,
                             "seconds": time.perf_counter() - t_start}, path=out)

    path = out
    for name in names:
        kind, sets = RUNS[name]
        cfg = base_config(args.quick)
        for k, v in sets.items():
            set_key(cfg, k, v)
        r = run_one(cfg, X, Y, inv, None if kind is None else teacher(kind))
        r.update(name=name, teacher=kind, settings=sets)
        runs.append(r)
        print(f"{name}: valid P@1={r['valid_P@1']:.4f} P@5={r['valid_P@5']:.4f} "
              f"PSP@1={r['valid_PSP@1']:.4f} (epoch {r['best_epoch']}/{r['epochs_run']}, "
              f"{r['train_s']:.0f} s)", flush=True)
        path = save()  # after every run: an interrupted search keeps what it measured
    if args.calibrate:
        teacher("tree")
        path = save()
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
