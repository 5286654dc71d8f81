"""Candidate assembly: the union of a batch's candidates, their logit bias and their targets.

Implements the candidate side of the loss family of DESIGN.md §5 for a batch scored on a shared
candidate set (one dense matmul). The rules below define the content as two dense ``B x C``
arrays, ``logit_bias`` and ``targets``; the kernels build it in the **sparse layout** (further
down) and :func:`sparse_to_dense` rebuilds the dense arrays where they are wanted. Per row x
with positives P, teacher top-K T (ids and raw logits), mined negatives H, and the
batch-shared random negatives R (ids with their ``log E[count]`` under the proposal):

**Columns.** ``cand_ids`` is the union of all P, T, H, R ids in order of first appearance
(P row by row, then T, H, R). The union is built with an open-addressing hash map of size
``2^ceil(log2(2n))`` for n input ids: no L-sized array is ever allocated (L can be 3M).

**Duplicates collapse.** An id drawn c times in R becomes one column; its multiplicity enters
the logit: ``b_j = log E[count_j] - log c_j``, i.e. ``logit_bias = log c_j - log E[count_j]``.
This gives exactly the partition function of c separate copies each offset by
``log E[count_j]`` (``c * exp(s - log E) = exp(s + log c - log E)``).

**logit_bias f32[B, C]** (added to ``s / tau_s``). For row r and column j, by priority:

1. j is a positive column of r: 0, or ``-b_j`` if ``correct_positives`` and j was also drawn in R;
2. j is in T(r) (when ``teacher_candidates``) or H(r): 0 (deterministic for this row; a random
   draw of the same id is an accidental hit and is absorbed, so the sampled estimate only
   covers labels that are not already scored exactly);
3. j was drawn in R: ``-b_j``;
4. otherwise (a P/T/H column of another row): 0 if ``share_columns`` (an in-batch extra
   negative, uncorrected), else ``mask_value`` (the row does not see it).

**targets f32[B, C]**: ``a = (1 - alpha) * uniform(P) + alpha * q^t`` with
``q^t = softmax(t / tau_t)`` over the row's teacher entries whose column is visible to the row,
renormalised (duplicate teacher ids add up; duplicate positives count once). If the row has no
teacher entry the positives get all the mass; if it has no positive the teacher gets it (when
``alpha > 0``); a row with neither gets zero targets and contributes no loss.

If ``teacher_candidates`` is False the teacher ids do not enter the union: they only give
targets on columns that are already candidates (q^t restricted to A(x), DESIGN.md §5).

**Sparse layout** (:func:`fill_sparse`, :func:`assemble_candidates_sparse`). Almost every cell
of ``logit_bias`` is a per-column constant and ``targets`` has a few nonzeros per row, so the
content is produced without any ``B x C`` array:

* ``col_bias f32[C]``: ``-b_j`` on sampled columns (rule 3); on the other columns 0 if
  ``share_columns`` (rule 4), else ``mask_value``. With ``share_columns=False`` the column
  default is therefore the mask and a row's *visible* deterministic cells are listed as
  exceptions: a per-row visibility list of ``|P ∪ T ∪ H|`` cells instead of the
  ``B x (C_det - own)`` masked cells (about 8M at B = 1,024 with 8 own ids per row).
* exceptions, COO ``(ex_rows i64[m], ex_cols i64[m], ex_vals f32[m])`` sorted by (row, col),
  no duplicate cell: every cell of a row's own P, T (when ``teacher_candidates``) and H whose
  rule-1/2 value differs from ``col_bias`` (absorbed random draws, uncorrected positives that
  were also drawn, and the visibility list above). ``logit_bias[r, c] = ex_vals[k]`` if
  ``(r, c) = (ex_rows[k], ex_cols[k])``, else ``col_bias[c]``.
* targets, CSR over columns ``(t_indptr i64[B+1], t_cols i64[nnz], t_vals f32[nnz])``, columns
  ascending within a row, only nonzero values (the distinct P columns and visible T columns
  that receive mass).

Densified, the sparse layout equals the dense arrays bit for bit (same float32 arithmetic): the
tests hold it against a dense-layout oracle kernel that writes the ``B x C`` arrays directly
(``tests/_oracles/dense_assembly.py``, moved out of the library: nothing but tests used it).
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit

__all__ = ["candidate_union", "fill_sparse", "assemble_candidates_sparse",
           "assemble_candidates_sparse_ref", "sparse_to_dense"]


@njit(cache=True)
def _capacity(n):
    cap = 16
    while cap < 2 * n:
        cap *= 2
    return cap


@njit(cache=True)
def _slot(keys, key):
    """Slot of ``key`` in the open-addressing table ``keys`` (-1 = empty): its slot or the empty
    slot where it would go."""
    mask = keys.shape[0] - 1
    h = (np.uint64(key) * np.uint64(0x9E3779B97F4A7C15)) >> np.uint64(17)
    i = np.int64(h & np.uint64(mask))
    while True:
        k = keys[i]
        if k == key or k == -1:
            return i
        i = (i + 1) & mask


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


@njit(cache=True, inline="always")
def _insert(keys, vals, cand, n_c, key):
    """Column of ``key`` in the union, adding it as column ``n_c`` when new: ``(col, n_c')``."""
    s = _slot(keys, key)
    if keys[s] == -1:
        keys[s] = key
        vals[s] = n_c
        cand[n_c] = key
        n_c += 1
    return vals[s], n_c


@njit(cache=True)
def candidate_union(pos_ids, t_ids, h_ids, r_ids, r_log_ec, teacher_candidates):
    """Union of the batch's candidate ids (first-appearance order P, T, H, R) by hashing.

    Returns ``(cand_ids i64[C], is_sampled bool[C], neg_off f32[C], pos_cols i64[nnz_P],
    t_cols i64[nnz_T], h_cols i64[nnz_H])`` where ``neg_off = log c_j - log E[count_j]`` on
    sampled columns (c_j draws of the id; the first draw's ``log E`` is used) and 0 elsewhere;
    ``t_cols`` is -1 for a teacher id that is not a candidate (only if not
    ``teacher_candidates``).
    """
    n_p = pos_ids.shape[0]
    n_t = t_ids.shape[0]
    n_h = h_ids.shape[0]
    n_r = r_ids.shape[0]
    n_all = n_p + (n_t if teacher_candidates else 0) + n_h + n_r
    keys = np.full(_capacity(n_all), -1, dtype=np.int64)
    vals = np.empty(keys.shape[0], dtype=np.int64)
    cand = np.empty(n_all, dtype=np.int64)
    n_c = 0

    pos_cols = np.empty(n_p, dtype=np.int64)
    for i in range(n_p):
        pos_cols[i], n_c = _insert(keys, vals, cand, n_c, pos_ids[i])
    t_cols = np.empty(n_t, dtype=np.int64)
    if teacher_candidates:
        for i in range(n_t):
            t_cols[i], n_c = _insert(keys, vals, cand, n_c, t_ids[i])
    h_cols = np.empty(n_h, dtype=np.int64)
    for i in range(n_h):
        h_cols[i], n_c = _insert(keys, vals, cand, n_c, h_ids[i])
    r_count = np.zeros(n_all, dtype=np.int64)
    r_lec = np.zeros(n_all, dtype=np.float64)
    for i in range(n_r):
        c, n_c = _insert(keys, vals, cand, n_c, r_ids[i])
        if r_count[c] == 0:
            r_lec[c] = r_log_ec[i]
        r_count[c] += 1
    if not teacher_candidates:
        for i in range(n_t):
            s = _slot(keys, t_ids[i])
            t_cols[i] = vals[s] if keys[s] != -1 else -1

    # per-column sampled bias -b_j = log c_j - log E[count_j]
    is_sampled = np.zeros(n_c, dtype=np.bool_)
    neg_off = np.zeros(n_c, dtype=np.float32)
    for c in range(n_c):
        if r_count[c] > 0:
            is_sampled[c] = True
            neg_off[c] = np.float32(-(r_lec[c] - math.log(r_count[c])))
    return cand[:n_c].copy(), is_sampled, neg_off, pos_cols, t_cols, h_cols


def _union_ref(pos_ids, t_ids, h_ids, r_ids, r_log_ec, teacher_candidates):
    """Vectorised numpy reference of :func:`candidate_union` (np.unique, searchsorted,
    bincount); same outputs."""
    parts = [pos_ids] + ([t_ids] if teacher_candidates else []) + [h_ids, r_ids]
    all_ids = np.concatenate(parts).astype(np.int64)
    uniq, first, inv = np.unique(all_ids, return_index=True, return_inverse=True)
    order = np.argsort(first, kind="stable")
    rank = np.empty(len(uniq), dtype=np.int64)
    rank[order] = np.arange(len(uniq))
    cand = uniq[order]
    cols_all = rank[inv.ravel()]
    C = len(cand)
    n_p, n_h, n_r = len(pos_ids), len(h_ids), len(r_ids)
    pos_cols = cols_all[:n_p]
    off = n_p
    if teacher_candidates:
        t_cols = cols_all[off:off + len(t_ids)]
        off += len(t_ids)
    else:
        where = np.searchsorted(uniq, t_ids)
        where_c = np.minimum(where, max(len(uniq) - 1, 0))
        found = (where < len(uniq)) & (uniq[where_c] == t_ids) if len(uniq) else np.zeros(
            len(t_ids), dtype=bool)
        t_cols = np.where(found, rank[where_c] if len(uniq) else -1, -1).astype(np.int64)
    h_cols = cols_all[off:off + n_h]
    r_cols = cols_all[off + n_h:off + n_h + n_r]

    r_count = np.bincount(r_cols, minlength=C)
    is_sampled = r_count > 0
    r_lec = np.zeros(C)
    r_lec[r_cols[::-1]] = np.asarray(r_log_ec, dtype=np.float64)[::-1]  # first draw wins
    with np.errstate(divide="ignore"):
        neg_off = np.where(is_sampled, -(r_lec - np.log(np.maximum(r_count, 1))), 0.0)
    neg_off = neg_off.astype(np.float32)

    return cand, is_sampled, neg_off, pos_cols, np.asarray(t_cols, dtype=np.int64), h_cols


# ------------------------------------------------------------------------------------------------
# sparse layout
# ------------------------------------------------------------------------------------------------

@njit(cache=True)
def _sort_prefix(buf, k):
    """Sort ``buf[:k]`` in place (insertion sort for the usual handful of entries per row)."""
    if k > 32:
        buf[:k] = np.sort(buf[:k])
        return
    for i in range(1, k):
        v = buf[i]
        j = i - 1
        while j >= 0 and buf[j] > v:
            buf[j + 1] = buf[j]
            j -= 1
        buf[j + 1] = v


@njit(cache=True)
def fill_sparse(num_rows, pos_indptr, pos_cols, t_indptr, t_cols, t_logits, h_indptr, h_cols,
                is_sampled, neg_off, alpha, tau_t, correct_positives, share_columns,
                teacher_candidates, mask_value):
    """The sparse layout of ``logit_bias`` and ``targets`` from the column maps of
    :func:`candidate_union` (rules and layout in the module docstring).

    Returns ``(col_bias f32[C], ex_rows i64[m], ex_cols i64[m], ex_vals f32[m],
    t_indptr_out i64[B+1], tg_cols i64[nnz], tg_vals f32[nnz])``. Work and memory are
    O(C + nnz(P, T, H)): two C-sized stamp arrays mark the cells a row owns, so no B x C array
    is touched. Target values use the float32/float64 arithmetic of the dense-layout oracle
    (``tests/_oracles/dense_assembly.py``) in the same order, so densifying gives its output
    exactly.
    """
    n_c = is_sampled.shape[0]
    base = np.float32(0.0) if share_columns else mask_value
    col_bias = np.empty(n_c, dtype=np.float32)
    for c in range(n_c):
        col_bias[c] = neg_off[c] if is_sampled[c] else base

    n_own = pos_indptr[num_rows] + h_indptr[num_rows]
    if teacher_candidates:
        n_own += t_indptr[num_rows]
    n_tgt = pos_indptr[num_rows] + t_indptr[num_rows]
    width = 1
    for r in range(num_rows):
        w = (pos_indptr[r + 1] - pos_indptr[r]) + (t_indptr[r + 1] - t_indptr[r]) \
            + (h_indptr[r + 1] - h_indptr[r])
        if w > width:
            width = w
    ex_rows = np.empty(n_own, dtype=np.int64)
    ex_cols = np.empty(n_own, dtype=np.int64)
    ex_vals = np.empty(n_own, dtype=np.float32)
    tg_indptr = np.zeros(num_rows + 1, dtype=np.int64)
    tg_cols = np.empty(n_tgt, dtype=np.int64)
    tg_vals = np.empty(n_tgt, dtype=np.float32)
    own_row = np.full(n_c, -1, dtype=np.int64)  # row whose own value own_val[c] holds
    own_val = np.empty(n_c, dtype=np.float32)
    tgt_row = np.full(n_c, -1, dtype=np.int64)  # row whose target tgt_val[c] holds
    tgt_val = np.empty(n_c, dtype=np.float32)
    obuf = np.empty(width, dtype=np.int64)
    tbuf = np.empty(width, dtype=np.int64)
    half_mask = 0.5 * mask_value
    m = 0
    nt = 0
    for r in range(num_rows):
        # own cells, by increasing priority (H, T = 0; then P)
        k = 0
        for e in range(h_indptr[r], h_indptr[r + 1]):
            c = h_cols[e]
            if own_row[c] != r:
                own_row[c] = r
                obuf[k] = c
                k += 1
            own_val[c] = 0.0
        if teacher_candidates:
            for e in range(t_indptr[r], t_indptr[r + 1]):
                c = t_cols[e]
                if own_row[c] != r:
                    own_row[c] = r
                    obuf[k] = c
                    k += 1
                own_val[c] = 0.0
        for e in range(pos_indptr[r], pos_indptr[r + 1]):
            c = pos_cols[e]
            if own_row[c] != r:
                own_row[c] = r
                obuf[k] = c
                k += 1
            own_val[c] = neg_off[c] if (correct_positives and is_sampled[c]) else np.float32(0.0)
        _sort_prefix(obuf, k)
        for i in range(k):
            c = obuf[i]
            if own_val[c] != col_bias[c]:
                ex_rows[m] = r
                ex_cols[m] = c
                ex_vals[m] = own_val[c]
                m += 1

        # targets: distinct positive columns, then the visible teacher entries
        kt = 0
        for e in range(pos_indptr[r], pos_indptr[r + 1]):
            c = pos_cols[e]
            if tgt_row[c] != r:
                tgt_row[c] = r
                tbuf[kt] = c
                kt += 1
        n_pos = kt
        z_max = -np.inf
        for e in range(t_indptr[r], t_indptr[r + 1]):
            c = t_cols[e]
            if c >= 0 and (own_val[c] if own_row[c] == r else col_bias[c]) > half_mask:
                z = np.float64(t_logits[e]) / tau_t
                if z > z_max:
                    z_max = z
        z_sum = 0.0
        if z_max > -np.inf:
            for e in range(t_indptr[r], t_indptr[r + 1]):
                c = t_cols[e]
                if c >= 0 and (own_val[c] if own_row[c] == r else col_bias[c]) > half_mask:
                    z_sum += math.exp(np.float64(t_logits[e]) / tau_t - z_max)
        w_p, w_t = _target_weights(n_pos, z_sum, alpha)
        each = np.float32(w_p / n_pos) if n_pos > 0 else np.float32(0.0)
        for i in range(n_pos):
            tgt_val[tbuf[i]] = each
        if w_t > 0.0:
            scale = w_t / z_sum
            for e in range(t_indptr[r], t_indptr[r + 1]):
                c = t_cols[e]
                if c >= 0 and (own_val[c] if own_row[c] == r else col_bias[c]) > half_mask:
                    if tgt_row[c] != r:
                        tgt_row[c] = r
                        tgt_val[c] = 0.0
                        tbuf[kt] = c
                        kt += 1
                    w = scale * math.exp(np.float64(t_logits[e]) / tau_t - z_max)
                    tgt_val[c] = np.float32(np.float64(tgt_val[c]) + w)
        _sort_prefix(tbuf, kt)
        for i in range(kt):
            c = tbuf[i]
            if tgt_val[c] != 0.0:
                tg_cols[nt] = c
                tg_vals[nt] = tgt_val[c]
                nt += 1
        tg_indptr[r + 1] = nt
    return (col_bias, ex_rows[:m].copy(), ex_cols[:m].copy(), ex_vals[:m].copy(), tg_indptr,
            tg_cols[:nt].copy(), tg_vals[:nt].copy())


def assemble_candidates_sparse(num_rows, pos_indptr, pos_ids, t_indptr, t_ids, t_logits,
                               h_indptr, h_ids, r_ids, r_log_ec, alpha, tau_t, correct_positives,
                               share_columns, teacher_candidates, mask_value):
    """Build the shared candidate set of a batch with its logit bias and targets (sparse layout).

    Composes the two kernels :func:`candidate_union` and :func:`fill_sparse`.

    Inputs (CSR triplets with ``indptr i64[B+1]``; empty parts as zero-length arrays):
      pos_indptr, pos_ids i64          positives P
      t_indptr, t_ids i64, t_logits f32   teacher top-K T with raw logits
      h_indptr, h_ids i64              mined negatives H
      r_ids i64[m], r_log_ec f64[m]    shared random negatives R and log E[count] of each draw
      alpha, tau_t f64; correct_positives, share_columns, teacher_candidates bool;
      mask_value f32
    Returns ``(cand_ids i64[C],
    is_sampled bool[C], col_bias f32[C], ex_rows i64[m], ex_cols i64[m], ex_vals f32[m],
    tg_indptr i64[B+1], tg_cols i64[nnz], tg_vals f32[nnz], pos_cols, t_cols, h_cols)``.
    """
    cand, is_sampled, neg_off, pos_cols, t_cols, h_cols = candidate_union(
        pos_ids, t_ids, h_ids, r_ids, r_log_ec, teacher_candidates)
    sparse = fill_sparse(num_rows, pos_indptr, pos_cols, t_indptr, t_cols, t_logits, h_indptr,
                         h_cols, is_sampled, neg_off, alpha, tau_t, correct_positives,
                         share_columns, teacher_candidates, mask_value)
    return (cand, is_sampled) + tuple(sparse) + (pos_cols, t_cols, h_cols)


def assemble_candidates_sparse_ref(num_rows, pos_indptr, pos_ids, t_indptr, t_ids, t_logits,
                                   h_indptr, h_ids, r_ids, r_log_ec, alpha, tau_t,
                                   correct_positives, share_columns, teacher_candidates,
                                   mask_value):
    """Vectorised numpy reference of :func:`assemble_candidates_sparse` (np.unique over cell
    keys ``row * C + col``, searchsorted, bincount, ufunc.at; no B x C array, no Python loop).
    Same outputs; target values equal up to fp32 rounding (summed in float64 here)."""
    B = num_rows
    cand, is_sampled, neg_off, pos_cols, t_cols, h_cols = _union_ref(
        pos_ids, t_ids, h_ids, r_ids, r_log_ec, teacher_candidates)
    C = len(cand)
    base = np.float32(0.0) if share_columns else np.float32(mask_value)
    col_bias = np.where(is_sampled, neg_off, base).astype(np.float32)
    rows_p = np.repeat(np.arange(B, dtype=np.int64), np.diff(pos_indptr))
    rows_t = np.repeat(np.arange(B, dtype=np.int64), np.diff(t_indptr))
    rows_h = np.repeat(np.arange(B, dtype=np.int64), np.diff(h_indptr))

    # own cells (H, T if candidates, P); a P cell's value wins (rule 1), others are 0 (rule 2)
    pkey = np.unique(rows_p * C + pos_cols)
    det = [pkey, rows_h * C + h_cols] + ([rows_t * C + t_cols] if teacher_candidates else [])
    okey = np.unique(np.concatenate(det))
    ocol = okey % C if C else okey
    is_p = np.isin(okey, pkey, assume_unique=True)
    oval = np.where(is_p & correct_positives & is_sampled[ocol], neg_off[ocol],
                    np.float32(0.0)).astype(np.float32)
    ex = oval != col_bias[ocol]
    ex_rows = okey[ex] // C if C else okey[ex]
    ex_cols, ex_vals = ocol[ex], oval[ex]

    # teacher visibility: the cell's bias is its own value if it is an own cell, else col_bias
    vis = t_cols >= 0
    tkey = rows_t[vis] * C + t_cols[vis]
    where = np.searchsorted(okey, tkey)
    where_c = np.minimum(where, max(len(okey) - 1, 0))
    found = (where < len(okey)) & (okey[where_c] == tkey) if len(okey) else np.zeros(
        len(tkey), dtype=bool)
    cell_bias = np.where(found, oval[where_c] if len(okey) else 0, col_bias[t_cols[vis]])
    vis[vis] = cell_bias > 0.5 * mask_value

    z = np.asarray(t_logits, dtype=np.float64) / tau_t
    z_max = np.full(B, -np.inf)
    np.maximum.at(z_max, rows_t[vis], z[vis])
    ez = np.zeros(len(z))
    ez[vis] = np.exp(z[vis] - z_max[rows_t[vis]])
    z_sum = np.bincount(rows_t[vis], weights=ez[vis], minlength=B)
    prow = pkey // C if C else pkey
    n_pos = np.bincount(prow, minlength=B)
    has_t = (z_sum > 0) & (alpha > 0)
    has_p = n_pos > 0
    w_p = np.where(has_p & has_t, 1.0 - alpha, np.where(has_p, 1.0, 0.0))
    w_t = np.where(has_p & has_t, alpha, np.where(has_t & ~has_p, 1.0, 0.0))
    tv = vis & has_t[rows_t]
    p_w = (w_p / np.maximum(n_pos, 1))[prow].astype(np.float32).astype(np.float64)
    t_w = (w_t / np.where(z_sum > 0, z_sum, 1.0))[rows_t[tv]] * ez[tv]
    key, inv = np.unique(np.concatenate([pkey, rows_t[tv] * C + t_cols[tv]]),
                         return_inverse=True)
    val = np.bincount(inv.ravel(), weights=np.concatenate([p_w, t_w]),
                      minlength=len(key)).astype(np.float32)
    nz = val != 0
    key, val = key[nz], val[nz]
    tg_rows = key // C if C else key
    tg_indptr = np.zeros(B + 1, dtype=np.int64)
    np.cumsum(np.bincount(tg_rows, minlength=B), out=tg_indptr[1:])
    tg_cols = key % C if C else key
    return (cand, is_sampled, col_bias, ex_rows.astype(np.int64), ex_cols.astype(np.int64),
            ex_vals, tg_indptr, tg_cols.astype(np.int64), val, pos_cols, t_cols, h_cols)


def sparse_to_dense(num_rows, col_bias, ex_rows, ex_cols, ex_vals, tg_indptr, tg_cols, tg_vals):
    """Densify the sparse layout: ``(logit_bias f32[B, C], targets f32[B, C])`` (tests, and the
    ova / pal / decoupled candidate reductions of :mod:`xmr.objectives.loss`, which autograd
    through a dense bias; the default loss on the sparse layout never builds them)."""
    C = col_bias.shape[0]
    bias = np.empty((num_rows, C), dtype=np.float32)
    bias[:] = col_bias[None, :]
    bias[ex_rows, ex_cols] = ex_vals
    targets = np.zeros((num_rows, C), dtype=np.float32)
    rows = np.repeat(np.arange(num_rows, dtype=np.int64), np.diff(tg_indptr))
    targets[rows, tg_cols] = tg_vals
    return bias, targets
