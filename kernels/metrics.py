"""Per-row top-k selection for metric evaluation (leaf kernels over primitive arrays).

Both kernels select, for each row, the ``k`` best ``(score, label id)`` pairs under the order
"higher score first, then lower label id", and write them sorted into preallocated outputs;
rows with fewer than ``k`` candidates are padded with id ``-1`` and score ``-inf``.

The kernels keep a sorted buffer of size ``k`` per row and insert into it (O(m·k) worst case,
O(m) typical because most candidates lose against the buffer's worst entry), so no row is ever
fully sorted and no ``n × L`` temporary is allocated. ``*_ref`` are numpy references built on a
full (lex)sort; ``tests/eval/test_metrics.py`` checks that they agree.

No compilation happens at import: ``@njit(cache=True)`` without signatures compiles on first
call, once per input dtype.
"""

from __future__ import annotations

import numpy as np
from numba import njit


@njit(cache=True)
def topk_csr(indptr, indices, data, k, out_scores, out_ids):
    """Top-``k`` of each row of a CSR score matrix.

    indptr: int[n + 1], indices: int[nnz], data: float[nnz] (no NaN; no duplicate column in a
    row); out_scores: float[n, k] of the dtype of ``data``; out_ids: int64[n, k]. Only stored
    entries are candidates (an explicit stored 0 is a prediction with score 0).
    """
    n = indptr.shape[0] - 1
    for i in range(n):
        m = 0
        for p in range(indptr[i], indptr[i + 1]):
            s = data[p]
            j = np.int64(indices[p])
            if m == k:
                ws = out_scores[i, k - 1]
                if not (s > ws or (s == ws and j < out_ids[i, k - 1])):
                    continue
                pos = k - 1
            else:
                pos = m
                m += 1
            # shift worse entries down until (s, j) is in place
            while pos > 0:
                ps = out_scores[i, pos - 1]
                if s > ps or (s == ps and j < out_ids[i, pos - 1]):
                    out_scores[i, pos] = ps
                    out_ids[i, pos] = out_ids[i, pos - 1]
                    pos -= 1
                else:
                    break
            out_scores[i, pos] = s
            out_ids[i, pos] = j
        for q in range(m, k):
            out_scores[i, q] = -np.inf
            out_ids[i, q] = -1


@njit(cache=True)
def topk_dense(scores, k, out_scores, out_ids):
    """Top-``k`` of each row of a dense score matrix ``scores: float[n, L]`` (no NaN).

    out_scores: float[n, k] of the dtype of ``scores``; out_ids: int64[n, k]; columns beyond
    ``L`` (when ``k > L``) are padded with ``-1`` / ``-inf``.
    """
    n, L = scores.shape
    for i in range(n):
        m = 0
        for j in range(L):
            s = scores[i, j]
            if m == k:
                # ids arrive in increasing order, so a tie with the worst entry never wins
                if not s > out_scores[i, k - 1]:
                    continue
                pos = k - 1
            else:
                pos = m
                m += 1
            while pos > 0 and s > out_scores[i, pos - 1]:
                out_scores[i, pos] = out_scores[i, pos - 1]
                out_ids[i, pos] = out_ids[i, pos - 1]
                pos -= 1
            out_scores[i, pos] = s
            out_ids[i, pos] = j
        for q in range(m, k):
            out_scores[i, q] = -np.inf
            out_ids[i, q] = -1


def topk_csr_ref(indptr, indices, data, k):
    """Numpy reference of :func:`topk_csr`: one global lexsort by (row, −score, id).

    Returns ``(scores float[n, k], ids int64[n, k])`` in the dtype of ``data``.
    """
    n = indptr.shape[0] - 1
    rows = np.repeat(np.arange(n), np.diff(indptr))
    order = np.lexsort((indices, -data, rows))
    rank = np.arange(order.shape[0]) - indptr[rows[order]]
    keep = order[rank < k]
    out_scores = np.full((n, k), -np.inf, dtype=data.dtype)
    out_ids = np.full((n, k), -1, dtype=np.int64)
    r = rows[keep]
    c = np.arange(keep.shape[0]) - np.searchsorted(r, r, side="left")
    out_scores[r, c] = data[keep]
    out_ids[r, c] = indices[keep]
    return out_scores, out_ids


def topk_dense_ref(scores, k):
    """Numpy reference of :func:`topk_dense`: a stable argsort of ``−scores`` per row."""
    n, L = scores.shape
    kk = min(k, L)
    order = np.argsort(-scores, axis=1, kind="stable")[:, :kk]
    out_scores = np.full((n, k), -np.inf, dtype=scores.dtype)
    out_ids = np.full((n, k), -1, dtype=np.int64)
    out_scores[:, :kk] = np.take_along_axis(scores, order, axis=1)
    out_ids[:, :kk] = order
    return out_scores, out_ids
