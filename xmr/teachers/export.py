"""Export a teacher: train it, cross-fitted over K folds, and store its top-K on the training set.

Distillation needs the teacher's estimate of p*(y|x) at the training points. A teacher that
scores its *own* training points mostly returns their memorised labels, so
:func:`export_teacher` cross-fits (Menon et al., 2020, use held-out teacher scores; the demo's
ablation in the README measures the difference): the training points are assigned to ``folds``
folds by ``numpy.random.default_rng([seed, 31]).integers(0, folds, n)``; for each fold f a
teacher is trained (with ``cfg``) on the points of the other folds and scores the points of fold
f. ``folds=1`` trains one teacher on all points and lets it score them (the old behaviour; a
warning says so). The store (:class:`xmr.teachers.store.TeacherStore`) holds, per training
point, the top-``k`` label ids and raw logits of the teacher that did not see it.
"""

from __future__ import annotations

import logging
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, List, Optional

import numpy as np

from xmr.utils.validation import check_int

log = logging.getLogger(__name__)


@dataclass
class TeacherExport:
    """What :func:`export_teacher` returns: the store, where it was saved (None: not saved),
    the fold of every training point (``int64 [n]``) and each fold's training seconds."""

    store: object
    path: Optional[Path]
    fold_of: np.ndarray
    train_seconds: List[float] = field(default_factory=list)


def fold_assignment(n: int, folds: int, seed: int) -> np.ndarray:
    """``int64 [n]``: the fold of each training point (all 0 for ``folds=1``)."""
    check_int("folds", folds, 1)
    if folds == 1:
        return np.zeros(n, np.int64)
    # the demo's rule, shared by every cross-fitted teacher (neural, tree) so their folds agree
    return np.random.default_rng([int(seed), 31]).integers(0, folds, n).astype(np.int64)


def export_teacher(cfg, dataset=None, k: int = 32, folds: int = 5, seed: Optional[int] = None,
                   out=None, workdir=None, progress: bool = True,
                   on_fold: Optional[Callable[[int, object], None]] = None) -> TeacherExport:
    """Train ``folds`` teachers with ``cfg`` (a :class:`TrainConfig`; its preset must not need a
    teacher) and export their out-of-fold top-``k`` on ``dataset``'s training split.

    ``dataset`` is an :class:`XMCDataset`, a name or a path (``None``: ``cfg.data``). ``seed``
    (default ``cfg.seed``) sets the fold assignment. ``out`` saves the store there. ``workdir``
    keeps each fold's run (``teacher{f}/``); ``None`` trains in memory. ``on_fold(f, result)``
    is called with each fold's :class:`xmr.train.loop.TrainResult` (e.g. to score it on test).
    """
    from xmr.data.dataset import XMCDataset
    from xmr.data.loaders import load_dataset, load_from_config
    from xmr.teachers.store import from_topk
    from xmr.train.loop import Trainer

    if cfg.loss.resolved().needs_teacher:
        raise ValueError(f"a teacher is trained without a teacher; loss preset "
                         f"{cfg.loss.preset!r} needs one (use e.g. loss.preset=softmax)")
    check_int("k", k, 1)
    if dataset is None:
        ds = load_from_config(cfg.data)
    elif isinstance(dataset, XMCDataset):
        ds = dataset
    else:
        ds = load_dataset(dataset, cfg.data.root, cfg.data.test_fraction, cfg.data.split_seed,
                          format=cfg.data.format, min_df=cfg.data.min_df)
    seed = cfg.seed if seed is None else int(seed)
    n = ds.X_trn.shape[0]
    fold_of = fold_assignment(n, folds, seed)
    if folds == 1:
        warnings.warn("folds=1: the teacher scores its own training points, which mostly returns "
                      "their memorised labels rather than an estimate of p*(y|x); use folds >= 2",
                      stacklevel=2)
    t_scores = np.full((n, k), -np.inf, np.float32)
    t_ids = np.full((n, k), -1, np.int64)
    seconds: List[float] = []
    t0 = time.perf_counter()
    for f in range(folds):
        fit_rows = np.flatnonzero(fold_of != f) if folds > 1 else np.arange(n)
        out_rows = np.flatnonzero(fold_of == f) if folds > 1 else np.arange(n)
        if len(out_rows) == 0:
            continue
        if len(fit_rows) == 0:
            raise ValueError(f"fold {f} leaves no training points for its teacher "
                             f"({n} points, {folds} folds)")
        run_dir = Path(workdir) / f"teacher{f}" if workdir is not None else None
        res = Trainer(cfg, ds.X_trn[fit_rows], ds.Y_trn[fit_rows], out_dir=run_dir,
                      progress=progress).fit()
        seconds.append(res.train_seconds)
        s_, i_ = res.model.predict(ds.X_trn[out_rows], k)
        t_scores[out_rows], t_ids[out_rows] = s_, i_
        if on_fold is not None:
            on_fold(f, res)
        log.info("teacher fold %d/%d: trained on %d points, scored %d", f + 1, folds,
                 len(fit_rows), len(out_rows))
    meta = {"source": "xmr cross-fitted teacher" if folds > 1 else "xmr teacher",
            "dataset": ds.name, "split": "train", "temperature": 1.0, "k": int(k),
            "folds": int(folds), "out_of_fold": folds > 1, "fold_seed": seed,
            "train_config": cfg.to_dict()}
    store = from_topk(t_ids, t_scores, ds.num_labels, meta=meta)
    path = store.save(out) if out is not None else None
    log.info("teacher top-%d of %d fold(s) exported in %.1f s", k, folds, time.perf_counter() - t0)
    return TeacherExport(store=store, path=path, fold_of=fold_of, train_seconds=seconds)
