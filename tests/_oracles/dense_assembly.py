"""Oracle: the candidate assembly in the dense layout (``logit_bias``, ``targets`` f32[B, C]).

Only the tests use it: the library builds the sparse layout
(:func:`xmr.kernels.assembly.assemble_candidates_sparse`, per-column bias + row exceptions + CSR
targets), which must densify (:func:`xmr.kernels.assembly.sparse_to_dense`) to what this
oracle writes bit for bit. The rules (priorities, duplicates, visibility, targets) are those of
the docstring of :mod:`xmr.kernels.assembly`. Moved here from the library (issue 9: the training
path never used it, and its ``out=`` buffers served only a benchmark).

- :func:`fill_bias_targets` (Numba) writes both arrays from the column maps of
  :func:`xmr.kernels.assembly.candidate_union`; :func:`assemble_candidates` composes the two;
- :func:`assemble_candidates_ref`: a vectorised numpy reference (same outputs, targets up to fp32
  rounding);
- :func:`assemble_batch_dense`: the keyword interface of
  :func:`xmr.negatives.candidates.assemble_batch`, returning a
  :class:`~xmr.negatives.candidates.CandidateBatch` (no input validation: the inputs are the
  tests' own).
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit

from xmr.kernels.assembly import _union_ref, candidate_union
from xmr.negatives.candidates import MASK_VALUE, CandidateBatch


# A copy of the library's rule on purpose: the oracle does not share the code it checks.
@njit(cache=True, inline="always")
def _target_weights(n_pos, z_sum, alpha):
    """Weights of y and q^t in a(x) = w_p·y + w_t·q^t: (1−α, α); a row with no positives puts
    everything on the teacher, a row with no (visible) teacher mass everything on y."""
    has_t = z_sum > 0.0 and alpha > 0.0
    if n_pos > 0 and has_t:
        return 1.0 - alpha, alpha
    if n_pos > 0:
        return 1.0, 0.0
    if has_t:
        return 0.0, 1.0
    return 0.0, 0.0


@njit(cache=True)
def fill_bias_targets(bias, targets, pos_indptr, pos_cols, t_indptr, t_cols, t_logits, h_indptr,
                      h_cols, is_sampled, neg_off, alpha, tau_t, correct_positives,
                      share_columns, teacher_candidates, mask_value):
    """Write ``logit_bias`` and ``targets`` (both f32[B, C], C-contiguous, any initial content)
    in place from the column maps of :func:`candidate_union` (rules in the docstring of
    :mod:`xmr.kernels.assembly`).

    Serial; the buffers are allocated by the caller (numpy's allocator backs large arrays with
    huge pages, which makes first touch several times cheaper than Numba's).
    """
    num_rows = bias.shape[0]
    n_c = bias.shape[1]
    samp_cols = np.nonzero(is_sampled)[0].astype(np.int64)
    n_samp = samp_cols.shape[0]
    base = np.float32(0.0) if share_columns else mask_value
    half_mask = 0.5 * mask_value
    for r in range(num_rows):
        row = bias[r]
        trow = targets[r]
        row[:] = base
        trow[:] = 0.0
        for k in range(n_samp):
            c = samp_cols[k]
            row[c] = neg_off[c]
        for e in range(h_indptr[r], h_indptr[r + 1]):
            row[h_cols[e]] = 0.0
        if teacher_candidates:
            for e in range(t_indptr[r], t_indptr[r + 1]):
                row[t_cols[e]] = 0.0
        n_pos = 0
        for e in range(pos_indptr[r], pos_indptr[r + 1]):
            c = pos_cols[e]
            if correct_positives and is_sampled[c]:
                row[c] = neg_off[c]
            else:
                row[c] = 0.0
            if trow[c] == 0.0:  # distinct positive columns (marked with 1, set below)
                trow[c] = 1.0
                n_pos += 1

        # teacher distribution over the visible teacher entries
        z_max = -np.inf
        for e in range(t_indptr[r], t_indptr[r + 1]):
            c = t_cols[e]
            if c >= 0 and row[c] > half_mask:
                z = np.float64(t_logits[e]) / tau_t
                if z > z_max:
                    z_max = z
        z_sum = 0.0
        if z_max > -np.inf:
            for e in range(t_indptr[r], t_indptr[r + 1]):
                c = t_cols[e]
                if c >= 0 and row[c] > half_mask:
                    z_sum += math.exp(np.float64(t_logits[e]) / tau_t - z_max)
        w_p, w_t = _target_weights(n_pos, z_sum, alpha)
        each = np.float32(w_p / n_pos) if n_pos > 0 else np.float32(0.0)
        for e in range(pos_indptr[r], pos_indptr[r + 1]):
            trow[pos_cols[e]] = each
        if w_t > 0.0:
            scale = w_t / z_sum
            for e in range(t_indptr[r], t_indptr[r + 1]):
                c = t_cols[e]
                if c >= 0 and row[c] > half_mask:
                    w = scale * math.exp(np.float64(t_logits[e]) / tau_t - z_max)
                    trow[c] = np.float32(np.float64(trow[c]) + w)


def assemble_candidates(num_rows, pos_indptr, pos_ids, t_indptr, t_ids, t_logits, h_indptr,
                        h_ids, r_ids, r_log_ec, alpha, tau_t, correct_positives, share_columns,
                        teacher_candidates, mask_value):
    """Build the shared candidate set of a batch with its logit bias and targets.

    Composes the two kernels :func:`candidate_union` and :func:`fill_bias_targets`.

    Inputs (CSR triplets with ``indptr i64[B+1]``; empty parts as zero-length arrays):
      pos_indptr, pos_ids i64          positives P
      t_indptr, t_ids i64, t_logits f32   teacher top-K T with raw logits
      h_indptr, h_ids i64              mined negatives H
      r_ids i64[m], r_log_ec f64[m]    shared random negatives R and log E[count] of each draw
      alpha, tau_t f64; correct_positives, share_columns, teacher_candidates bool;
      mask_value f32
    Returns ``(cand_ids i64[C], is_sampled bool[C], logit_bias f32[B, C], targets f32[B, C],
    pos_cols i64[nnz_P], t_cols i64[nnz_T] (-1: not a candidate), h_cols i64[nnz_H])``.
    """
    cand, is_sampled, neg_off, pos_cols, t_cols, h_cols = candidate_union(
        pos_ids, t_ids, h_ids, r_ids, r_log_ec, teacher_candidates)
    n_c = cand.shape[0]
    bias = np.empty((num_rows, n_c), dtype=np.float32)
    targets = np.empty((num_rows, n_c), dtype=np.float32)
    fill_bias_targets(bias, targets, pos_indptr, pos_cols, t_indptr, t_cols, t_logits, h_indptr,
                      h_cols, is_sampled, neg_off, alpha, tau_t, correct_positives,
                      share_columns, teacher_candidates, mask_value)
    return cand, is_sampled, bias, targets, pos_cols, t_cols, h_cols


def assemble_candidates_ref(num_rows, pos_indptr, pos_ids, t_indptr, t_ids, t_logits, h_indptr,
                            h_ids, r_ids, r_log_ec, alpha, tau_t, correct_positives, share_columns,
                            teacher_candidates, mask_value):
    """Vectorised numpy reference of :func:`assemble_candidates` (np.unique, searchsorted,
    fancy indexing, bincount, ufunc.at); same outputs (targets equal up to fp32 rounding)."""
    B = num_rows
    cand, is_sampled, neg_off, pos_cols, t_cols, h_cols = _union_ref(
        pos_ids, t_ids, h_ids, r_ids, r_log_ec, teacher_candidates)
    C = len(cand)

    bias = np.empty((B, C), dtype=np.float32)
    T = np.empty((B, C), dtype=np.float32)
    bias.fill(0.0 if share_columns else mask_value)
    bias[:, is_sampled] = neg_off[is_sampled]
    rows_h = np.repeat(np.arange(B), np.diff(h_indptr))
    bias[rows_h, h_cols] = 0.0
    rows_t = np.repeat(np.arange(B), np.diff(t_indptr))
    if teacher_candidates:
        bias[rows_t, t_cols] = 0.0
    rows_p = np.repeat(np.arange(B), np.diff(pos_indptr))
    corr = correct_positives & is_sampled[pos_cols]
    bias[rows_p, pos_cols] = np.where(corr, neg_off[pos_cols], np.float32(0.0))

    # targets
    pkey = np.unique(rows_p * C + pos_cols)
    prow = pkey // C if C else pkey
    n_pos = np.bincount(prow, minlength=B)
    vis = t_cols >= 0
    vis[vis] = bias[rows_t[vis], t_cols[vis]] > 0.5 * mask_value
    z = np.asarray(t_logits, dtype=np.float64) / tau_t
    z_max = np.full(B, -np.inf)
    np.maximum.at(z_max, rows_t[vis], z[vis])
    ez = np.zeros(len(z))
    ez[vis] = np.exp(z[vis] - z_max[rows_t[vis]])
    z_sum = np.bincount(rows_t[vis], weights=ez[vis], minlength=B)
    has_t = (z_sum > 0) & (alpha > 0)
    has_p = n_pos > 0
    w_p = np.where(has_p & has_t, 1.0 - alpha, np.where(has_p, 1.0, 0.0))
    w_t = np.where(has_p & has_t, alpha, np.where(has_t & ~has_p, 1.0, 0.0))
    T.fill(0.0)
    if len(pkey):
        T.reshape(-1)[pkey] = (w_p / np.maximum(n_pos, 1))[prow]
    tv = vis & has_t[rows_t]
    np.add.at(T, (rows_t[tv], t_cols[tv]), (w_t / np.where(z_sum > 0, z_sum, 1.0))[rows_t[tv]]
              * ez[tv])
    return (cand, is_sampled, bias, T, pos_cols, np.asarray(t_cols),
            h_cols)


def assemble_batch_dense(pos_indptr, pos_ids, *, teacher=None, mined=None, sampled=None,
                         alpha=0.0, tau_t=1.0, correct_positives=False, share_columns=True,
                         teacher_candidates=True, num_labels=None) -> CandidateBatch:
    """The dense layout of what ``assemble_batch`` (same keywords) assembles. ``num_labels`` is
    accepted for the shared signature and not used."""
    pos_ids = np.ascontiguousarray(pos_ids, dtype=np.int64)
    pos_indptr = np.ascontiguousarray(pos_indptr, dtype=np.int64)
    B = pos_indptr.size - 1
    empty_i, empty_ptr = np.zeros(0, np.int64), np.zeros(B + 1, np.int64)
    if teacher is None:
        t_ptr, t_ids, t_log = empty_ptr, empty_i, np.zeros(0, np.float32)
    else:
        t_ptr, t_ids, t_log = (np.ascontiguousarray(teacher[0], dtype=np.int64),
                               np.ascontiguousarray(teacher[1], dtype=np.int64),
                               np.ascontiguousarray(teacher[2], dtype=np.float32))
    if mined is None:
        h_ptr, h_ids = empty_ptr, empty_i
    else:
        h_ptr, h_ids = (np.ascontiguousarray(mined[0], dtype=np.int64),
                        np.ascontiguousarray(mined[1], dtype=np.int64))
    if sampled is None:
        r_ids, r_lec = empty_i, np.zeros(0, np.float64)
    else:
        r_ids, r_lec = (np.ascontiguousarray(sampled[0], dtype=np.int64),
                        np.ascontiguousarray(sampled[1], dtype=np.float64))
    cand, is_s, bias, targets, pos_cols, _, _ = assemble_candidates(
        B, pos_indptr, pos_ids, t_ptr, t_ids, t_log, h_ptr, h_ids, r_ids, r_lec, float(alpha),
        float(tau_t), bool(correct_positives), bool(share_columns), bool(teacher_candidates),
        MASK_VALUE)
    return CandidateBatch(cand_ids=cand, logit_bias=bias, targets=targets, is_sampled=is_s,
                          pos_cols=pos_cols)
