"""Worker: train one xmr preset on debian-deps in its own process and report like run_peer.py.

Usage: python run_xmr.py PRESET OUT_DIR [--dim D] [--epochs E] [--teacher-store DIR]
       [--threads N]
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
    ap.add_argument("--dim", type=int, default=128)
    ap.add_argument("--epochs", type=int, default=6)
    ap.add_argument("--teacher-store", default=None)
    ap.add_argument("--teacher-k", type=int, default=32)
    ap.add_argument("--export-k", type=int, default=0, help="export a top-K teacher store of the training set")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--folds", type=int, default=1,
                    help="cross-fitting: train on the training rows outside --fold and export the "
                         "top-K of the rows in it (the demo's split of rows into folds)")
    ap.add_argument("--fold", type=int, default=0)
    a = ap.parse_args()
    import torch

    torch.set_num_threads(a.threads)
    from xmr.data.debian import load_debian_deps
    from xmr.teachers.store import TeacherStore, from_topk
    from xmr.train.config import TrainConfig
    from xmr.train.loop import Trainer

    ds = load_debian_deps()
    n_trn = ds.X_trn.shape[0]
    fit_rows = out_rows = np.arange(n_trn)
    if a.folds > 1:  # same fold assignment as xmr.demo
        fold_of = np.random.default_rng([0, 31]).integers(0, a.folds, n_trn)
        fit_rows, out_rows = np.flatnonzero(fold_of != a.fold), np.flatnonzero(fold_of == a.fold)
    cfg = TrainConfig(teacher=a.teacher_store, eval_every=0)
    cfg.model.dim = a.dim
    cfg.optim.epochs = a.epochs
    cfg.loss.preset = a.preset
    cfg.loss.teacher_k = a.teacher_k
    cfg.data.valid_fraction = 0.0
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
            from_topk(i, s, ds.num_labels, {"source": f"xmr {a.preset} d={a.dim}"}).save(a.out / "teacher_store")
    np.save(a.out / "ids.npy", ids)
    (a.out / "result.json").write_text(json.dumps({
        "method": f"xmr {a.preset} (d={a.dim})", "train_s": train_s,
        "predict_ms_per_query": 1000 * pred_s / ids.shape[0],
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0}))


if __name__ == "__main__":
    main()
