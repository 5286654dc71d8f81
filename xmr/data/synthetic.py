"""Synthetic XMC data with known Bayes class-probabilities.

The generator exists so that the statistics of distillation can be *checked* rather than argued
(Menon et al., *A statistical perspective on distillation*, ICML 2021: the variance reduction of
the Bayes-distilled risk and the bias–variance bound for an imperfect teacher): every quantity
that the theory talks about -- the Bayes class-probabilities p*(y|x), the Bayes risk, a
teacher's distance to p* -- is available exactly, and the same generator scales to millions of
labels for throughput benchmarks.

Model (DESIGN.md §3)::

    x        ~ N(0, I_d)                                   float32 [d]
    s(x)     = scale · (x U) Vᵀ + b                        float32 [L]
    p*(·|x)  = softmax(s(x))
    y        ~ p*(·|x)      (m labels per point: m draws without replacement)

with ``U ~ N(0, 1/d)`` of shape ``[d, r]``, ``V ~ N(0, 1/r)`` of shape ``[L, r]`` (so that
``(x U) v_l`` is roughly standard normal) and a Zipf-like label bias ``b_l = −zipf · log(l + 1)``,
which makes label frequencies long-tailed: label 0 is the most frequent, high ids are rare.
Because ``s`` is linear in ``x`` (``W* = scale · V Uᵀ``), a linear softmax model on ``x`` is
well specified, which keeps the bias–variance study clean.

Everything that touches all L labels is computed **chunk by chunk over labels** (and over rows),
with a streaming log-sum-exp, so ``L`` = 1M–3M works without an ``n × L`` allocation: beyond
the ``[L, r + 2]`` table and the outputs, one call holds ``O(block_elems + row_batch · L / chunk)``
floats. Each block is shifted by a Cauchy–Schwarz upper bound on its scores, so ``exp`` needs no
separate max pass (rows where that bound is too loose are recomputed with the exact max). Only
:meth:`SyntheticXMC.bayes_proba` and the dense form of :meth:`SyntheticXMC.logits` build
``[n, L]``, and they refuse above ``max_dense_labels``.

Label sampling is **exact**: inverse-CDF sampling with one uniform per draw, resolved first
over per-chunk masses and then inside the chosen chunk, so the drawn label does not depend on the
chunk size (up to floating-point rounding at CDF boundaries). Several labels per point are
drawn sequentially without replacement (each draw from p* renormalised over the labels not yet
drawn), the masses of the touched chunks being recomputed, not subtracted, so nothing cancels.
"""

from __future__ import annotations

import contextlib
import functools
import logging
from typing import Optional, Tuple

import numpy as np
import scipy.sparse as sp

from xmr.data.dataset import XMCDataset
from xmr.utils.validation import check_int, check_number

log = logging.getLogger(__name__)

__all__ = ["SyntheticXMC"]

_NEG_INF = -np.inf


def _lse_rows(s: np.ndarray) -> np.ndarray:
    """Row-wise log-sum-exp of a float array ``[n, c]`` as float64 ``[n]``; −inf for empty rows."""
    m = s.max(axis=1)
    finite = np.isfinite(m)
    m_safe = np.where(finite, m, 0.0).astype(s.dtype)
    tot = np.exp(s - m_safe[:, None]).sum(axis=1, dtype=np.float64)
    with np.errstate(divide="ignore"):
        out = m_safe.astype(np.float64) + np.log(tot)
    out[~finite] = _NEG_INF
    return out


def _inverse_cdf(weights: np.ndarray, target: np.ndarray) -> np.ndarray:
    """Index of the first entry whose cumulative weight reaches ``target`` (row-wise).

    ``weights`` float ``[n, c]`` (non-negative), ``target`` float64 ``[n]`` in ``(0, Σ weights]``.
    An entry with zero weight is never returned unless the whole row is zero.
    """
    cum = np.cumsum(weights, axis=1, dtype=np.float64)
    idx = (cum < target[:, None]).sum(axis=1)
    # Rounding can push the target past the row total: fall back to the last positive entry.
    over = idx >= weights.shape[1]
    if over.any():
        pos = weights[over] > 0
        last = weights.shape[1] - 1 - np.argmax(pos[:, ::-1], axis=1)
        idx[over] = last
    return idx


def _blas_single_thread(fn):
    """Run ``fn`` with BLAS limited to one thread, restored afterwards (threadpoolctl).

    The streaming loops multiply ``[rows, r + 2]`` by ``[r + 2, chunk]`` blocks: too small for
    BLAS threads to pay, and on a busy machine oversubscribed BLAS threads made them ~10×
    slower (measured on the project's shared 2-core CPU)."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            from threadpoolctl import threadpool_limits
            ctx = threadpool_limits(limits=1, user_api="blas")
        except ImportError:  # threadpoolctl comes with scikit-learn; without it, run as is
            ctx = contextlib.nullcontext()
        with ctx:
            return fn(*args, **kwargs)

    return wrapper


class SyntheticXMC:
    """A generator of XMC data with known Bayes class-probabilities p*(y|x).

    Parameters
    ----------
    num_labels : L, the number of labels (2 ≤ L; millions are fine).
    dim : d, the input dimension.
    rank : r, the rank of the score matrix ``scale · U Vᵀ``.
    zipf : γ ≥ 0 in the label bias ``b_l = −γ · log(l + 1)``; 0 gives no popularity skew.
    scale : multiplies the low-rank score; larger means peakier p* (lower Bayes error).
    seed : seeds U and V (and nothing else: samples take their own seed).
    chunk : labels per chunk in the streaming computations.
    block_elems : bound on the elements of one ``rows × chunk`` score block (memory knob; the
        default, 256k floats, keeps a block in cache).
    row_batch : rows processed together by the streaming methods (bounds the ``[rows, L/chunk]``
        per-chunk state).

    Attributes
    ----------
    U : float32 ``[d, r]``; V : float32 ``[L, r]``; b : float32 ``[L]`` (V and b are views of
    one ``[L, r + 2]`` table ``[V, b, 1]``, so that a single matmul yields ``s(x) − shift``).
    max_dense_labels : above this L, the dense ``[n, L]`` methods raise ``ValueError``.
    """

    max_dense_labels: int = 65_536

    def __init__(
        self,
        num_labels: int,
        dim: int,
        rank: int = 16,
        zipf: float = 1.0,
        scale: float = 3.0,
        seed: int = 0,
        chunk: int = 4096,
        block_elems: int = 1 << 18,
        row_batch: int = 4096,
    ):
        for name, val, lo in (("num_labels", num_labels, 2), ("dim", dim, 1), ("rank", rank, 1),
                              ("chunk", chunk, 1), ("block_elems", block_elems, 1),
                              ("row_batch", row_batch, 1)):
            check_int(name, val, lo)
        check_number("zipf", zipf, 0)
        check_number("scale", scale, 0)
        self.num_labels = int(num_labels)
        self.dim = int(dim)
        self.rank = int(rank)
        self.zipf = float(zipf)
        self.scale = float(scale)
        self.seed = int(seed)
        self.chunk = int(chunk)
        self.block_elems = int(block_elems)
        self.row_batch = int(row_batch)

        L, r = self.num_labels, self.rank
        rng = np.random.default_rng(np.random.SeedSequence([self.seed, 0x5EED]))
        self.U = (rng.standard_normal((self.dim, r), dtype=np.float32)
                  / np.float32(np.sqrt(self.dim)))
        # [V, b, 1]: row l of the table dotted with [scale·xU, 1, −shift] is s_l(x) − shift.
        self._Vb = np.empty((L, r + 2), dtype=np.float32)
        for c0 in range(0, L, 1 << 20):  # draw in pieces: no float64 temporary of size L·r
            c1 = min(c0 + (1 << 20), L)
            self._Vb[c0:c1, :r] = rng.standard_normal((c1 - c0, r), dtype=np.float32)
        self._Vb[:, :r] *= np.float32(1.0 / np.sqrt(r))
        self._Vb[:, r] = -self.zipf * np.log1p(np.arange(L, dtype=np.float64))
        self._Vb[:, r + 1] = 1.0
        self.V = self._Vb[:, :r]
        self.b = self._Vb[:, r]
        self._bounds_cache: dict = {}

    # ------------------------------------------------------------------ validation helpers
    def _check_X(self, X) -> np.ndarray:
        X = np.asarray(X)
        if X.ndim != 2 or X.shape[1] != self.dim or not np.issubdtype(X.dtype, np.number):
            raise ValueError(f"X: expected a float array of shape [n, {self.dim}], "
                             f"got {X.dtype} array of shape {X.shape}")
        return np.ascontiguousarray(X, dtype=np.float32)

    def _check_ids(self, ids, n: int) -> np.ndarray:
        ids = np.asarray(ids)
        if ids.ndim == 1:
            ids = ids[:, None]
        if ids.ndim != 2 or ids.shape[0] != n or not np.issubdtype(ids.dtype, np.integer):
            raise ValueError(f"ids: expected an integer array of shape [{n}, k], "
                             f"got {ids.dtype} array of shape {ids.shape}")
        if ids.size and (ids.min() < 0 or ids.max() >= self.num_labels):
            raise ValueError(f"ids: expected label ids in [0, {self.num_labels}), "
                             f"got values in [{ids.min()}, {ids.max()}]")
        return ids.astype(np.int64, copy=False)

    def _check_dense(self, what: str) -> None:
        if self.num_labels > self.max_dense_labels:
            raise ValueError(
                f"{what}: expected num_labels <= {self.max_dense_labels} for a dense [n, L] "
                f"result, got {self.num_labels}; use bayes_topk() or log_bayes(), which stream "
                f"over labels")

    # ------------------------------------------------------------------ streaming core
    def _xa(self, X: np.ndarray) -> np.ndarray:
        """``[scale · X U, 1, 0]`` float32 ``[n, r + 2]``: all the per-row state scores need.

        The last column holds ``−shift`` for the block being computed (0 = raw scores)."""
        n, r = X.shape[0], self.rank
        xa = np.empty((n, r + 2), dtype=np.float32)
        np.matmul(X, self.U, out=xa[:, :r])
        xa[:, :r] *= np.float32(self.scale)
        xa[:, r] = 1.0
        xa[:, r + 1] = 0.0
        return xa

    def _bounds(self, chunk: int) -> Tuple[np.ndarray, np.ndarray]:
        """Per chunk ``max_l ‖v_l‖`` and ``max_l b_l`` (float32 ``[C]`` each), cached.

        With ``‖scale·xU‖`` they bound every score of the chunk (Cauchy–Schwarz), a shift that
        makes ``exp`` safe without a separate max pass."""
        if chunk not in self._bounds_cache:
            vmax, bmax = [], []
            for c0 in range(0, self.num_labels, chunk):
                c1 = min(c0 + chunk, self.num_labels)
                vmax.append(np.sqrt(np.einsum("lr,lr->l", self.V[c0:c1], self.V[c0:c1]).max()))
                bmax.append(self.b[c0:c1].max())
            self._bounds_cache[chunk] = (np.asarray(vmax, np.float32) * np.float32(1 + 1e-5),
                                         np.asarray(bmax, np.float32))
        return self._bounds_cache[chunk]

    def _shifted(self, xa_rows: np.ndarray, c0: int, c1: int, shift, buf: np.ndarray
                 ) -> np.ndarray:
        """``s_l(x) − shift`` for the rows and labels ``[c0, c1)``: float32 ``[rows, c1 − c0]``,
        a view of ``buf`` (overwritten by the next call). ``xa_rows`` is modified in place."""
        rows, w = xa_rows.shape[0], c1 - c0
        xa_rows[:, self.rank + 1] = -np.asarray(shift, dtype=np.float32)
        out = buf[: rows * w].reshape(rows, w)
        np.matmul(xa_rows, self._Vb[c0:c1].T, out=out)
        return out

    def _buffer(self, chunk: int) -> Tuple[np.ndarray, int]:
        w = min(chunk, self.num_labels)
        rb = max(1, self.block_elems // w)
        return np.empty(rb * w, dtype=np.float32), rb

    def _lse_shifted(self, s: np.ndarray, bound: np.ndarray, xa_rows: np.ndarray, c0: int,
                     c1: int, buf: np.ndarray) -> np.ndarray:
        """``log Σ_{l∈[c0,c1)} exp s_l(x)`` float64 ``[rows]`` from ``s = scores − bound``
        (``s`` is a view of ``buf``, exponentiated in place). Rows whose sum underflows (bound
        far too loose) are recomputed with the exact row max."""
        np.exp(s, out=s)
        tot = s.sum(axis=1)
        with np.errstate(divide="ignore"):
            out = bound.astype(np.float64) + np.log(tot.astype(np.float64))
        bad = np.flatnonzero(~(tot > 1e-30))
        if bad.size:
            out[bad] = _lse_rows(self._shifted(xa_rows[bad], c0, c1, 0.0, buf))
        return out

    def _chunk_lse(self, xa: np.ndarray) -> np.ndarray:
        """Per-chunk log-masses ``M[i, c] = log Σ_{l∈chunk c} exp s_l(x_i)``: float64 ``[n, C]``."""
        n, r = xa.shape[0], self.rank
        vmax, bmax = self._bounds(self.chunk)
        M = np.empty((n, vmax.size), dtype=np.float64)
        buf, rb = self._buffer(self.chunk)
        for r0 in range(0, n, rb):
            rows = xa[r0:r0 + rb]
            norms = np.sqrt(np.einsum("nr,nr->n", rows[:, :r], rows[:, :r]))
            for c, c0 in enumerate(range(0, self.num_labels, self.chunk)):
                c1 = min(c0 + self.chunk, self.num_labels)
                bound = norms * vmax[c] + bmax[c]
                s = self._shifted(rows, c0, c1, bound, buf)
                M[r0:r0 + rb, c] = self._lse_shifted(s, bound, rows, c0, c1, buf)
        return M

    # ------------------------------------------------------------------ public API
    def sample_x(self, n: int, seed: int) -> np.ndarray:
        """Inputs ``x ~ N(0, I_d)``: float32 ``[n, d]``, reproducible from ``seed``."""
        rng = np.random.default_rng(np.random.SeedSequence([int(seed), 1]))
        return rng.standard_normal((int(n), self.dim), dtype=np.float32)

    def sample(self, n: int, seed: int, labels_per_point: int = 1
               ) -> Tuple[np.ndarray, sp.csr_matrix]:
        """Draw ``n`` points and their labels from p*.

        Returns ``(X float32 [n, d], Y csr_matrix float32 [n, L])``; each row of ``Y`` holds
        ``labels_per_point`` ones (distinct labels, drawn without replacement from p*).
        """
        X = self.sample_x(n, seed)
        ids = self.sample_labels(X, seed, labels_per_point)
        return X, self.ids_to_csr(ids)

    def ids_to_csr(self, ids: np.ndarray) -> sp.csr_matrix:
        """Distinct label ids int ``[n, m]`` per row → binary ``csr_matrix float32 [n, L]``."""
        ids = self._check_ids(ids, np.asarray(ids).shape[0])
        n, m = ids.shape
        return sp.csr_matrix((np.ones(n * m, dtype=np.float32), np.sort(ids, axis=1).ravel(),
                              np.arange(0, n * m + 1, m, dtype=np.int64)),
                             shape=(n, self.num_labels))

    @_blas_single_thread
    def sample_labels(self, X, seed: int, labels_per_point: int = 1) -> np.ndarray:
        """Labels for given inputs: int64 ``[n, m]``, ``m = labels_per_point`` distinct labels
        per row, in the order drawn (sequentially without replacement from p*(·|x)).

        Exact inverse-CDF sampling in two stages (per-chunk masses, then inside the chunk),
        streaming over labels: no ``[n, L]`` array is allocated. Reproducible from ``seed``.
        """
        X = self._check_X(X)
        m = labels_per_point
        check_int("labels_per_point", m, 1, self.num_labels)
        n = X.shape[0]
        rng = np.random.default_rng(np.random.SeedSequence([int(seed), 2]))
        u = 1.0 - rng.random((n, int(m)))  # in (0, 1]: a zero target could pick a zero-mass label
        ids = np.empty((n, int(m)), dtype=np.int64)
        for r0 in range(0, n, self.row_batch):
            r1 = min(r0 + self.row_batch, n)
            ids[r0:r1] = self._sample_batch(self._xa(X[r0:r1]), u[r0:r1])
        return ids

    def _sample_batch(self, xa: np.ndarray, u: np.ndarray) -> np.ndarray:
        n, m = u.shape
        M = self._chunk_lse(xa)  # float64 [n, C], updated as drawn labels are removed
        ids = np.full((n, m), -1, dtype=np.int64)
        buf, rb = self._buffer(self.chunk)
        ar = np.arange(n)
        for j in range(m):
            # Stage 1: the chunk holding the target u·(remaining mass), and the mass before it.
            w = np.exp(M - M.max(axis=1, keepdims=True))  # [n, C]
            cum = np.cumsum(w, axis=1)
            target = u[:, j] * cum[:, -1]
            cidx = _inverse_cdf(w, target)
            before = cum[ar, cidx] - w[ar, cidx]
            frac = np.clip((target - before) / w[ar, cidx], 1e-300, 1.0)  # of that chunk's mass
            # Stage 2: inside the chunk, rows grouped by chosen chunk.
            for c in np.unique(cidx):
                c0, c1 = int(c) * self.chunk, min((int(c) + 1) * self.chunk, self.num_labels)
                rows_all = np.flatnonzero(cidx == c)
                for s0 in range(0, rows_all.size, rb):
                    rows = rows_all[s0:s0 + rb]
                    s = self._shifted(xa[rows], c0, c1, M[rows, c], buf)  # log p(l | chunk c)
                    prev = ids[rows, :j]
                    rr, kk = np.nonzero((prev >= c0) & (prev < c1))
                    s[rr, prev[rr, kk] - c0] = _NEG_INF
                    p = np.exp(s)
                    li = _inverse_cdf(p, frac[rows] * p.sum(axis=1, dtype=np.float64))
                    ids[rows, j] = c0 + li
                    if j + 1 < m:  # the chunk's mass without the drawn label, in log space
                        s[np.arange(rows.size), li] = _NEG_INF
                        M[rows, c] += _lse_rows(s)
        return ids

    def logits(self, X, labels: Optional[np.ndarray] = None) -> np.ndarray:
        """Bayes scores ``s(x)`` (log p* up to a per-row constant).

        ``labels=None``: dense float32 ``[n, L]`` (only for ``L <= max_dense_labels``);
        ``labels`` int ``[n, k]`` (or ``[n]``): float32 ``[n, k]`` scores of those labels.
        """
        X = self._check_X(X)
        if labels is None:
            self._check_dense("logits(labels=None)")
            xa = self._xa(X)
            return xa @ self._Vb.T
        ids = self._check_ids(labels, X.shape[0])
        xu = self._xa(X)[:, : self.rank]
        s = np.einsum("nr,nkr->nk", xu, self.V[ids])
        s += self.b[ids]
        return s.astype(np.float32, copy=False)

    @_blas_single_thread
    def log_partition(self, X) -> np.ndarray:
        """``log Σ_l exp s_l(x)`` float64 ``[n]``, by a streaming log-sum-exp over label chunks."""
        X = self._check_X(X)
        out = np.empty(X.shape[0], dtype=np.float64)
        for r0 in range(0, X.shape[0], self.row_batch):
            r1 = min(r0 + self.row_batch, X.shape[0])
            out[r0:r1] = _lse_rows(self._chunk_lse(self._xa(X[r0:r1])))
        return out

    def log_bayes(self, X, ids) -> np.ndarray:
        """``log p*(ids | x)``: float32 ``[n, k]`` for label ids int ``[n, k]`` (or ``[n]``)."""
        X = self._check_X(X)
        ids = self._check_ids(ids, X.shape[0])
        s = self.logits(X, ids).astype(np.float64)
        return (s - self.log_partition(X)[:, None]).astype(np.float32)

    def bayes_proba(self, X) -> np.ndarray:
        """Dense p*(·|x): float32 ``[n, L]``, rows sum to 1. Only for ``L <= max_dense_labels``."""
        self._check_dense("bayes_proba")
        s = self.logits(X).astype(np.float64)
        s -= s.max(axis=1, keepdims=True)
        np.exp(s, out=s)
        s /= s.sum(axis=1, keepdims=True)
        return s.astype(np.float32)

    @_blas_single_thread
    def bayes_topk(self, X, k: int, chunk: Optional[int] = None
                   ) -> Tuple[np.ndarray, np.ndarray]:
        """The ``k`` most probable labels under p*, streaming over label chunks.

        Returns ``(probs float32 [n, k], ids int64 [n, k])`` sorted by decreasing probability
        (exact float ties in arbitrary order). ``chunk`` overrides the generator's chunk size.
        """
        X = self._check_X(X)
        check_int("k", k, 1, self.num_labels)
        chunk = check_int("chunk", self.chunk if chunk is None else chunk, 1)
        n, r, k, chunk = X.shape[0], self.rank, int(k), int(chunk)
        best_s = np.full((n, k), _NEG_INF, dtype=np.float32)
        best_i = np.full((n, k), -1, dtype=np.int64)
        lse = np.full(n, _NEG_INF, dtype=np.float64)
        vmax, bmax = self._bounds(chunk)
        buf, rb = self._buffer(chunk)
        for b0 in range(0, n, self.row_batch):
            xa = self._xa(X[b0:b0 + self.row_batch])
            for r0 in range(0, xa.shape[0], rb):
                rows = xa[r0:r0 + rb]
                g = slice(b0 + r0, b0 + r0 + rows.shape[0])  # global rows
                norms = np.sqrt(np.einsum("nr,nr->n", rows[:, :r], rows[:, :r]))
                for c, c0 in enumerate(range(0, self.num_labels, chunk)):
                    c1 = min(c0 + chunk, self.num_labels)
                    bound = norms * vmax[c] + bmax[c]
                    s = self._shifted(rows, c0, c1, bound, buf)  # s − bound
                    # Top-k: only rows whose block max beats their current k-th score.
                    upd = np.flatnonzero(s.max(axis=1) > best_s[g, -1] - bound)
                    if upd.size:
                        su, gi = s[upd], g.start + upd
                        kk = min(k, c1 - c0)
                        part = (np.argpartition(-su, kk - 1, axis=1)[:, :kk] if kk < c1 - c0
                                else np.broadcast_to(np.arange(c1 - c0), su.shape))
                        cand_s = np.concatenate(
                            [best_s[gi], np.take_along_axis(su, part, 1) + bound[upd, None]], 1)
                        cand_i = np.concatenate([best_i[gi], c0 + part], 1)
                        order = np.argsort(-cand_s, axis=1, kind="stable")[:, :k]
                        best_s[gi] = np.take_along_axis(cand_s, order, 1)
                        best_i[gi] = np.take_along_axis(cand_i, order, 1)
                    lse[g] = np.logaddexp(lse[g], self._lse_shifted(s, bound, rows, c0, c1, buf))
        probs = np.exp(best_s.astype(np.float64) - lse[:, None]).astype(np.float32)
        return probs, best_i

    def to_dataset(self, n_train: int, n_test: int, seed: int = 0,
                   labels_per_point: int = 1) -> XMCDataset:
        """A train/test :class:`XMCDataset` (dense X) drawn from this generator."""
        X_trn, Y_trn = self.sample(n_train, seed, labels_per_point)
        X_tst, Y_tst = self.sample(n_test, seed + 1_000_003, labels_per_point)
        return XMCDataset(
            name=f"synthetic-L{self.num_labels}-d{self.dim}", X_trn=X_trn, Y_trn=Y_trn,
            X_tst=X_tst, Y_tst=Y_tst,
            info={"generator": self.config(), "seed": seed, "labels_per_point": labels_per_point})

    def config(self) -> dict:
        """The constructor arguments, JSON-serialisable (rebuild with ``SyntheticXMC(**cfg)``)."""
        return {"num_labels": self.num_labels, "dim": self.dim, "rank": self.rank,
                "zipf": self.zipf, "scale": self.scale, "seed": self.seed,
                "chunk": self.chunk, "block_elems": self.block_elems}

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.config().items())
        return f"SyntheticXMC({args})"
