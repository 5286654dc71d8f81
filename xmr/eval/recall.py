"""Recall of an approximate top-k search against the exact one."""

from __future__ import annotations

import numpy as np


def knn_recall(ids, exact_ids) -> float:
    """k-recall@k: the mean over queries of ``|ids_q ∩ exact_q| / |exact_q|`` (-1 ignored).

    Both ``i64[n, k]``; ``exact_ids`` is usually :func:`xmr.index.exact_search`'s output. This
    is the figure FAISS reports as "k-recall@k" (the intersection measure, not 1-recall@k).
    """
    ids, exact_ids = np.asarray(ids), np.asarray(exact_ids)
    if ids.shape[0] != exact_ids.shape[0] or ids.ndim != 2 or exact_ids.ndim != 2:
        raise ValueError(f"expected two [n, k] id arrays, got {ids.shape} and {exact_ids.shape}")
    total, hits = 0, 0
    for r0 in range(0, ids.shape[0], 4096):
        a, e = ids[r0:r0 + 4096], exact_ids[r0:r0 + 4096]
        valid = e >= 0
        eq = (a[:, :, None] == e[:, None, :]) & valid[:, None, :] & (a[:, :, None] >= 0)
        hits += int(eq.any(axis=1).sum())
        total += int(valid.sum())
    return hits / max(total, 1)
