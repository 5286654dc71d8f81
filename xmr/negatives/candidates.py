"""Candidate assembly for a batch, with its sampled-logit correction (DESIGN.md §5).

The training loop scores a batch on one **shared** candidate set: the union of every row's
positives P, teacher top-K T, mined negatives H, and the batch's random negatives R. Then

    z = logits[:, cand_ids] / tau_s + logit_bias            # f32[B, C]
    loss_r = sum_j targets[r, j] * (logsumexp(z[r]) - z[r, j])

is the loss family of §5, with ``logit_bias = -b`` (sampled-logit offsets), masks on the cells a
row must not see, and ``targets = (1 - alpha) * uniform(P) + alpha * q^t``. See
:mod:`xmr.kernels.assembly` for the exact rules (priorities, duplicates collapsed into one column
with ``+log count``, empty rows) and :data:`MASK_VALUE` for the mask.

:func:`assemble_batch` builds that content in the **sparse layout**
(:class:`SparseCandidateBatch`), the one the training loss uses: a per-column bias ``col_bias``
plus the few row-specific exceptions (COO), and the targets as CSR over the columns. It never
allocates a ``B x C`` array (the dense arrays would be 2 x 32 MB at B = 1,024, C = 8,192);
:meth:`SparseCandidateBatch.to_dense` rebuilds ``logit_bias`` and ``targets`` exactly
(:class:`CandidateBatch`) for the reductions that autograd through them, and for tests::

    z = logits[:, cand_ids] / tau_s + col_bias          # then z[ex_rows, ex_cols] = s + ex_vals
    loss_r = LSE(z[r]) * sum(t_vals[r]) - sum_k t_vals[k] * z[r, t_cols[k]]

Public API: :func:`assemble_batch` → :class:`SparseCandidateBatch`; :data:`MASK_VALUE`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional, Tuple

import numpy as np

from xmr.utils.validation import check_int

__all__ = ["CandidateBatch", "SparseCandidateBatch", "assemble_batch", "MASK_VALUE"]

#: value of masked cells in ``logit_bias``, **set** (not added): finite, so a fully masked row
#: gives a finite log-sum-exp and no NaN; large enough that ``exp(s' - max) == 0`` in fp32 for any
#: realistic logits (|s'| < 1e8), while sums of thousands of masked cells, or multiplying them by
#: 1/tau up to 1e3, stay far from fp32 overflow (3.4e38); exactly representable in fp32. Add the
#: bias to logits in fp32 (fp16 would turn it into -inf).
MASK_VALUE = np.float32(-1e9)


@dataclass
class CandidateBatch:
    """A batch's shared candidate set (C columns for B rows) in the dense layout: what
    :meth:`SparseCandidateBatch.to_dense` returns.

    cand_ids    i64[C]     label id of each column (first-appearance order: P, T, H, R)
    logit_bias  f32[B, C]  added to ``logits / tau_s``: ``-b`` and masks (:data:`MASK_VALUE`)
    targets     f32[B, C]  the target distribution a(x) on the columns; rows sum to 1, or to
                           0 for a row with neither positives nor teacher mass
    is_sampled  bool[C]    the column's id was drawn by the random sampler (R)
    pos_cols    i64[nnz_P] column of each positive entry (aligned with the input ``pos_ids``)
    """

    cand_ids: np.ndarray
    logit_bias: np.ndarray
    targets: np.ndarray
    is_sampled: np.ndarray
    pos_cols: np.ndarray

    @property
    def num_candidates(self) -> int:
        return int(self.cand_ids.shape[0])


@dataclass
class SparseCandidateBatch:
    """A batch's shared candidate set in the sparse layout (no ``B x C`` array).

    cand_ids    i64[C]        label id of each column (as :class:`CandidateBatch`)
    col_bias    f32[C]        per-column bias: ``-b_j`` on sampled columns; elsewhere 0 if
                              ``share_columns``, else :data:`MASK_VALUE` (the column is hidden
                              by default and each row's own cells are exceptions: a per-row
                              visibility list of |P ∪ T ∪ H| cells instead of ~B·C masked ones)
    ex_rows, ex_cols i64[m], ex_vals f32[m]
                              cells whose bias differs from ``col_bias`` (COO, sorted by
                              (row, col), no duplicates): absorbed random draws of a row's own
                              P/T/H ids, uncorrected positives, and the visibility list above
    t_indptr    i64[B+1]      targets as CSR over columns (``t_`` = targets here, not teacher):
    t_cols      i64[nnz]      columns ascending within a row, nonzero values only;
    t_vals      f32[nnz]      each row sums to 1, or is empty (a row without positives or
                              teacher mass contributes no loss)
    is_sampled  bool[C], pos_cols i64[nnz_P]: as :class:`CandidateBatch`

    ``logit_bias[r, c] = ex_vals[k]`` for ``(r, c) = (ex_rows[k], ex_cols[k])``, else
    ``col_bias[c]``; :meth:`to_dense` rebuilds the dense layout bit for bit.
    """

    cand_ids: np.ndarray
    col_bias: np.ndarray
    ex_rows: np.ndarray
    ex_cols: np.ndarray
    ex_vals: np.ndarray
    t_indptr: np.ndarray
    t_cols: np.ndarray
    t_vals: np.ndarray
    is_sampled: np.ndarray
    pos_cols: np.ndarray

    @property
    def num_candidates(self) -> int:
        return int(self.cand_ids.shape[0])

    @property
    def num_rows(self) -> int:
        return int(self.t_indptr.shape[0] - 1)

    def target_rows(self) -> np.ndarray:
        """Row of each target entry, ``i64[nnz]`` (the CSR expanded to COO)."""
        return np.repeat(np.arange(self.num_rows, dtype=np.int64), np.diff(self.t_indptr))

    def target_bias(self) -> np.ndarray:
        """``logit_bias`` at each target entry, ``f32[nnz]`` (an exception's value where the
        target cell is one, else ``col_bias``): a binary search of the sorted exception keys."""
        C = self.num_candidates
        out = self.col_bias[self.t_cols]
        if self.ex_rows.size and self.t_cols.size:
            ex_key = self.ex_rows * C + self.ex_cols
            t_key = self.target_rows() * C + self.t_cols
            k = np.minimum(np.searchsorted(ex_key, t_key), ex_key.size - 1)
            hit = ex_key[k] == t_key
            out[hit] = self.ex_vals[k[hit]]
        return out

    def to_dense(self) -> CandidateBatch:
        """The same batch in the dense layout (``logit_bias``, ``targets`` f32[B, C], bit for
        bit the arrays the rules of :mod:`xmr.kernels.assembly` define)."""
        from xmr.kernels.assembly import sparse_to_dense

        bias, targets = sparse_to_dense(self.num_rows, self.col_bias, self.ex_rows, self.ex_cols,
                                        self.ex_vals, self.t_indptr, self.t_cols, self.t_vals)
        return CandidateBatch(cand_ids=self.cand_ids, logit_bias=bias, targets=targets,
                              is_sampled=self.is_sampled, pos_cols=self.pos_cols)


# ------------------------------------------------------------------------------------------------
# validation helpers
# ------------------------------------------------------------------------------------------------

def _ids(name: str, a, num_labels: int) -> np.ndarray:
    a = np.asarray(a)
    if a.ndim != 1:
        raise ValueError(f"{name}: expected a 1-d array, got shape {a.shape}")
    if a.size and not np.issubdtype(a.dtype, np.integer):
        raise ValueError(f"{name}: expected integer ids, got dtype {a.dtype}")
    a = np.ascontiguousarray(a, dtype=np.int64)
    if a.size:
        lo, hi = int(a.min()), int(a.max())
        if lo < 0 or hi >= num_labels:
            bad = lo if lo < 0 else hi
            raise ValueError(f"{name}: expected ids in [0, {num_labels}), got {bad}")
    return a


def _indptr(name: str, a, num_rows: Optional[int], nnz: int) -> np.ndarray:
    a = np.asarray(a)
    if a.ndim != 1 or a.size < 1:
        raise ValueError(f"{name}: expected a 1-d array of length B+1, got shape {a.shape}")
    if not np.issubdtype(a.dtype, np.integer):
        raise ValueError(f"{name}: expected an integer array, got dtype {a.dtype}")
    a = np.ascontiguousarray(a, dtype=np.int64)
    if num_rows is not None and a.size != num_rows + 1:
        raise ValueError(f"{name}: expected length B+1={num_rows + 1}, got {a.size}")
    if a[0] != 0:
        raise ValueError(f"{name}: expected {name}[0] == 0, got {int(a[0])}")
    d = np.diff(a)
    if d.size and d.min() < 0:
        i = int(np.argmax(d < 0))
        raise ValueError(f"{name}: expected non-decreasing values, got {name}[{i}]={int(a[i])} "
                         f"> {name}[{i + 1}]={int(a[i + 1])}")
    if a[-1] != nnz:
        raise ValueError(f"{name}: expected {name}[-1] == number of ids ({nnz}), "
                         f"got {int(a[-1])}")
    return a


def _finite_float(name: str, a, n: int, dtype) -> np.ndarray:
    a = np.asarray(a)
    if a.ndim != 1 or a.shape[0] != n:
        raise ValueError(f"{name}: expected shape ({n},), got {a.shape}")
    a = np.ascontiguousarray(a, dtype=dtype)
    if a.size and not np.all(np.isfinite(a)):
        raise ValueError(f"{name}: expected finite values, got {a[~np.isfinite(a)][0]!r}")
    return a


# ------------------------------------------------------------------------------------------------
# public API
# ------------------------------------------------------------------------------------------------

def assemble_batch(pos_indptr, pos_ids, *, teacher: Optional[Tuple] = None,
                   mined: Optional[Tuple] = None, sampled: Optional[Tuple] = None,
                   alpha: float = 0.0, tau_t: float = 1.0, correct_positives: bool = False,
                   share_columns: bool = True, teacher_candidates: bool = True,
                   num_labels: int) -> SparseCandidateBatch:
    """Build the shared candidate set of a batch, its logit bias and its targets (sparse layout;
    ``.to_dense()`` for the ``B x C`` arrays).

    pos_indptr i64[B+1], pos_ids i64[nnz]: the positives of each row (CSR).
    teacher: ``(indptr i64[B+1], ids i64[k], logits f32[k])`` teacher top-K with raw logits.
    mined: ``(indptr i64[B+1], ids i64[h])`` hard negatives.
    sampled: ``(ids i64[m], log_expected_count f[m])`` random negatives shared by the batch, as
        returned by a :class:`~xmr.negatives.samplers.Sampler` (duplicates allowed: collapsed
        into one column with ``logit_bias = log count_j - log E[count_j]``).
    alpha: teacher weight in ``a = (1 - alpha) y + alpha q^t`` (0 = no teacher), in [0, 1].
    tau_t: teacher temperature (> 0).
    correct_positives: apply the sampled offset to a positive column that was also drawn.
    share_columns: rows see the other rows' P/T/H columns as extra (uncorrected) negatives;
        if False each row sees only its own P ∪ T ∪ H and R (others masked).
    teacher_candidates: add the teacher ids to the candidates (T ⊂ A); if False they only
        set targets on columns that are candidates anyway.
    num_labels: L; every id must lie in [0, L).

    Raises ValueError naming the argument, what was expected and what came.
    """
    check_int("num_labels", num_labels, 1)
    if not (0.0 <= float(alpha) <= 1.0):
        raise ValueError(f"alpha: expected a value in [0, 1], got {alpha!r}")
    if not (math.isfinite(float(tau_t)) and float(tau_t) > 0.0):
        raise ValueError(f"tau_t: expected a finite value > 0, got {tau_t!r}")
    pos_ids = _ids("pos_ids", pos_ids, num_labels)
    pos_indptr = _indptr("pos_indptr", pos_indptr, None, pos_ids.size)
    B = pos_indptr.size - 1
    empty_i = np.zeros(0, dtype=np.int64)
    empty_ptr = np.zeros(B + 1, dtype=np.int64)

    if teacher is None:
        t_indptr, t_ids, t_logits = empty_ptr, empty_i, np.zeros(0, dtype=np.float32)
    else:
        if len(teacher) != 3:
            raise ValueError(f"teacher: expected (indptr, ids, logits), got {len(teacher)} arrays")
        t_ids = _ids("teacher ids", teacher[1], num_labels)
        t_indptr = _indptr("teacher indptr", teacher[0], B, t_ids.size)
        t_logits = _finite_float("teacher logits", teacher[2], t_ids.size, np.float32)
    if mined is None:
        h_indptr, h_ids = empty_ptr, empty_i
    else:
        if len(mined) != 2:
            raise ValueError(f"mined: expected (indptr, ids), got {len(mined)} arrays")
        h_ids = _ids("mined ids", mined[1], num_labels)
        h_indptr = _indptr("mined indptr", mined[0], B, h_ids.size)
    if sampled is None:
        r_ids, r_lec = empty_i, np.zeros(0, dtype=np.float64)
    else:
        if len(sampled) != 2:
            raise ValueError(f"sampled: expected (ids, log_expected_count), got {len(sampled)} "
                             f"arrays")
        r_ids = _ids("sampled ids", sampled[0], num_labels)
        r_lec = _finite_float("sampled log_expected_count", sampled[1], r_ids.size, np.float64)

    from xmr.kernels.assembly import assemble_candidates_sparse

    (cand, is_s, col_bias, ex_rows, ex_cols, ex_vals, tg_ptr, tg_cols, tg_vals, pos_cols,
     _, _) = assemble_candidates_sparse(
        B, pos_indptr, pos_ids, t_indptr, t_ids, t_logits, h_indptr, h_ids, r_ids, r_lec,
        float(alpha), float(tau_t), bool(correct_positives), bool(share_columns),
        bool(teacher_candidates), MASK_VALUE)
    return SparseCandidateBatch(cand_ids=cand, col_bias=col_bias, ex_rows=ex_rows,
                                ex_cols=ex_cols, ex_vals=ex_vals, t_indptr=tg_ptr,
                                t_cols=tg_cols, t_vals=tg_vals, is_sampled=is_s,
                                pos_cols=pos_cols)
