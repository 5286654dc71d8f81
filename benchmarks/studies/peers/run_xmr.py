"""Worker: train one xmr model on debian-deps in its own process and report like run_peer.

Usage: python -m benchmarks.studies.peers.run_xmr PRESET OUT_DIR [--set KEY=VALUE ...]
       [--teacher-store DIR] [--export-k K --folds F --fold f] [--threads N]

``--set`` takes the same dotted keys as ``xmr train --set`` (e.g. ``loss.reduction=decoupled``,
``model.dim=96``); with ``--folds F --fold f`` the model trains on the training rows outside
fold f (the demo's fold rule) and exports the top-K of the rows in it (one part of a
cross-fitted teacher).
"""

import argparse
import json
import resource
import time
from pathlib import Path

import numpy as np


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("preset")
    ap.add_argument("out", type=Path)
    ap.add_argument("--set", dest="overrides", action="append", default=[])
    ap.add_argument("--teacher-store", default=None)
    ap.add_argument("--export-k", type=int, default=0, help="export a top-K teacher store of the training set")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--folds", type=int, default=1)
    ap.add_argument("--fold", type=int, default=0)
    ap.add_argument("--name", default=None)
    a = ap.parse_args()
    import torch

    torch.set_num_threads(a.threads)
    from xmr.data.debian import load_debian_deps
    from xmr.teachers.store import TeacherStore, from_topk
    from xmr.teachers.trees import fold_assignment
    from xmr.train.config import TrainConfig
    from xmr.train.loop import Trainer

    ds = load_debian_deps()
    n_trn = ds.X_trn.shape[0]
    fit_rows = out_rows = np.arange(n_trn)
    if a.folds > 1:
        fold_of = fold_assignment(n_trn, a.folds, 0)
        fit_rows, out_rows = np.flatnonzero(fold_of != a.fold), np.flatnonzero(fold_of == a.fold)
    cfg = TrainConfig(teacher=a.teacher_store, eval_every=0)
    cfg.loss.preset = a.preset
    cfg.data.valid_fraction = 0.0
    cfg = cfg.with_overrides(a.overrides)
    teacher = TeacherStore.load(a.teacher_store) if a.teacher_store and cfg.loss.resolved().needs_teacher else None
    t0 = time.perf_counter()
    res = Trainer(cfg, ds.X_trn[fit_rows], ds.Y_trn[fit_rows], teacher=teacher, progress=False).fit()
    train_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    _, ids = res.model.predict(ds.X_tst, 5)
    pred_s = time.perf_counter() - t0
    a.out.mkdir(parents=True, exist_ok=True)
    if a.export_k:
        s, i = res.model.predict(ds.X_trn[out_rows], a.export_k)
        if a.folds > 1:  # one part of a cross-fitted store; bench_peers merges the parts
            np.savez(a.out / "teacher_part.npz", rows=out_rows, ids=i, scores=s)
        else:
            from_topk(i, s, ds.num_labels, {"source": f"xmr {a.preset}"}).save(a.out / "teacher_store")
    np.save(a.out / "ids.npy", ids)
    (a.out / "result.json").write_text(json.dumps({
        "method": a.name or f"xmr {a.preset} (d={cfg.model.dim})", "train_s": train_s,
        "predict_ms_per_query": 1000 * pred_s / ids.shape[0],
        "epochs_run": len(res.history) or cfg.optim.epochs,
        "best_epoch": max(res.history, key=lambda h: h["P@1"])["epoch"] if res.history else None,
        "overrides": a.overrides,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0}))


if __name__ == "__main__":
    main()
