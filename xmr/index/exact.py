"""Exact top-k labels: xmr's one top-k result contract, the merge of sorted lists, the reference.

Every top-k of label scores in xmr (:func:`exact_search` here,
:meth:`xmr.index.LabelIndex.search`, :meth:`xmr.models.ShardedLabelTable.topk` and
:meth:`xmr.models.xmr_model.XMRModel.predict`) returns::

    scores f32[n, k], ids i64[n, k]

* ``ids`` are label ids (rows of the full label table, whatever the shards or ranks);
* each row is sorted by decreasing score, and **equal scores are ordered by lower label id**;
  of several labels tied at the k-th place the lower ids are kept. The exact result is thus the
  first k entries of a stable sort of the dense score row, ``np.lexsort((arange(L), -s))``;
* rows with fewer than k results (k > L, short IVF lists, HNSW dead ends) are padded at their
  tail with id :data:`PAD_ID` (-1) and score :data:`PAD_SCORE` (-FLT_MAX, FAISS's own padding
  for inner product). The padding score is finite so that a padded row never turns a softmax or
  a difference of scores into NaN; consumers recognise padding by ``ids < 0``.

Chunked exact top-k (here over numpy blocks, in :mod:`xmr.models.topk` over torch blocks): each
block of labels yields one *sorted list* per query, ``(scores f32[n, kk], ids i64[n, kk])``
with ``kk <= k``, sorted under the contract and holding the block's top-kk with the tie rule
above; :class:`RunningTopK` merges such lists into the running top-k with :func:`merge_topk`
(the Numba kernel :func:`xmr.kernels.topk_merge.topk_merge`). Memory stays at one score block
plus ``O(merge_every · n · k)`` however many labels there are.

Importing this module imports numpy only; the kernel compiles on first use.
"""

from __future__ import annotations

import sys
from typing import Optional, Tuple

import numpy as np

#: Id of a padded result.
PAD_ID = -1
#: Score of a padded result: -FLT_MAX (finite, below every float32 score).
PAD_SCORE = float(np.finfo(np.float32).min)
#: Label-space metrics: score ``<q, w>`` (``"ip"``) or ``-||q - w||^2`` (``"l2"``).
METRICS = ("ip", "l2")


def as_numpy(a):
    """``a`` as a numpy array; a torch tensor (any device, any float dtype: bf16 has no numpy
    view) is detached, moved to the host and, if floating point, converted to float32. Imports
    no torch: a tensor can only exist once torch is imported."""
    torch = sys.modules.get("torch")
    if torch is not None and isinstance(a, torch.Tensor):
        a = a.detach()
        return (a.float() if a.is_floating_point() else a).cpu().numpy()
    return np.asarray(a)


def _as_matrix(name: str, a, dim: Optional[int] = None) -> np.ndarray:
    """Validate a 2-D finite float array (or torch tensor) and return it as C-contiguous
    float32."""
    a = as_numpy(a)
    if a.ndim != 2:
        raise ValueError(f"{name}: expected a 2-D array, got shape {a.shape}")
    if not (np.issubdtype(a.dtype, np.floating) or np.issubdtype(a.dtype, np.integer)):
        raise TypeError(f"{name}: expected a float array, got dtype {a.dtype}")
    if dim is not None and a.shape[1] != dim:
        raise ValueError(f"{name}: expected dim {dim}, got shape {a.shape}")
    a = np.ascontiguousarray(a, dtype=np.float32)
    if not np.isfinite(a).all():
        raise ValueError(f"{name}: expected finite values, got NaN or inf")
    return a


def _check_k(k) -> int:
    if isinstance(k, (bool, np.bool_)) or not isinstance(k, (int, np.integer)) or k < 1:
        raise ValueError(f"k: expected an integer >= 1, got {k!r}")
    return int(k)


def sort_rows(scores: np.ndarray, ids: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
    """Put rows ``scores f32[n, m]``, ``ids i64[n, m]`` in contract order.

    Each row is sorted by (score descending, id ascending), padded entries (``ids < 0``) last
    with score :data:`PAD_SCORE`. Used on results whose tie order is not xmr's (FAISS).
    """
    ids = np.asarray(ids, dtype=np.int64)
    pad = ids < 0
    scores = np.where(pad, np.float32(PAD_SCORE), scores).astype(np.float32, copy=False)
    order = np.lexsort((np.where(pad, np.iinfo(np.int64).max, ids),
                        -scores.astype(np.float64), pad), axis=1)
    return np.take_along_axis(scores, order, axis=1), np.take_along_axis(ids, order, axis=1)


def chunk_topk(S: np.ndarray, k: int, offset: int) -> Tuple[np.ndarray, np.ndarray]:
    """Sorted top-k list of each row of a score block ``S f32[n, c]`` (columns = label ids).

    Returns ``(scores f32[n, k'], ids i64[n, k'])`` with ``k' = min(k, c)`` and ids shifted by
    ``offset``, in contract order; of several columns tied at the k-th value the lower ones are
    kept.
    """
    n, c = S.shape
    if k >= c:
        cols = np.broadcast_to(np.arange(c, dtype=np.int64), (n, c))
    else:
        # k-th largest value per row; everything strictly above it is in, ties at it by column.
        t = np.partition(S, c - k, axis=1)[:, c - k]
        mask = S >= t[:, None]
        tied = np.flatnonzero(mask.sum(axis=1) > k)
        for r in tied:  # rare: only rows with ties at the k-th value
            cand = np.flatnonzero(mask[r])
            keep = cand[np.lexsort((cand, -S[r, cand]))[:k]]
            mask[r] = False
            mask[r, keep] = True
        cols = np.nonzero(mask)[1].reshape(n, k)  # row-major: exactly k per row, increasing
    vals = np.take_along_axis(S, cols, axis=1)
    # columns are increasing, so a stable sort by decreasing score orders ties by lower id
    order = np.argsort(-vals, axis=1, kind="stable")
    return (np.take_along_axis(vals, order, axis=1).astype(np.float32, copy=False),
            np.take_along_axis(cols, order, axis=1) + np.int64(offset))


def merge_topk(scores: np.ndarray, ids: np.ndarray, k: int) -> Tuple[np.ndarray, np.ndarray]:
    """Merge sorted lists ``scores f32[m, n, kk]``, ``ids i64[m, n, kk]`` into the top-``k``.

    Each ``[j, q, :]`` is a sorted list (contract order, distinct ids across the lists of one
    query) padded at its tail with id -1 (the padded entries' scores are ignored). Returns
    ``(f32[n, k], i64[n, k])`` in contract order, padded with :data:`PAD_SCORE` / -1.
    Validates, then calls the Numba kernel.
    """
    scores = np.ascontiguousarray(scores, dtype=np.float32)
    ids = np.ascontiguousarray(ids, dtype=np.int64)
    if scores.ndim != 3 or scores.shape != ids.shape:
        raise ValueError(f"merge_topk: expected scores and ids of one shape [m, n, kk], got "
                         f"{list(scores.shape)} and {list(ids.shape)}")
    if int(k) < 1:
        raise ValueError(f"k: expected a positive integer, got {k!r}")
    from xmr.kernels.topk_merge import topk_merge  # compiles on first use

    n = scores.shape[1]
    out_s = np.full((n, int(k)), PAD_SCORE, dtype=np.float32)
    out_i = np.full((n, int(k)), PAD_ID, dtype=np.int64)
    topk_merge(scores, ids, np.int64(k), out_s, out_i)  # writes the valid head of each row
    return out_s, out_i


class RunningTopK:
    """Running top-``k`` of ``n`` queries over sorted lists added one block at a time.

    :meth:`add` takes one block's lists ``(scores f32[n, kk], ids i64[n, kk])``, ``kk <= k``, in
    contract order (ids distinct across blocks); every ``merge_every`` blocks they are merged
    into the running top-k with :func:`merge_topk`, so memory stays at
    ``(merge_every + 1) · n · k`` entries. :meth:`result` returns ``(f32[n, k], i64[n, k])``.
    """

    def __init__(self, n: int, k: int, merge_every: int = 16):
        self.k = int(k)
        self._s = np.full((merge_every + 1, n, self.k), PAD_SCORE, dtype=np.float32)
        self._i = np.full((merge_every + 1, n, self.k), PAD_ID, dtype=np.int64)
        self._used = 1  # slot 0 holds the running top-k

    def add(self, scores, ids) -> None:
        kk = scores.shape[1]
        self._s[self._used, :, :kk], self._i[self._used, :, :kk] = scores, ids
        self._s[self._used, :, kk:], self._i[self._used, :, kk:] = PAD_SCORE, PAD_ID
        self._used += 1
        if self._used == self._s.shape[0]:
            self._merge()

    def _merge(self) -> None:
        if self._used > 1:
            self._s[0], self._i[0] = merge_topk(self._s[:self._used], self._i[:self._used],
                                                self.k)
            self._used = 1

    def result(self) -> Tuple[np.ndarray, np.ndarray]:
        self._merge()
        return self._s[0].copy(), self._i[0].copy()


def exact_search(W, Q, k: int, *, metric: str = "ip", label_chunk: int = 65536,
                 query_chunk: int = 1024) -> Tuple[np.ndarray, np.ndarray]:
    """Exact top-k labels of each query by brute force: the ground truth for every index.

    ``W f32[L, d]`` label embeddings, ``Q f32[n, d]`` queries. The score of label j for query q
    is ``<q, w_j>`` (``metric="ip"``) or ``-||q - w_j||^2`` (``metric="l2"``). Labels are
    processed in blocks of ``label_chunk`` rows and queries in blocks of ``query_chunk``, so
    memory stays at ``query_chunk x label_chunk`` scores; each block's sorted top-k list
    (:func:`chunk_topk`) is merged into a running top-k (:class:`RunningTopK`).

    Returns ``(scores f32[n, k], ids i64[n, k])`` under the module's contract: sorted by
    decreasing score, ties by lower label id (the first k of ``np.lexsort((arange(L), -S))``),
    padded with id -1 and score :data:`PAD_SCORE` when ``k > L``.
    """
    if metric not in METRICS:
        raise ValueError(f"metric: expected one of {METRICS}, got {metric!r}")
    W = _as_matrix("W", W)
    Q = _as_matrix("Q", Q, dim=W.shape[1])
    k = _check_k(k)
    for name, v in (("label_chunk", label_chunk), ("query_chunk", query_chunk)):
        if not isinstance(v, (int, np.integer)) or v < 1:
            raise ValueError(f"{name}: expected an integer >= 1, got {v!r}")
    L, n = W.shape[0], Q.shape[0]
    out_s = np.full((n, k), PAD_SCORE, dtype=np.float32)
    out_i = np.full((n, k), PAD_ID, dtype=np.int64)
    w_sq = (W.astype(np.float64) ** 2).sum(1).astype(np.float32) if metric == "l2" else None
    for q0 in range(0, n, query_chunk):
        q = Q[q0:q0 + query_chunk]
        q_sq = None
        if w_sq is not None:
            q_sq = (q.astype(np.float64) ** 2).sum(1).astype(np.float32)[:, None]
        top = RunningTopK(q.shape[0], k)
        for l0 in range(0, L, label_chunk):
            S = q @ W[l0:l0 + label_chunk].T  # f32[nq, c]
            if w_sq is not None:
                S = -(q_sq - 2.0 * S + w_sq[None, l0:l0 + label_chunk])
            top.add(*chunk_topk(S, k, l0))
        out_s[q0:q0 + q.shape[0]], out_i[q0:q0 + q.shape[0]] = top.result()
    return out_s, out_i
