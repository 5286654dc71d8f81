"""Ranking metrics of extreme multi-label classification, with pyxclib's conventions.

All metrics score top-k predictions ``ids int64[n, K]`` (best first, ``-1`` = no prediction,
never a hit) against a ground-truth label matrix ``Y_true [n, L]`` (scipy sparse; a label is
positive where its stored value is nonzero). Each ``*_at_k`` function returns a ``float64[K]``
array of the metric at k = 1..K, so P@1, P@3, P@5 are entries 0, 2, 4. With ``P_i`` the
positives of row i, ``h_ir = 1`` if the r-th prediction of row i is in ``P_i``, and
``d_r = 1 / log2(r + 1)`` (r = 1..k):

- ``P@k   = mean_i  Σ_{r≤k} h_ir / k``   (missing predictions count as misses)
- ``R@k   = mean_i  Σ_{r≤k} h_ir / |P_i|``  (rows with no positives contribute 0)
- ``nDCG@k = mean_i  Σ_{r≤k} h_ir d_r / Σ_{r≤min(k,|P_i|)} d_r``  (rows with no positives
  contribute 0 and still count in the mean, as in pyxclib and napkinXC)
- with inverse propensities ``w_l = 1/p_l`` (Jain et al. 2016, Section 5; see
  :mod:`xmr.eval.propensity`) and ``b_ir`` the r-th largest ``w_l`` over ``l ∈ P_i`` (0 past
  ``|P_i|``), the propensity-scored metrics are **normalised by the best achievable value**, a
  ratio of sums over the whole test set (as pyxclib and XMC papers report them)::

      PSP@k    = Σ_i Σ_{r≤k} h_ir w_{ir}             / Σ_i Σ_{r≤k} b_ir
      PSnDCG@k = Σ_i Σ_{r≤k} h_ir w_{ir} d_r / I_ik   / Σ_i Σ_{r≤k} b_ir d_r / I_ik

  where ``I_ik = Σ_{r≤min(k,|P_i|)} d_r`` (rows with no positives contribute 0 to both sums).
  When the denominator is 0 (no positives anywhere) the value is 0.

Conventions compared (checked against napkinXC 0.7.2 ``napkinxc.metrics`` in the tests, and
against pyxclib's ``xclib.evaluation.xc_metrics`` source):

- PSP@k and PSnDCG@k are normalised exactly as in pyxclib and napkinXC (``normalize=True``):
  the same ratio of sums, PSnDCG with each row first divided by its unit ideal DCG ``I_ik``.
  P@k, nDCG@k and R@k agree with both to 1e-12 on random data with empty rows and padding.
- Ground truth is binarised here (stored nonzero = positive). pyxclib multiplies hits by the
  stored values; napkinXC counts every stored index, explicit zeros included.
- A repeated predicted id raises here; napkinXC counts every copy (P@k can exceed 1).
- Ties in a score matrix go to the lower label id here; napkinXC uses an unstable argsort and
  pyxclib does not specify the order.
- With no positives in the whole test set, PSP@k / PSnDCG@k are 0 here; pyxclib gives NaN.
- ``inv_prop`` must have length L here; napkinXC silently skips positives beyond its length.

Predicted ids must be distinct within a row (a repeated id raises ``ValueError``: counting it
twice would let P@k exceed 1). Everything is vectorised over rows (memory O(n·K + nnz(Y))), so
n = 1M, K = 5, L = 3M needs no dense ``n × L`` array.
"""

from __future__ import annotations

import numbers

import numpy as np
import scipy.sparse as sp

from xmr.utils.validation import check_int

__all__ = [
    "topk_from_scores",
    "precision_at_k",
    "recall_at_k",
    "ndcg_at_k",
    "psprecision_at_k",
    "psndcg_at_k",
    "remove_pairs",
    "evaluate",
]

_ROW_CHUNK_ELEMS = 1 << 24  # dense top-k: rows per call so that a chunk holds ~16M scores


# ----------------------------------------------------------------------------------------------
# validation and adaptation at the boundary


def _as_labels(Y_true) -> sp.csr_matrix:
    """Canonical binary CSR view of ``Y_true`` (sorted, no duplicates, no stored zeros).

    Copies only when needed; the caller's matrix is never modified.
    """
    if not sp.issparse(Y_true):
        raise TypeError(f"Y_true: expected a scipy.sparse matrix [n, L], got "
                        f"{type(Y_true).__name__}")
    Y = sp.csr_matrix(Y_true)  # no copy for a csr_matrix
    if Y.ndim != 2:
        raise ValueError(f"Y_true: expected a 2-D matrix [n, L], got shape {Y.shape}")
    if not Y.has_canonical_format or (Y.nnz and not np.all(Y.data != 0)):
        Y = Y.copy()
        Y.sum_duplicates()
        Y.eliminate_zeros()
    return Y


def _check_ids(ids, n: int, L: int, name: str = "ids") -> np.ndarray:
    ids = np.asarray(ids)
    if ids.dtype.kind not in "iu":
        raise TypeError(f"{name}: expected an integer array [n, k] of label ids, got dtype "
                        f"{ids.dtype} (convert scores with topk_from_scores)")
    if ids.ndim != 2:
        raise ValueError(f"{name}: expected a 2-D array [n, k], got shape {ids.shape}")
    if ids.shape[0] != n:
        raise ValueError(f"{name}: expected {n} rows (one per row of Y_true), got {ids.shape[0]}")
    ids = ids.astype(np.int64, copy=False)
    bad = (ids < -1) | (ids >= L)
    if bad.any():
        r, c = np.argwhere(bad)[0]
        raise ValueError(f"{name}: expected label ids in [-1, {L}), got {ids[r, c]} in row {r}")
    if ids.shape[1] > 1:
        s = np.sort(ids, axis=1)
        dup = (s[:, 1:] == s[:, :-1]) & (s[:, 1:] >= 0)
        if dup.any():
            r, c = np.argwhere(dup)[0]
            raise ValueError(f"{name}: expected distinct label ids per row, got label "
                             f"{s[r, c]} twice in row {r}")
    return ids


def _check_k(k, K: int) -> int:
    if k is None:
        k = K
    if not (isinstance(k, numbers.Integral) and not isinstance(k, bool) and 1 <= k <= K):
        raise ValueError(f"k: expected an integer in [1, {K}] (the number of predicted "
                         f"columns), got {k!r}")
    return int(k)


def _check_inv_prop(inv_prop, L: int) -> np.ndarray:
    w = np.asarray(inv_prop)
    if w.ndim != 1 or w.shape[0] != L or w.dtype.kind not in "iuf":
        raise ValueError(f"inv_prop: expected a float array of shape ({L},), got "
                         f"{w.dtype} array of shape {w.shape}")
    w = w.astype(np.float64, copy=False)
    if not np.all(np.isfinite(w)):
        raise ValueError("inv_prop: expected finite values, got a NaN or infinity")
    return w


# ----------------------------------------------------------------------------------------------
# top-k from scores


def topk_from_scores(scores, k: int):
    """Top-``k`` labels of each row of a score matrix: ``(scores f32[n, k], ids i64[n, k])``.

    ``scores`` is a dense ``[n, L]`` array (every label is a candidate) or a scipy sparse
    matrix (only *stored* entries are candidates; a stored 0 is a prediction with score 0).
    Rows are sorted by decreasing score; **ties are broken by the lower label id**, so the
    result is deterministic. Rows with fewer than ``k`` candidates are padded with id ``-1``
    and score ``-inf``. NaN scores are rejected. Runs a Numba kernel
    (:mod:`xmr.kernels.metrics`) row by row, without sorting whole rows.
    """
    from xmr.kernels.metrics import topk_csr, topk_dense

    k = check_int("k", k, 1)
    if sp.issparse(scores):
        S = sp.csr_matrix(scores)
        if not S.has_canonical_format:
            S = S.copy()
            S.sum_duplicates()
        data = S.data if S.data.dtype in (np.float32, np.float64) else S.data.astype(np.float64)
        if np.isnan(data).any():
            raise ValueError("scores: expected no NaN, got NaN scores")
        n = S.shape[0]
        out_s = np.empty((n, k), dtype=data.dtype)
        out_i = np.empty((n, k), dtype=np.int64)
        topk_csr(S.indptr, S.indices, data, k, out_s, out_i)
        return out_s.astype(np.float32, copy=False), out_i

    S = np.asarray(scores)
    if S.ndim != 2:
        raise ValueError(f"scores: expected a 2-D array [n, L], got shape {S.shape}")
    if S.dtype.kind not in "iuf" or S.dtype == np.float16:
        if S.dtype.kind not in "iufb":
            raise TypeError(f"scores: expected a real-valued array, got dtype {S.dtype}")
        S = S.astype(np.float32 if S.dtype == np.float16 else np.float64)
    elif S.dtype.kind in "iu":
        S = S.astype(np.float64)
    n, L = S.shape
    out_s = np.empty((n, k), dtype=S.dtype)
    out_i = np.empty((n, k), dtype=np.int64)
    step = max(1, _ROW_CHUNK_ELEMS // max(L, 1))
    for lo in range(0, n, step):
        chunk = np.ascontiguousarray(S[lo:lo + step])
        if np.isnan(chunk).any():
            raise ValueError("scores: expected no NaN, got NaN scores")
        topk_dense(chunk, k, out_s[lo:lo + step], out_i[lo:lo + step])
    return out_s.astype(np.float32, copy=False), out_i


# ----------------------------------------------------------------------------------------------
# shared per-row quantities


class _Ranked:
    """Per-row quantities every metric needs, computed once.

    hits bool[n, K] (prediction r of row i is a positive), npos int64[n] (|P_i|), and the
    discounts d float64[K] with d_r = 1/log2(r + 1), r = 1..K.
    """

    def __init__(self, Y: sp.csr_matrix, ids: np.ndarray):
        n, L = Y.shape
        self.Y, self.ids = Y, ids
        self.K = ids.shape[1]
        self.npos = np.diff(Y.indptr).astype(np.int64)
        self.disc = 1.0 / np.log2(np.arange(2, self.K + 2, dtype=np.float64))
        # membership test through one sorted key per positive: key = row·L + label
        if n and L and n > (np.iinfo(np.int64).max // 2) // L:
            raise ValueError(f"Y_true: shape {Y.shape} too large for int64 row·L keys")
        rows = np.repeat(np.arange(n, dtype=np.int64), self.npos)
        ykey = rows * L + Y.indices  # sorted: canonical CSR
        pkey = np.arange(n, dtype=np.int64)[:, None] * L + ids
        if ykey.size:
            pos = np.searchsorted(ykey, pkey)
            np.minimum(pos, ykey.size - 1, out=pos)
            self.hits = (ykey[pos] == pkey) & (ids >= 0)
        else:
            self.hits = np.zeros(ids.shape, dtype=bool)

    def ideal_dcg(self, k: int) -> np.ndarray:
        """I_ik = Σ_{r ≤ min(k, |P_i|)} d_r, float64[n] (0 for rows without positives)."""
        cum = np.concatenate([[0.0], np.cumsum(self.disc[:k])])
        return cum[np.minimum(self.npos, k)]

    def best_gains(self, w: np.ndarray) -> np.ndarray:
        """b float64[n, K]: the K largest ``w_l`` over a row's positives, descending, 0-padded."""
        Y, K = self.Y, self.K
        n = Y.shape[0]
        v = w[Y.indices]
        rows = np.repeat(np.arange(n, dtype=np.int64), self.npos)
        order = np.lexsort((-v, rows))  # by row, then decreasing weight
        rank = np.arange(order.size, dtype=np.int64) - Y.indptr[rows]  # rows[order] == rows
        keep = rank < K
        best = np.zeros((n, K), dtype=np.float64)
        best[rows[keep], rank[keep]] = v[order][keep]
        return best


def _prepare(Y_true, ids, k):
    Y = _as_labels(Y_true)
    ids = _check_ids(ids, Y.shape[0], Y.shape[1])
    k = _check_k(k, ids.shape[1])
    return _Ranked(Y, ids[:, :k])


def _safe_div(num, den):
    num, den = np.asarray(num, dtype=np.float64), np.asarray(den, dtype=np.float64)
    out = np.zeros(np.broadcast(num, den).shape)
    np.divide(num, den, out=out, where=den > 0)
    return out


def _precision(R: _Ranked) -> np.ndarray:
    if R.hits.shape[0] == 0:
        return np.zeros(R.K)
    return np.cumsum(R.hits, axis=1).mean(axis=0) / np.arange(1, R.K + 1)


def _recall(R: _Ranked) -> np.ndarray:
    if R.hits.shape[0] == 0:
        return np.zeros(R.K)
    return _safe_div(np.cumsum(R.hits, axis=1), R.npos[:, None]).mean(axis=0)


def _ndcg(R: _Ranked) -> np.ndarray:
    n = R.hits.shape[0]
    if n == 0:
        return np.zeros(R.K)
    dcg = np.cumsum(R.hits * R.disc, axis=1)  # [n, K]
    out = np.empty(R.K)
    for k in range(1, R.K + 1):
        out[k - 1] = _safe_div(dcg[:, k - 1], R.ideal_dcg(k)).sum() / n
    return out


def _psprecision(R: _Ranked, w: np.ndarray) -> np.ndarray:
    gain = np.where(R.hits, w[np.maximum(R.ids, 0)], 0.0)
    num = np.cumsum(gain, axis=1).sum(axis=0)
    den = np.cumsum(R.best_gains(w), axis=1).sum(axis=0)
    return _safe_div(num, den)


def _psndcg(R: _Ranked, w: np.ndarray) -> np.ndarray:
    gain = np.where(R.hits, w[np.maximum(R.ids, 0)], 0.0)
    dcg = np.cumsum(gain * R.disc, axis=1)
    best = np.cumsum(R.best_gains(w) * R.disc, axis=1)
    num, den = np.empty(R.K), np.empty(R.K)
    for k in range(1, R.K + 1):
        ideal = R.ideal_dcg(k)
        num[k - 1] = _safe_div(dcg[:, k - 1], ideal).sum()
        den[k - 1] = _safe_div(best[:, k - 1], ideal).sum()
    return _safe_div(num, den)


# ----------------------------------------------------------------------------------------------
# public metrics


def precision_at_k(Y_true, ids, k=None) -> np.ndarray:
    """P@1..k, ``float64[k]``: mean over rows of (hits in the top k) / k. ``k`` defaults to
    ``ids.shape[1]``."""
    return _precision(_prepare(Y_true, ids, k))


def recall_at_k(Y_true, ids, k=None) -> np.ndarray:
    """R@1..k, ``float64[k]``: mean over rows of hits / |P_i| (rows without positives: 0)."""
    return _recall(_prepare(Y_true, ids, k))


def ndcg_at_k(Y_true, ids, k=None) -> np.ndarray:
    """nDCG@1..k, ``float64[k]``: DCG with 1/log2(rank+1) over the ideal DCG of
    min(k, |P_i|) positives, averaged over all rows (rows without positives contribute 0)."""
    return _ndcg(_prepare(Y_true, ids, k))


def psprecision_at_k(Y_true, ids, inv_prop, k=None) -> np.ndarray:
    """PSP@1..k, ``float64[k]``, normalised by the best achievable PSP@k over the test set
    (a ratio of sums; see the module docstring). ``inv_prop`` is ``float[L]`` (1/p_l)."""
    R = _prepare(Y_true, ids, k)
    return _psprecision(R, _check_inv_prop(inv_prop, R.Y.shape[1]))


def psndcg_at_k(Y_true, ids, inv_prop, k=None) -> np.ndarray:
    """PSnDCG@1..k, ``float64[k]``, normalised by the best achievable PSnDCG@k over the test
    set (a ratio of sums of per-row nDCG-normalised values; see the module docstring)."""
    R = _prepare(Y_true, ids, k)
    return _psndcg(R, _check_inv_prop(inv_prop, R.Y.shape[1]))


# ----------------------------------------------------------------------------------------------
# filtering and the one-call report


def _check_pairs(filter_pairs, n: int, L: int) -> np.ndarray:
    P = np.asarray(filter_pairs)
    if P.size == 0:
        return np.zeros(0, dtype=np.int64)
    if P.dtype.kind not in "iu" or P.ndim != 2 or P.shape[1] != 2:
        raise ValueError(f"filter_pairs: expected an integer array [m, 2] of (row, label) "
                         f"pairs, got {P.dtype} array of shape {P.shape}")
    P = P.astype(np.int64, copy=False)
    bad = (P[:, 0] < 0) | (P[:, 0] >= n) | (P[:, 1] < 0) | (P[:, 1] >= L)
    if bad.any():
        r = int(np.argmax(bad))
        raise ValueError(f"filter_pairs: expected rows in [0, {n}) and labels in [0, {L}), "
                         f"got pair {tuple(int(x) for x in P[r])} at index {r}")
    return np.unique(P[:, 0] * L + P[:, 1])


def remove_pairs(Y_true, ids, filter_pairs):
    """Drop (row, label) pairs from both the ground truth and the predictions.

    This is the LF datasets' protocol for reciprocal pairs (a point whose own label appears in
    its targets). Returns ``(Y csr [n, L], ids int64[n, k])``: the pairs are removed from Y,
    and a predicted pair is dropped from its row, the rest shifted up, the end padded with
    ``-1``. The inputs are not modified.
    """
    Y = _as_labels(Y_true)
    n, L = Y.shape
    ids = _check_ids(ids, n, L)
    keys = _check_pairs(filter_pairs, n, L)
    if keys.size == 0:
        return Y, ids
    rows = np.repeat(np.arange(n, dtype=np.int64), np.diff(Y.indptr))
    keep = ~np.isin(rows * L + Y.indices, keys)
    if not keep.all():
        counts = np.bincount(rows[keep], minlength=n)
        indptr = np.concatenate([[0], np.cumsum(counts)]).astype(Y.indptr.dtype)
        Y = sp.csr_matrix((Y.data[keep], Y.indices[keep], indptr), shape=(n, L))
    pkey = np.arange(n, dtype=np.int64)[:, None] * L + ids
    drop = np.isin(pkey, keys) | (ids < 0)
    if drop.any():
        order = np.argsort(drop, axis=1, kind="stable")  # kept entries first, in order
        ids = np.where(np.take_along_axis(drop, order, axis=1), -1,
                       np.take_along_axis(ids, order, axis=1))
    return Y, ids


def _drop_from_scores(scores, keys: np.ndarray, L: int):
    """Scores with the filtered pairs removed (sparse: entries dropped; dense: set to -inf)."""
    if sp.issparse(scores):
        S = sp.coo_matrix(scores)
        keep = ~np.isin(S.row.astype(np.int64) * L + S.col, keys)
        return sp.csr_matrix((S.data[keep], (S.row[keep], S.col[keep])), shape=S.shape)
    S = np.array(scores, dtype=np.result_type(np.asarray(scores).dtype, np.float32))
    S[keys // L, keys % L] = -np.inf
    return S


def evaluate(Y_true, predictions, ks=(1, 3, 5), inv_prop=None, filter_pairs=None) -> dict:
    """All metrics at the cut-offs ``ks`` in one pass: ``{"P@1": ..., "nDCG@3": ..., ...}``.

    Parameters
    ----------
    Y_true
        Ground truth, scipy sparse ``[n, L]``.
    predictions
        Top-k ids ``int64[n, K]`` (``-1`` padding, K ≥ max(ks)), or a score matrix (dense
        float ``[n, L]`` or scipy sparse), turned into ids by :func:`topk_from_scores`.
    ks
        Cut-offs; keys are produced for P, nDCG, R and, with ``inv_prop``, PSP and PSnDCG.
    inv_prop
        Inverse propensities ``float[L]`` (:func:`xmr.eval.propensity.inverse_propensity` on
        the *training* labels); enables the ``PSP@k`` / ``PSnDCG@k`` keys.
    filter_pairs
        ``int[m, 2]`` (row, label) pairs removed from the ground truth and the predictions
        before scoring. With a score matrix they are removed before the top-k, so the lists
        stay full; with ids the dropped entries leave ``-1`` at the end of the row.

    Returns a dict of Python floats, keys grouped by metric then by k.
    """
    ks = tuple(ks)
    if not ks or not all(isinstance(k, numbers.Integral) and not isinstance(k, bool) and k >= 1
                         for k in ks):
        raise ValueError(f"ks: expected a non-empty sequence of integers >= 1, got {ks!r}")
    K = int(max(ks))
    Y = _as_labels(Y_true)
    n, L = Y.shape
    is_ids = not sp.issparse(predictions) and np.asarray(predictions).dtype.kind in "iu"
    if not is_ids:
        shape = predictions.shape if sp.issparse(predictions) else np.shape(predictions)
        if len(shape) != 2 or shape[0] != n or shape[1] != L:
            raise ValueError(f"predictions: expected ids [n, k] or scores of shape ({n}, {L}), "
                             f"got shape {shape}")
        if filter_pairs is not None:
            keys = _check_pairs(filter_pairs, n, L)
            if keys.size:
                predictions = _drop_from_scores(predictions, keys, L)
        _, predictions = topk_from_scores(predictions, K)
    ids = _check_ids(predictions, n, L, name="predictions")
    if ids.shape[1] < K:
        raise ValueError(f"predictions: expected at least {K} columns for ks={ks}, got "
                         f"{ids.shape[1]}")
    if filter_pairs is not None:
        Y, ids = remove_pairs(Y, ids, filter_pairs)
    R = _Ranked(Y, ids[:, :K])
    table = {"P": _precision(R), "nDCG": _ndcg(R), "R": _recall(R)}
    if inv_prop is not None:
        w = _check_inv_prop(inv_prop, L)
        table["PSP"] = _psprecision(R, w)
        table["PSnDCG"] = _psndcg(R, w)
    return {f"{name}@{k}": float(vals[k - 1]) for name, vals in table.items() for k in ks}
