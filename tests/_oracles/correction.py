"""Oracle: the sampled-logit correction with copies of sampled ids kept as separate columns.

Only the tests use it (moved here from ``xmr.kernels.correction`` and
``xmr.negatives.candidates.correct_logits``, issue 9): the library collapses the copies of an id
into one column (:mod:`xmr.kernels.assembly`), and the tests hold the two conventions to the
same loss and gradient (``tests/negatives/test_candidates.py``).

The loss family of DESIGN.md §5 scores a batch on one shared candidate set (columns) and uses
corrected logits ``s'_j = s_j / tau_s - b_j``. This kernel applies ``-b_j`` to a buffer of shape
``[B, C]`` — either the scaled logits themselves or a bias buffer (zeros, or a visibility mask)
that is added to them later — when the columns may hold **copies** of an id (random negatives
drawn with replacement and kept as separate columns, TensorFlow's ``sampled_softmax_loss``
convention):

- a *sampled* column j gets ``-b_j`` with ``b_j = log E[count_j]`` (``log(m q_j)`` for m draws
  with replacement; one copy per draw, each with the same offset);
- *accidental hits*: for each positive p of row r, every column holding id p is set to
  ``MASK_VALUE`` except the row's **positive column**, which is the lowest-index
  deterministic (non-sampled) column with id p, or, if p only occurs among the sampled columns,
  the lowest-index sampled copy;
- the positive column keeps its value, unless ``correct_positives`` is set *and* the positive
  column is a sampled one, in which case it gets its offset like any sampled column.

Masked cells are **set** (not added) to ``MASK_VALUE``, the library's
:data:`xmr.negatives.candidates.MASK_VALUE` (-1e9; its comment says why).
"""

from __future__ import annotations

import numpy as np
from numba import njit

from xmr.negatives.candidates import MASK_VALUE

__all__ = ["MASK_VALUE", "correct_logits", "correct_logits_ref"]


@njit(cache=True)
def correct_logits(buf, cand_ids, offset, is_sampled, pos_indptr, pos_ids, correct_positives,
                   mask_value):
    """Apply sampled-logit offsets and accidental-hit masks to ``buf`` in place.

    buf         f32[B, C]   logits or bias buffer (C-contiguous), modified in place
    cand_ids    i64[C]      label id of each column (duplicates allowed)
    offset      f32[C]      b_j = log E[count_j] of sampled columns (ignored elsewhere)
    is_sampled  bool[C]     column comes from the random sampler
    pos_indptr  i64[B+1], pos_ids i64[nnz]   each row's positives (CSR)
    correct_positives bool, mask_value f32
    """
    n_rows = buf.shape[0]
    n_cols = buf.shape[1]
    order = np.argsort(cand_ids, kind="mergesort")  # stable: equal ids in column order
    sorted_ids = cand_ids[order]
    samp_cols = np.nonzero(is_sampled)[0].astype(np.int64)
    n_samp = samp_cols.shape[0]
    # state per column while processing a row: 0 normal, 1 masked, 2 positive column kept as is
    state = np.zeros(n_cols, dtype=np.int8)
    touched = np.empty(n_cols, dtype=np.int64)
    for r in range(n_rows):
        n_touched = 0
        for e in range(pos_indptr[r], pos_indptr[r + 1]):
            p = pos_ids[e]
            lo = np.searchsorted(sorted_ids, p, side="left")
            hi = np.searchsorted(sorted_ids, p, side="right")
            if lo == hi:
                continue
            pc = order[lo]
            for t in range(lo, hi):
                if not is_sampled[order[t]]:
                    pc = order[t]
                    break
            for t in range(lo, hi):
                c = order[t]
                if state[c] == 0:
                    touched[n_touched] = c
                    n_touched += 1
                if c == pc:
                    if not (correct_positives and is_sampled[c]):
                        state[c] = 2
                else:
                    state[c] = 1
        row = buf[r]
        for k in range(n_samp):
            c = samp_cols[k]
            if state[c] == 0:
                row[c] -= offset[c]
        for k in range(n_touched):
            c = touched[k]
            if state[c] == 1:
                row[c] = mask_value
            state[c] = 0


def correct_logits_ref(buf, cand_ids, offset, is_sampled, pos_indptr, pos_ids, correct_positives,
                       mask_value):
    """Vectorised numpy reference of :func:`correct_logits`; returns a new array."""
    buf = np.asarray(buf)
    n_rows, n_cols = buf.shape
    out = buf.copy()
    out[:, is_sampled] -= offset[is_sampled]
    # columns sorted by (id, sampled after deterministic, column index): the first column of an
    # id's run is the positive column
    order = np.lexsort((np.arange(n_cols), is_sampled, cand_ids))
    sid = cand_ids[order]
    rows = np.repeat(np.arange(n_rows), np.diff(pos_indptr))
    lo = np.searchsorted(sid, pos_ids, side="left")
    hi = np.searchsorted(sid, pos_ids, side="right")
    cnt = hi - lo
    hit = cnt > 0
    pr, pc = rows[hit], order[lo[hit]]
    keep = ~(correct_positives & is_sampled[pc])
    out[pr[keep], pc[keep]] = buf[pr[keep], pc[keep]]
    total = int(cnt.sum())
    if total:
        starts = np.cumsum(cnt) - cnt
        k = np.arange(total) - np.repeat(starts, cnt)
        cols = order[np.repeat(lo, cnt) + k]
        rr = np.repeat(rows, cnt)
        other = k > 0
        out[rr[other], cols[other]] = mask_value
    return out
