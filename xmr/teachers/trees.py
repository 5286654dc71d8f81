"""Tree teachers: omikuji or napkinXC trained per fold, their out-of-fold top-K as a store.

Menon et al. (2020) ask of a teacher that it estimates p*(y|x) well; on sparse bag-of-words
data the label trees (Parabel-style PLTs) are far more data-efficient than a small embedding
model (issue 13: omikuji on half of debian-deps' training points scores P@1 0.730, the neural
teacher 0.636). With K-fold cross-fitting each training point is scored by the tree that did
not see it, so the store holds predictions, not memorised labels. The trees' scores are
probabilities (products of node probabilities); the store keeps log(p) as the logit, so
softmax over a row's top-K at τ = 1 gives back the renormalised probabilities.

Both backends come with the optional extra ``pip install 'xmr[peers]'``; without them
:func:`fit_tree_teacher` raises :class:`~xmr.errors.MissingDependencyError` naming it.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path
from typing import Optional

import numpy as np
import scipy.sparse as sp

from xmr.teachers.export import fold_assignment  # noqa: F401  (the shared fold rule)
from xmr.teachers.store import TeacherStore, from_topk
from xmr.utils.validation import check_int

BACKENDS = ("omikuji", "napkinxc")


def _require(backend: str):
    from xmr.errors import MissingDependencyError
    from xmr.utils.optional import require

    try:
        return require(backend)
    except MissingDependencyError as e:
        raise MissingDependencyError(
            f"the {backend} teacher backend needs the optional extra: pip install 'xmr[peers]' "
            f"({e})") from None


class _quiet_fds:
    """Silence file descriptors 1 and 2 (omikuji's Rust side draws progress bars there)."""

    def __enter__(self):
        import os
        import sys

        sys.stdout.flush()
        sys.stderr.flush()
        self.saved = [os.dup(1), os.dup(2)]
        null = os.open(os.devnull, os.O_WRONLY)
        os.dup2(null, 1)
        os.dup2(null, 2)
        os.close(null)

    def __exit__(self, *exc):
        import os

        for fd, saved in zip((1, 2), self.saved):
            os.dup2(saved, fd)
            os.close(saved)
        return False


def _fit_predict_omikuji(X, Y, Xq, k: int, threads: int, workdir: Path):
    omikuji = _require("omikuji")
    from xmr.data.formats import write_xc_bow

    path = workdir / "omikuji_train.txt"
    write_xc_bow(path, X, Y)
    hp = omikuji.Model.default_hyper_param()
    with _quiet_fds():
        model = omikuji.Model.train_on_data(str(path), hp, n_threads=threads)
    path.unlink()
    ids = np.full((Xq.shape[0], k), -1, np.int64)
    p = np.zeros((Xq.shape[0], k), np.float32)
    Xq = sp.csr_matrix(Xq)
    for i in range(Xq.shape[0]):
        a, b = Xq.indptr[i], Xq.indptr[i + 1]
        pred = model.predict(list(zip(Xq.indices[a:b].tolist(), Xq.data[a:b].tolist())), top_k=k)
        if pred:
            ids[i, :len(pred)] = [q[0] for q in pred]
            p[i, :len(pred)] = [q[1] for q in pred]
    return ids, p


def _fit_predict_napkinxc(X, Y, Xq, k: int, threads: int, workdir: Path, seed: int):
    _require("napkinxc")
    from napkinxc.models import PLT

    Y = sp.csr_matrix(Y)
    lists = [Y.indices[Y.indptr[i]:Y.indptr[i + 1]].tolist() for i in range(Y.shape[0])]
    model = PLT(str(workdir / "napkinxc-model"), threads=threads, seed=seed)
    model.fit(sp.csr_matrix(X, dtype=np.float64), lists)
    preds = model.predict_proba(sp.csr_matrix(Xq, dtype=np.float64), top_k=k)
    ids = np.full((Xq.shape[0], k), -1, np.int64)
    p = np.zeros((Xq.shape[0], k), np.float32)
    for i, row in enumerate(preds):
        if row:
            ids[i, :len(row)] = [q[0] for q in row]
            p[i, :len(row)] = [q[1] for q in row]
    return ids, p


def fit_tree_teacher(X, Y, backend: str = "omikuji", folds: int = 5, k: int = 32, seed: int = 0,
                     threads: int = 1, progress: bool = False,
                     workdir: Optional[Path] = None) -> TeacherStore:
    """Cross-fitted tree teacher of the training set ``(X, Y)``: one tree per fold, trained on
    the other folds, scores its own fold's rows (``folds = 1``: one tree scores its own
    training points — memorised labels, kept for comparison only). Returns the store."""
    if backend not in BACKENDS:
        raise ValueError(f"backend: expected one of {', '.join(BACKENDS)}, got {backend!r}")
    check_int("folds", folds, 1)
    check_int("k", k, 1)
    _require(backend)
    X, Y = sp.csr_matrix(X, dtype=np.float32), sp.csr_matrix(Y, dtype=np.float32)
    n, L = Y.shape
    fold_of = fold_assignment(n, folds, seed) if folds > 1 else np.zeros(n, np.int64)
    ids = np.full((n, k), -1, np.int64)
    prob = np.zeros((n, k), np.float32)
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="xmr-tree-", dir=workdir) as tmp:
        for f in range(folds):
            fit = np.flatnonzero(fold_of != f) if folds > 1 else np.arange(n)
            out = np.flatnonzero(fold_of == f)
            if backend == "omikuji":
                i, p = _fit_predict_omikuji(X[fit], Y[fit], X[out], k, threads, Path(tmp))
            else:
                i, p = _fit_predict_napkinxc(X[fit], Y[fit], X[out], k, threads, Path(tmp), seed)
            ids[out], prob[out] = i, p
            if progress:
                print(f"  {backend} fold {f + 1}/{folds}: {len(fit)} rows fitted, {len(out)} "
                      f"scored ({time.perf_counter() - t0:.0f} s)", flush=True)
    logits = np.where(ids >= 0, np.log(np.maximum(prob, 1e-30)), -np.inf).astype(np.float32)
    return from_topk(ids, logits, L, {
        "source": f"{backend} tree teacher", "folds": int(folds), "out_of_fold": folds > 1,
        "seed": int(seed), "k": int(k), "probabilities": True, "temperature": 1.0,
        "fit_seconds": time.perf_counter() - t0})
