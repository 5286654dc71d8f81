"""Merge of per-shard sorted top-k lists into one global top-k (leaf kernel over arrays).

Exact top-k over millions of labels is computed shard by shard (and chunk by chunk inside a
shard, and rank by rank in a distributed run); each piece yields, for every query, a list of its
best ``(score, label id)`` pairs sorted under the order "higher score first, then lower label
id". ``topk_merge`` merges ``m`` such lists per query into the global top-``k`` under the same
order. Lists are padded at their tail with id ``-1`` (their score is ignored). When fewer than
``k`` valid entries exist in total (e.g. ``k`` exceeds the number of labels) the kernel writes
only the valid head of the output row and leaves the tail as the caller filled it: the padding
value is the caller's (:func:`xmr.index.exact.merge_topk` pre-fills id ``-1`` and score
``PAD_SCORE``).

The kernel is an m-way merge with one read pointer per list: O(n · k · m) comparisons and no
temporary array. ``topk_merge_ref`` is the numpy reference built on a full lexsort;
``tests/models/test_topk.py`` checks that both agree, ties and padding included.

No compilation happens at import: ``@njit(cache=True)`` without a signature compiles on first
call.
"""

from __future__ import annotations

import numpy as np
from numba import njit


@njit(cache=True)
def topk_merge(scores, ids, k, out_scores, out_ids):
    """Merge ``m`` sorted lists per query into the global top-``k``.

    scores: float32[m, n, kk] and ids: int64[m, n, kk], each ``[j, q, :]`` sorted by (score
    descending, id ascending) and padded at its tail with id ``-1``; the lists of one query hold
    distinct ids. out_scores: float32[n, k], out_ids: int64[n, k], pre-filled with the
    padding; the first ``min(k, #valid entries)`` of each row are written.
    """
    m = scores.shape[0]
    n = scores.shape[1]
    kk = scores.shape[2]
    pos = np.zeros(m, np.int64)
    for q in range(n):
        for j in range(m):
            pos[j] = 0
        r = 0
        while r < k:
            best = -1
            bs = np.float32(0.0)
            bi = np.int64(-1)
            for j in range(m):
                p = pos[j]
                if p >= kk:
                    continue
                i = ids[j, q, p]
                if i < 0:
                    continue
                s = scores[j, q, p]
                if best < 0 or s > bs or (s == bs and i < bi):
                    best = j
                    bs = s
                    bi = i
            if best < 0:
                break
            out_scores[q, r] = bs
            out_ids[q, r] = bi
            pos[best] += 1
            r += 1


def topk_merge_ref(scores: np.ndarray, ids: np.ndarray, k: int, pad_score: float):
    """Numpy reference of :func:`topk_merge` on outputs pre-filled with id ``-1`` and score
    ``pad_score``: returns ``(scores f32[n, k], ids i64[n, k])``."""
    m, n, kk = scores.shape
    out_s = np.full((n, k), pad_score, dtype=np.float32)
    out_i = np.full((n, k), -1, dtype=np.int64)
    for q in range(n):
        s = scores[:, q, :].reshape(-1)
        i = ids[:, q, :].reshape(-1)
        # a list is cut at its first -1 (tail padding)
        valid = np.zeros((m, kk), dtype=bool)
        for j in range(m):
            pad = np.flatnonzero(ids[j, q] < 0)
            valid[j, : (pad[0] if pad.size else kk)] = True
        valid = valid.reshape(-1)
        s, i = s[valid], i[valid]
        order = np.lexsort((i, -s.astype(np.float64)))[:k]
        out_s[q, : order.size] = s[order]
        out_i[q, : order.size] = i[order]
    return out_s, out_i
