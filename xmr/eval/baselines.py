"""Honest baselines every XMC table should carry: label popularity and TF-IDF k-nearest
neighbours (the "predict what similar training points had" baseline of the field)."""

from __future__ import annotations

from typing import Tuple

import numpy as np
import scipy.sparse as sp


def popularity(Y_trn: sp.csr_matrix, n: int, k: int = 5) -> Tuple[np.ndarray, np.ndarray]:
    """The k most frequent training labels for every one of ``n`` rows: ``(scores, ids)``."""
    freq = np.asarray(Y_trn.sum(axis=0)).ravel()
    top = np.argsort(-freq, kind="stable")[:k]
    ids = np.broadcast_to(top, (n, top.size)).copy()
    scores = np.broadcast_to(freq[top].astype(np.float32), (n, top.size)).copy()
    return scores, ids.astype(np.int64)


def knn(X_trn: sp.csr_matrix, Y_trn: sp.csr_matrix, X: sp.csr_matrix, k: int = 5,
        neighbours: int = 20, batch_size: int = 2048) -> Tuple[np.ndarray, np.ndarray]:
    """TF-IDF cosine k-NN: a label's score is the summed similarity of the ``neighbours``
    nearest training points that carry it. Exact (sparse matrix products, chunked)."""
    from sklearn.preprocessing import normalize

    from xmr.eval.metrics import topk_from_scores

    A = normalize(sp.csr_matrix(X_trn, dtype=np.float32))
    Yt = sp.csr_matrix(Y_trn, dtype=np.float32)
    n = X.shape[0]
    out_s = np.empty((n, k), np.float32)
    out_i = np.empty((n, k), np.int64)
    Q = normalize(sp.csr_matrix(X, dtype=np.float32))
    for lo in range(0, n, batch_size):
        sim = (Q[lo:lo + batch_size] @ A.T).toarray()  # f32[b, N_trn]
        m = min(neighbours, sim.shape[1])
        nn = np.argpartition(-sim, m - 1, axis=1)[:, :m]
        w = np.take_along_axis(sim, nn, 1)
        rows = np.repeat(np.arange(sim.shape[0]), m)
        S = sp.csr_matrix((w.ravel(), (rows, nn.ravel())), shape=(sim.shape[0], A.shape[0])) @ Yt
        s, i = topk_from_scores(sp.csr_matrix(S), k)
        out_s[lo:lo + batch_size], out_i[lo:lo + batch_size] = s, i
    return out_s, out_i
