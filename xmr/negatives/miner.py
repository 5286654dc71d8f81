"""Hard-negative miner: the student's top-scored wrong labels, from a periodically rebuilt index.

For each query embedding φ(x) the miner searches a :class:`~xmr.index.LabelIndex`
built over the label table W for the top labels by ⟨φ(x), w_j⟩, drops the row's known
positives, optionally skips the highest-ranked remaining labels (likely unlabelled positives,
"false negatives"), keeps the next ``k`` and optionally samples ``num_negatives`` of them
uniformly. These are the H(x) candidates of the loss family (DESIGN.md §5), with offset b = 0.

Rebuilding the index every step would cost more than the step itself, so the index is
refreshed every ``refresh_every`` steps and is *stale* in between: the negatives come from an
older W. This is the asynchronous-refresh trade-off of ANCE (Xiong et al., 2021, *Approximate
Nearest Neighbor Negative Contrastive Learning for Dense Text Retrieval*, §4). The miner keeps
its own timings (:meth:`HardNegativeMiner.stats`) so the training loop can report the share of a
step spent mining.
"""

from __future__ import annotations

import logging
import time
from typing import Callable, Dict, Optional, Tuple, Union

import numpy as np

from xmr.index.exact import _as_matrix
from xmr.index.label_index import LabelIndex
from xmr.utils.validation import check_int

log = logging.getLogger(__name__)


def _check_csr(B: int, num_labels: int, indptr, ids) -> Tuple[np.ndarray, np.ndarray]:
    """Validate the positives of a batch as CSR (``indptr i64[B+1]``, ``ids i64[nnz]``)."""
    indptr, ids = np.asarray(indptr), np.asarray(ids)
    if indptr.ndim != 1 or indptr.shape[0] != B + 1:
        raise ValueError(f"pos_indptr: expected shape ({B + 1},) for {B} queries, "
                         f"got {indptr.shape}")
    if ids.ndim != 1:
        raise ValueError(f"pos_ids: expected a 1-D array, got shape {ids.shape}")
    for name, a in (("pos_indptr", indptr), ("pos_ids", ids)):
        if a.size and not np.issubdtype(a.dtype, np.integer):
            raise TypeError(f"{name}: expected an integer array, got dtype {a.dtype}")
    indptr, ids = indptr.astype(np.int64, copy=False), ids.astype(np.int64, copy=False)
    if indptr[0] != 0 or indptr[-1] != ids.shape[0] or np.any(np.diff(indptr) < 0):
        raise ValueError(f"pos_indptr: expected non-decreasing offsets from 0 to "
                         f"len(pos_ids)={ids.shape[0]}, got {indptr[0]}..{indptr[-1]}"
                         f"{' (decreasing)' if np.any(np.diff(indptr) < 0) else ''}")
    if ids.size and (ids.min() < 0 or ids.max() >= num_labels):
        bad = ids[(ids < 0) | (ids >= num_labels)][0]
        raise ValueError(f"pos_ids: expected label ids in [0, {num_labels}), got {bad}")
    return indptr, ids


class HardNegativeMiner:
    """Mine hard negatives for a batch from a label index refreshed every ``refresh_every`` steps.

    Parameters
    ----------
    num_labels: L, the number of rows of the label table.
    k: shortlist size: after removing positives and skipping ``skip_top`` ranks, the next ``k``
        labels by score are the shortlist.
    refresh_every: rebuild the index every this many training steps (staleness knob).
    skip_top: number of top-ranked non-positive labels to skip (likely false negatives).
    num_negatives: sample this many from the shortlist, uniformly without replacement (seeded);
        ``None`` keeps the whole shortlist.
    factory, use_gpu, index_params: how the :class:`LabelIndex` is built and searched.
    mips_to_l2: build the index with the MIPS→L2 reduction (``LabelIndex(..., mips=True)``,
        :mod:`xmr.index.mips`): the same ranking, and approximate indexes keep their recall on
        trained tables whose row norms vary (default True).
    seed: seeds the sampling and the index's training.

    After ``refresh`` the attribute ``index_`` holds the current index and
    ``last_refresh_step_`` the step it was built at (``None`` for a manual refresh).
    """

    def __init__(self, num_labels: int, k: int = 50, refresh_every: int = 1000,
                 skip_top: int = 0, num_negatives: Optional[int] = None,
                 factory: str = "HNSW32", use_gpu: Union[str, bool] = "auto", seed: int = 0,
                 index_params: Optional[Dict] = None, mips_to_l2: bool = True):
        self.num_labels = check_int("num_labels", num_labels, 1)
        self.k = check_int("k", k, 1)
        self.refresh_every = check_int("refresh_every", refresh_every, 1)
        self.skip_top = check_int("skip_top", skip_top, 0)
        self.num_negatives = check_int("num_negatives", num_negatives, 1, allow_none=True)
        self.factory = factory
        self.use_gpu = use_gpu
        self.seed = int(seed)
        self.index_params = dict(index_params or {})
        self.mips_to_l2 = bool(mips_to_l2)
        self.index_: Optional[LabelIndex] = None
        self.last_refresh_step_: Optional[int] = None
        self._rng = np.random.default_rng(self.seed)
        self._stats = {"refreshes": 0, "refresh_time_s": 0.0, "searches": 0,
                       "search_time_s": 0.0, "queries": 0, "mine_time_s": 0.0}

    # ---- index ------------------------------------------------------------------------------

    def refresh(self, W, step: Optional[int] = None) -> "HardNegativeMiner":
        """Rebuild the index over the label table ``W f32[num_labels, d]`` (timed)."""
        W = np.asarray(W)
        if W.ndim != 2 or W.shape[0] != self.num_labels:
            raise ValueError(f"W: expected shape ({self.num_labels}, d), got {W.shape}")
        t0 = time.perf_counter()
        self.index_ = LabelIndex.build(W, factory=self.factory, use_gpu=self.use_gpu,
                                       seed=self.seed, mips=self.mips_to_l2, **self.index_params)
        dt = time.perf_counter() - t0
        self._stats["refreshes"] += 1
        self._stats["refresh_time_s"] += dt
        self.last_refresh_step_ = step
        log.info("miner: rebuilt %s index over %d labels in %.2fs (step %s)", self.factory,
                 self.num_labels, dt, step)
        return self

    def needs_refresh(self, step: int) -> bool:
        """True when no index exists yet or ``refresh_every`` steps passed since the last one."""
        if self.index_ is None:
            return True
        if self.last_refresh_step_ is None:
            return False
        return step - self.last_refresh_step_ >= self.refresh_every

    def maybe_refresh(self, step: int, get_W: Callable[[], np.ndarray]) -> bool:
        """Refresh from ``get_W()`` if :meth:`needs_refresh`; returns whether it did.

        ``get_W`` is only called when a refresh happens (copying W off the model costs time).
        """
        step = check_int("step", step, 0)
        if self.index_ is not None and self.last_refresh_step_ is None:
            self.last_refresh_step_ = step  # built by a manual refresh(W): count from here
            return False
        if not self.needs_refresh(step):
            return False
        self.refresh(get_W(), step=step)
        return True

    # ---- mining -----------------------------------------------------------------------------

    def mine(self, Q, pos_indptr, pos_ids) -> Tuple[np.ndarray, np.ndarray]:
        """Hard negatives of each query: ``Q f32[B, d]`` and positives as CSR → negatives as CSR.

        Returns ``(neg_indptr i64[B+1], neg_ids i64[nnz'])``. Row b's negatives are listed in
        decreasing score order; none is a positive of row b, there are no duplicates, and a row
        has at most ``k`` (or ``num_negatives``) of them (fewer only when the index returns
        fewer labels than asked, e.g. L is small).
        """
        if self.index_ is None:
            raise RuntimeError("HardNegativeMiner.mine: no index yet; call refresh(W) or "
                               "maybe_refresh(step, get_W) first")
        t0 = time.perf_counter()
        Q = _as_matrix("Q", Q, dim=self.index_.dim)
        B = Q.shape[0]
        indptr, ids = _check_csr(B, self.num_labels, pos_indptr, pos_ids)
        max_pos = int(np.diff(indptr).max()) if B else 0
        # Search deep enough that k labels survive removing positives and skipping ranks.
        depth = min(self.num_labels, self.k + self.skip_top + max_pos)
        ts = time.perf_counter()
        if B:
            _, cand = self.index_.search(Q, depth)  # i64[B, depth], -1 padded
        else:
            cand = np.empty((0, depth), dtype=np.int64)
        self._stats["search_time_s"] += time.perf_counter() - ts
        self._stats["searches"] += 1
        self._stats["queries"] += B

        # Drop positives: compare (row, label) keys of candidates and positives.
        L = np.int64(self.num_labels)
        rows = np.arange(B, dtype=np.int64)[:, None]
        cand_keys = rows * L + cand
        pos_keys = np.repeat(np.arange(B, dtype=np.int64), np.diff(indptr)) * L + ids
        keep = (cand >= 0) & ~np.isin(cand_keys, pos_keys)
        # Rank among the kept ones (1-based); skip the first skip_top, keep the next k.
        rank = np.cumsum(keep, axis=1)
        keep &= (rank > self.skip_top) & (rank <= self.skip_top + self.k)

        if self.num_negatives is not None:
            # Uniform sample without replacement per row: the num_negatives smallest random keys.
            u = np.where(keep, self._rng.random(keep.shape), np.inf)
            order = np.argsort(u, axis=1, kind="stable")
            pick = np.zeros_like(keep)
            np.put_along_axis(pick, order[:, :self.num_negatives], True, axis=1)
            keep &= pick
        counts = keep.sum(axis=1)
        neg_indptr = np.zeros(B + 1, dtype=np.int64)
        np.cumsum(counts, out=neg_indptr[1:])
        neg_ids = cand[keep].astype(np.int64, copy=False)  # row-major: rank order within rows
        self._stats["mine_time_s"] += time.perf_counter() - t0
        return neg_indptr, neg_ids

    def state_dict(self) -> Dict:
        """JSON-able resume state (the index itself is saved with ``index_.save``)."""
        return {"last_refresh_step": self.last_refresh_step_,
                "rng": self._rng.bit_generator.state}

    def load_state_dict(self, state: Dict) -> "HardNegativeMiner":
        """Restore :meth:`state_dict` so a resumed run samples the same negatives."""
        self.last_refresh_step_ = state["last_refresh_step"]
        self._rng.bit_generator.state = state["rng"]
        return self

    def stats(self) -> Dict[str, float]:
        """Cumulative counters: refreshes, refresh_time_s, searches, search_time_s, queries,
        mine_time_s (search plus filtering), and last_refresh_step."""
        out = dict(self._stats)
        out["last_refresh_step"] = self.last_refresh_step_
        return out

    def __repr__(self) -> str:
        return (f"HardNegativeMiner(num_labels={self.num_labels}, k={self.k}, "
                f"refresh_every={self.refresh_every}, skip_top={self.skip_top}, "
                f"num_negatives={self.num_negatives}, factory={self.factory!r})")
