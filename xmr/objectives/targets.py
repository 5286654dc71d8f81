"""Per-row target distributions a(x) = (1 − α)·y(x) + α·q^t(x) as CSR (DESIGN.md §5).

y(x) is uniform over the positives P(x) — the normalised "pick-all-labels" reduction (PAL-N),
which Menon, Rawat, Reddi & Kumar (NeurIPS 2019, "Multilabel reductions: what is my loss
optimising?") show consistent for *recall*@k. q^t(x) is the teacher's distribution
softmax(t(x)/τ_t) over its top-K labels. With A(x) = all labels the restriction of q^t to A(x)
is a no-op, so these targets feed the exact sharded softmax directly.

:func:`reduction_targets` gives the other reductions of the family (:data:`REDUCTIONS`): PAL
(weight 1 per positive, shared denominator; precision-consistent) and the decoupled form
(each positive's denominator excludes the row's other positives).
"""

from __future__ import annotations

from typing import Optional, Tuple

import numpy as np
import scipy.sparse as sp

Csr = Tuple[np.ndarray, np.ndarray]  # (indptr i64[B+1], ids i64[nnz])


def truncate_rows(indptr: np.ndarray, k: int, *arrays: np.ndarray):
    """Keep the first ``k`` entries of every CSR row. Returns ``(indptr, *arrays)``."""
    indptr = np.asarray(indptr, dtype=np.int64)
    lens = np.minimum(np.diff(indptr), k)
    new_ptr = np.zeros_like(indptr)
    np.cumsum(lens, out=new_ptr[1:])
    pos = np.repeat(indptr[:-1] - new_ptr[:-1], lens) + np.arange(new_ptr[-1], dtype=np.int64)
    return (new_ptr, *[np.asarray(a)[pos] for a in arrays])


def row_softmax(indptr: np.ndarray, logits: np.ndarray, tau: float) -> np.ndarray:
    """softmax(logits / tau) within each CSR row (float64 internally, float32 out)."""
    indptr = np.asarray(indptr, dtype=np.int64)
    z = np.asarray(logits, dtype=np.float64) / tau
    lens = np.diff(indptr)
    if z.size == 0:
        return z.astype(np.float32)
    starts = indptr[:-1][lens > 0]
    row_max = np.maximum.reduceat(z, starts)
    z = z - np.repeat(row_max, lens[lens > 0])
    e = np.exp(z)
    denom = np.add.reduceat(e, starts)
    return (e / np.repeat(denom, lens[lens > 0])).astype(np.float32)


def soft_targets(
    pos: Csr,
    num_labels: int,
    teacher: Optional[Tuple[np.ndarray, np.ndarray, np.ndarray]] = None,
    alpha: float = 0.0,
    tau_t: float = 1.0,
) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Targets over all labels: ``(indptr i64[B+1], ids i64[nnz], vals f32[nnz])``, rows sum to 1.

    ``pos``: the rows' positives; ``teacher``: ``(indptr, ids, raw logits)`` of the teacher's
    top-K for the same rows. A row with no positives takes the teacher's distribution alone
    (α is then 1 for that row); a row with neither raises ``ValueError``.
    """
    p_ptr, p_ids = (np.asarray(a, dtype=np.int64) for a in pos)
    B = p_ptr.shape[0] - 1
    p_len = np.diff(p_ptr)
    rows = [np.repeat(np.arange(B), p_len)]
    cols = [p_ids]
    has_t = teacher is not None and alpha > 0
    t_len = np.zeros(B, dtype=np.int64)
    if has_t:
        t_ptr, t_ids, t_logits = teacher
        t_len = np.diff(np.asarray(t_ptr, dtype=np.int64))
    if np.any((p_len == 0) & (t_len == 0)):
        bad = int(np.flatnonzero((p_len == 0) & (t_len == 0))[0])
        raise ValueError(f"row {bad} of the batch has no positive label and no teacher entry: "
                         "its target distribution is undefined")
    w_pos = np.where(t_len > 0, 1.0 - alpha, 1.0) if has_t else np.ones(B)
    vals = [np.repeat(w_pos / np.maximum(p_len, 1), p_len)]
    if has_t:
        q = row_softmax(t_ptr, t_logits, tau_t).astype(np.float64)
        w_t = np.where(p_len > 0, alpha, 1.0)
        rows.append(np.repeat(np.arange(B), t_len))
        cols.append(np.asarray(t_ids, dtype=np.int64))
        vals.append(q * np.repeat(w_t, t_len))
    M = sp.csr_matrix((np.concatenate(vals), (np.concatenate(rows), np.concatenate(cols))),
                      shape=(B, num_labels))
    M.sum_duplicates()
    M.sort_indices()
    return M.indptr.astype(np.int64), M.indices.astype(np.int64), M.data.astype(np.float32)


#: the multilabel reductions of the loss family (DESIGN.md §5)
REDUCTIONS = ("pal-n", "pal", "decoupled", "ova")
#: how the teacher's part competes: against all labels (a shared softmax) or, with the
#: decoupled reduction, against the row's negatives only
TEACHER_TERMS = ("shared", "decoupled")


def reduction_targets(pos: Csr, num_labels: int,
                      teacher: Optional[Tuple[np.ndarray, np.ndarray, np.ndarray]] = None,
                      alpha: float = 0.0, tau_t: float = 1.0, reduction: str = "pal-n",
                      teacher_term: str = "shared"):
    """Targets of one reduction over all labels: ``(soft, positives, normalized)``.

    The loss of a row is ``LSE · Σ_j t_j − Σ_j t_j s_j`` over the *soft* CSR targets
    ``(indptr, ids, vals)`` plus, when ``positives = (indptr, ids, weights)`` is not None, the
    decoupled terms ``w_p · softplus(log Σ_{j∉P} e^{s_j} − s_p)``. With teacher mass the loss is
    ``(1 − α) · L_reduction(y) + α · CE(q^t)`` (a row without teacher entries takes α = 0, a row
    without positives α = 1, as :func:`soft_targets`):

    * ``pal-n``: soft = (1 − α)/|P| on each positive + α q^t (rows sum to 1; today's default);
    * ``pal``: soft = (1 − α) on each positive + α q^t (a row with more positives weighs more);
    * ``decoupled``: soft = α q^t; positives with weight (1 − α)/|P| (averaged over the row's
      positives, as DEXML's decoupled softmax). With ``teacher_term="decoupled"`` the teacher's
      mass on a positive joins that positive's decoupled weight and the rest (off the
      positives) competes with the negatives only, ``α Σ_{j∉P} q_j [neg − s_j]``: soft holds
      the off-positive mass alone and the caller passes ``soft_on_neg``.

    ``normalized`` is True when every soft row sums to 1. (``ova`` has its own targets:
    :func:`ova_targets`.)
    """
    if reduction not in REDUCTIONS or reduction == "ova":
        raise ValueError(f"reduction: expected one of {', '.join(REDUCTIONS)}, got {reduction!r}")
    if reduction == "pal-n":
        return soft_targets(pos, num_labels, teacher, alpha, tau_t), None, True
    p_ptr, p_ids = (np.asarray(a, dtype=np.int64) for a in pos)
    B = p_ptr.shape[0] - 1
    p_len = np.diff(p_ptr)
    has_t = teacher is not None and alpha > 0
    t_len = np.diff(np.asarray(teacher[0], dtype=np.int64)) if has_t else np.zeros(B, np.int64)
    if np.any((p_len == 0) & (t_len == 0)):
        bad = int(np.flatnonzero((p_len == 0) & (t_len == 0))[0])
        raise ValueError(f"row {bad} of the batch has no positive label and no teacher entry: "
                         "its target distribution is undefined")
    w_pos = np.where(t_len > 0, 1.0 - alpha, 1.0) if has_t else np.ones(B)
    if has_t:
        Q = teacher_distribution(*teacher, num_labels, tau_t)
        q_ptr, q_ids, q_vals = Q.indptr.astype(np.int64), Q.indices.astype(np.int64), Q.data
        w_t = np.where(p_len > 0, alpha, 1.0)
        q_vals = (q_vals * np.repeat(w_t, np.diff(q_ptr))).astype(np.float32)
    else:
        q_ptr, q_ids, q_vals = np.zeros(B + 1, np.int64), np.zeros(0, np.int64), np.zeros(0, np.float32)
    if reduction == "pal":
        M = sp.csr_matrix((np.repeat(w_pos, p_len), p_ids, p_ptr), shape=(B, num_labels)) + \
            sp.csr_matrix((q_vals, q_ids, q_ptr), shape=(B, num_labels))
        M.sum_duplicates()
        M.sort_indices()
        M.eliminate_zeros()
        return (M.indptr.astype(np.int64), M.indices.astype(np.int64), M.data.astype(np.float32)), \
            None, False
    pw = np.repeat(w_pos / np.maximum(p_len, 1), p_len).astype(np.float32)
    if teacher_term == "decoupled" and q_vals.size:
        Qm = sp.csr_matrix((q_vals, q_ids, q_ptr), shape=(B, num_labels))
        Pm = sp.csr_matrix((np.ones(p_ids.size, np.float32), p_ids, p_ptr), shape=(B, num_labels))
        Pm.sum_duplicates()
        Pm.data[:] = 1.0
        on_pos = np.asarray(Qm[np.repeat(np.arange(B), p_len), p_ids]).ravel()
        # a positive listed twice in a row splits the teacher's mass on it between its copies
        pw = (pw + on_pos / _pair_counts(p_ptr, p_ids, num_labels)).astype(np.float32)
        off = sp.csr_matrix(Qm - Qm.multiply(Pm))
        off.eliminate_zeros()
        off.sort_indices()
        q_ptr, q_ids, q_vals = (off.indptr.astype(np.int64), off.indices.astype(np.int64),
                                off.data.astype(np.float32))
    return (q_ptr, q_ids, q_vals), (p_ptr, p_ids, pw), False


def _pair_counts(p_ptr: np.ndarray, p_ids: np.ndarray, num_labels: int) -> np.ndarray:
    """For each positive entry, how many entries of its row carry the same label id."""
    B = p_ptr.shape[0] - 1
    rows = np.repeat(np.arange(B), np.diff(p_ptr))
    key = rows * np.int64(num_labels) + p_ids
    _, inv, counts = np.unique(key, return_inverse=True, return_counts=True)
    return counts[inv]


def ova_targets(pos: Csr, num_labels: int,
                teacher: Optional[Tuple[np.ndarray, np.ndarray, np.ndarray]] = None,
                alpha: float = 0.0, tau_t: float = 1.0, teacher_probabilities: bool = False):
    """Per-label targets of the one-versus-all reduction: CSR ``(indptr, ids, vals)`` with
    vals in [0, 1], every label not listed having target 0.

    ``t_j = (1 − α)·y_j + α·p^t_j`` where y_j = 1 on the positives (a duplicated id counts
    once) and p^t_j is the teacher's per-label probability: ``min(1, exp(t_j / τ_t))`` when the
    store's logits are log-probabilities (``teacher_probabilities``: tree teachers, ensembles,
    imported ``--probabilities``; the trees' scores estimate the marginals P(y_j = 1 | x)), else
    the softmax q^t_j over the row's top-K (a distribution, which under-states the marginals of
    a row with several labels). A row without teacher entries takes α = 0, one without
    positives α = 1; a row with neither has no positive target at all (its loss pushes every
    label down), which is allowed here.
    """
    p_ptr, p_ids = (np.asarray(a, dtype=np.int64) for a in pos)
    B = p_ptr.shape[0] - 1
    p_len = np.diff(p_ptr)
    Y = sp.csr_matrix((np.ones(p_ids.size, np.float64), p_ids, p_ptr), shape=(B, num_labels))
    Y.sum_duplicates()
    Y.data[:] = 1.0
    has_t = teacher is not None and alpha > 0
    if has_t:
        t_ptr, t_ids, t_logits = (np.asarray(a) for a in teacher)
        t_ptr = t_ptr.astype(np.int64)
        t_len = np.diff(t_ptr)
        if teacher_probabilities:
            pt = np.minimum(1.0, np.exp(np.asarray(t_logits, np.float64) / tau_t))
            T = sp.csr_matrix((pt, t_ids.astype(np.int64), t_ptr), shape=(B, num_labels))
            T.sum_duplicates()
            T.data = np.minimum(T.data, 1.0)
        else:
            T = teacher_distribution(t_ptr, t_ids, t_logits, num_labels, tau_t).astype(np.float64)
        w_y = np.where(t_len > 0, 1.0 - alpha, 1.0)
        w_t = np.where(p_len > 0, alpha, 1.0)
        M = sp.diags(w_y) @ Y + sp.diags(w_t) @ T
    else:
        M = Y
    M = sp.csr_matrix(M)
    M.sum_duplicates()
    M.sort_indices()
    M.eliminate_zeros()
    return (M.indptr.astype(np.int64), M.indices.astype(np.int64),
            np.minimum(M.data, 1.0).astype(np.float32))


def teacher_distribution(indptr, ids, logits, num_labels: int, tau: float = 1.0) -> sp.csr_matrix:
    """q^t = softmax(t / τ) over each row's teacher entries as a CSR matrix ``[n, L]`` (rows
    sorted, duplicates summed, empty rows empty)."""
    ptr = np.asarray(indptr, dtype=np.int64)
    q = row_softmax(ptr, np.asarray(logits, dtype=np.float32), tau)
    M = sp.csr_matrix((q, np.asarray(ids, dtype=np.int64), ptr), shape=(ptr.shape[0] - 1, num_labels))
    M.sum_duplicates()
    M.sort_indices()
    return M
