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

Asynchronous refresh (``async_refresh=True``)
---------------------------------------------
A refresh due at step ``t`` (``t`` = the first step, then every ``refresh_every`` steps, as in
the synchronous mode) takes a *snapshot* (a copy) of W and starts building the new index in a
background thread; training keeps mining from the index in use. **The rule:** the index built
from the snapshot of step ``t`` is used from step ``t + swap_lag`` on (``1 <= swap_lag <=
refresh_every``); at that step :meth:`~HardNegativeMiner.maybe_refresh` *waits* for the build
if it is not done. Which index mines a step is thus a function of the step number alone, never
of thread timing: an asynchronous miner mines exactly what a synchronous one mines when that one
is refreshed at step ``t + swap_lag`` with the table of step ``t``. The first index (there is no
older one to mine from) is built synchronously. Staleness (the steps between the snapshot of the
index in use and the step it mines for) is ``0 … refresh_every − 1`` synchronously and
``swap_lag … refresh_every + swap_lag − 1`` asynchronously; :meth:`~HardNegativeMiner.stats`
reports it. The worker thread runs FAISS with ``build_threads`` OpenMP threads (None: the count
in effect in the thread that took the snapshot; OpenMP thread counts are per thread, so the
worker sets its own, see :func:`xmr.utils.threads.omp_threads`).

Resume: :meth:`~HardNegativeMiner.save` waits for a pending build and writes the *built* index
(``pending_index/``) with its snapshot step, next to the index in use; :meth:`~HardNegativeMiner.load`
restores both, so a resumed run swaps the same index in at the same step (the built index, not
the snapshot, is saved because an HNSW build with several threads is not bit-reproducible).

Sharded mining (``process_group`` of world > 1)
-----------------------------------------------
Each rank owns the labels ``[lo, hi)`` of :func:`xmr.distributed.label_range` (those of its
:class:`~xmr.models.ShardedLabelTable`) and indexes **only them**: ``refresh`` / ``get_W`` take
the local rows ``f32[hi − lo, d]``, so index memory per rank is about L/world. :meth:`mine` is
then collective: the ranks' queries and positives are all-gathered (the global batch, ranks in
order), every rank searches its shard for all of them, the per-rank top lists ``[N, depth]`` are
all-gathered and merged into the global top-``depth`` (:func:`xmr.index.exact.merge_topk`),
and positives, ``skip_top``, ``k`` and the sampling are applied to the *global* batch with the
same random stream on every rank; each rank returns its own rows. The result equals what a
single-process miner over the full table returns for the concatenated batch (exactly, for
``Flat``). Under the MIPS reduction all shards use the global largest row norm (one all-reduce
per refresh). Every rank must call ``refresh``/``maybe_refresh``/``mine`` at the same steps.
"""

from __future__ import annotations

import logging
import threading
import time
from pathlib import Path
from typing import Callable, Dict, Optional, Tuple, Union

import numpy as np

from xmr.index.exact import PAD_ID, PAD_SCORE, _as_matrix, as_numpy, merge_topk
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


#: ``factory="auto"``: an index over fewer labels than this (one rank's shard) is ``HNSW32``,
#: a larger one IVF with scalar-quantised lists (:func:`auto_index`).
AUTO_IVF_MIN_LABELS = 100_000


def auto_index(num_labels: int) -> Tuple[str, Dict]:
    """The miner's index for ``factory="auto"``: ``(factory, index_params)`` for a table of
    ``num_labels`` rows, chosen by ``benchmarks.micro.bench_mining_index`` (recall@K of the
    mined shortlist >= 0.9 at the least search time for batches of 256 queries, d = 256).

    Below :data:`AUTO_IVF_MIN_LABELS`: ``HNSW32`` (cheap to build at that size, the best recall
    per search time). From there on: ``IVF{nlist},SQ8`` with ``nlist = min(1024, 4·sqrt(L))``
    and ``nprobe = 2``: at L = 1M its lists are 1 byte per coordinate (4x less memory to scan
    than ``IVF,Flat`` at the same recall) and it builds in seconds where ``HNSW32`` takes
    minutes; 4096 lists cost more in the coarse search than they save for 256 queries.
    """
    from xmr.index.label_index import default_nlist

    if num_labels < AUTO_IVF_MIN_LABELS:
        return "HNSW32", {}
    return "IVF{nlist},SQ8", {"nlist": min(1024, default_nlist(num_labels)), "nprobe": 2}


class _PendingBuild:
    """An index being built in a background thread from the snapshot of step ``step``."""

    def __init__(self, step: int):
        self.step = int(step)
        self.thread: Optional[threading.Thread] = None
        self.index: Optional[LabelIndex] = None
        self.error: Optional[BaseException] = None
        self.build_s = 0.0

    def result(self) -> LabelIndex:
        """Wait for the build (a no-op once done) and return the index (or raise its error)."""
        if self.thread is not None:
            self.thread.join()
            self.thread = None
        if self.error is not None:
            raise RuntimeError(f"HardNegativeMiner: the background index build from the "
                               f"snapshot of step {self.step} failed: {self.error}") from self.error
        return self.index


class HardNegativeMiner:
    """Mine hard negatives for a batch from a label index refreshed every ``refresh_every`` steps.

    Parameters
    ----------
    num_labels: L, the number of labels (of the full table, also when sharded over ranks).
    k: shortlist size: after removing positives and skipping ``skip_top`` ranks, the next ``k``
        labels by score are the shortlist.
    refresh_every: rebuild the index every this many training steps (staleness knob).
    skip_top: number of top-ranked non-positive labels to skip (likely false negatives).
    num_negatives: sample this many from the shortlist, uniformly without replacement (seeded);
        ``None`` keeps the whole shortlist.
    factory, use_gpu, index_params: how the :class:`LabelIndex` is built and searched;
        ``factory="auto"`` (the default) picks the index by the size of the table indexed
        (:func:`auto_index`), ``index_params`` then override its parameters.
    mips_to_l2: build the index with the MIPS→L2 reduction (``LabelIndex(..., mips=True)``,
        :mod:`xmr.index.mips`): the same ranking, and approximate indexes keep their recall on
        trained tables whose row norms vary (default True).
    seed: seeds the sampling and the index's training.
    async_refresh: build refreshed indexes in a background thread from a snapshot of W and swap
        them in ``swap_lag`` steps after the snapshot (module docstring: the rule). Default off.
    swap_lag: steps between a snapshot and the first step that mines from its index
        (``1 <= swap_lag <= refresh_every``; used with ``async_refresh``).
    build_threads: FAISS OpenMP threads of the background build (None: the caller's count at
        the snapshot).
    process_group: a ``torch.distributed`` group of world > 1: sharded mining (module
        docstring); each rank indexes its labels ``[lo, hi)`` only and :meth:`mine` is
        collective. None: one process, the whole table.
    dedup_queries: search each distinct query row of a batch once (rows repeat when a batch
        holds the same input twice, e.g. duplicated documents or oversampled rows) and give
        every copy its results; the negatives are the same either way, only the search is
        shorter. :meth:`stats` counts the rows searched (``queries_searched``). Default True.

    After ``refresh`` the attribute ``index_`` holds the current index (over ``[lo, hi)`` when
    sharded), ``last_refresh_step_`` the step of the last refresh or snapshot (``None`` for a
    manual refresh) and ``index_step_`` the step whose table the index in use was built from.
    """

    def __init__(self, num_labels: int, k: int = 50, refresh_every: int = 1000,
                 skip_top: int = 0, num_negatives: Optional[int] = None,
                 factory: str = "auto", use_gpu: Union[str, bool] = "auto", seed: int = 0,
                 index_params: Optional[Dict] = None, mips_to_l2: bool = True,
                 async_refresh: bool = False, swap_lag: int = 1,
                 build_threads: Optional[int] = None, process_group=None,
                 dedup_queries: bool = True):
        from xmr.distributed import Comm, label_range

        self.num_labels = check_int("num_labels", num_labels, 1)
        self.k = check_int("k", k, 1)
        self.refresh_every = check_int("refresh_every", refresh_every, 1)
        self.skip_top = check_int("skip_top", skip_top, 0)
        self.num_negatives = check_int("num_negatives", num_negatives, 1, allow_none=True)
        self.use_gpu = use_gpu
        self.seed = int(seed)
        self.index_params = dict(index_params or {})
        self.factory = factory  # resolved below once the rank's label range is known
        self.mips_to_l2 = bool(mips_to_l2)
        self.async_refresh = bool(async_refresh)
        self.swap_lag = check_int("swap_lag", swap_lag, 1)
        if self.async_refresh and self.swap_lag > self.refresh_every:
            raise ValueError(f"swap_lag: expected at most refresh_every={self.refresh_every} "
                             f"(a snapshot is swapped in before the next one is taken), got "
                             f"{self.swap_lag}")
        self.build_threads = check_int("build_threads", build_threads, 1, allow_none=True)
        self.dedup_queries = bool(dedup_queries)
        self.comm = Comm(process_group)
        if self.num_labels < self.comm.world:
            raise ValueError(f"num_labels: expected at least one label per rank "
                             f"({self.comm.world} ranks), got {self.num_labels}")
        self.lo, self.hi = label_range(self.num_labels, self.comm.rank, self.comm.world)
        if factory == "auto":
            # every rank resolves the same way (shard sizes differ by at most one label)
            n = -(-self.num_labels // self.comm.world)
            self.factory, auto_params = auto_index(n)
            self.index_params = {**auto_params, **self.index_params}
        self.index_: Optional[LabelIndex] = None
        self.last_refresh_step_: Optional[int] = None
        self.index_step_: Optional[int] = None
        self.current_step_: Optional[int] = None
        self._pending: Optional[_PendingBuild] = None
        self._rng = np.random.default_rng(self.seed)
        self._stats = {"refreshes": 0, "refresh_time_s": 0.0, "searches": 0,
                       "search_time_s": 0.0, "queries": 0, "queries_searched": 0,
                       "mine_time_s": 0.0,
                       "async_builds": 0, "swap_wait_s": 0.0, "snapshot_time_s": 0.0,
                       "staleness_last": None, "staleness_max": None, "staleness_sum": 0,
                       "staleness_count": 0}

    @property
    def sharded(self) -> bool:
        """True with a process group of world > 1 (each rank indexes ``[lo, hi)``)."""
        return self.comm.world > 1

    # ---- index ------------------------------------------------------------------------------

    def _check_table(self, W) -> np.ndarray:
        W = as_numpy(W)  # a (bf16, CUDA) torch tensor too
        n = self.hi - self.lo
        if W.ndim != 2 or W.shape[0] != n:
            what = f" (this rank's labels [{self.lo}, {self.hi}))" if self.sharded else ""
            raise ValueError(f"W: expected shape ({n}, d){what}, got {W.shape}")
        return W

    def _global_max_norm(self, W: np.ndarray) -> Optional[float]:
        """M of the MIPS reduction shared by all shards (one all-reduce when sharded)."""
        if not (self.mips_to_l2 and self.sharded):
            return None
        import torch

        from xmr.index.mips import max_row_norm

        t = torch.tensor([max_row_norm(W)], dtype=torch.float64, device=self.comm._device())
        return float(self.comm.all_reduce_(t, "max").item())

    def _build(self, W: np.ndarray, max_norm: Optional[float]) -> LabelIndex:
        """The index over ``W`` (this rank's rows when sharded, with its label offset)."""
        if not self.sharded:
            return LabelIndex.build(W, factory=self.factory, use_gpu=self.use_gpu,
                                    seed=self.seed, mips=self.mips_to_l2, **self.index_params)
        index = LabelIndex(W.shape[1], factory=self.factory, use_gpu=self.use_gpu,
                           seed=self.seed, mips=self.mips_to_l2, max_norm=max_norm,
                           **self.index_params)
        return index.add_with_offset(W, self.lo)

    def refresh(self, W, step: Optional[int] = None) -> "HardNegativeMiner":
        """Rebuild the index over the label table ``W f32[num_labels, d]`` now (timed).

        Sharded: ``W`` is this rank's rows ``f32[hi − lo, d]`` (collective under MIPS). A
        pending background build is waited for and dropped (this index replaces it)."""
        W = self._check_table(W)
        if self._pending is not None:
            try:
                self._pending.result()
            finally:
                self._pending = None
        max_norm = self._global_max_norm(W)
        t0 = time.perf_counter()
        self.index_ = self._build(W, max_norm)
        dt = time.perf_counter() - t0
        self._stats["refreshes"] += 1
        self._stats["refresh_time_s"] += dt
        self.last_refresh_step_ = step
        self.index_step_ = step
        log.info("miner: rebuilt %s index over %d labels in %.2fs (step %s)", self.factory,
                 self.hi - self.lo, dt, step)
        return self

    def _start_build(self, W, step: int) -> None:
        """Snapshot ``W`` (a copy) and build its index in a background thread."""
        t0 = time.perf_counter()
        W = np.array(self._check_table(W), dtype=np.float32, order="C", copy=True)
        max_norm = self._global_max_norm(W)  # collectives stay on the calling thread
        threads = self.build_threads
        if threads is None:
            from xmr.utils.optional import faiss

            threads = int(faiss().omp_get_max_threads())
        pending = _PendingBuild(step)

        def work():
            from xmr.utils.threads import omp_threads

            t1 = time.perf_counter()
            try:
                with omp_threads(threads):
                    pending.index = self._build(W, max_norm)
            except BaseException as exc:  # re-raised on the training thread at the swap
                pending.error = exc
            pending.build_s = time.perf_counter() - t1

        pending.thread = threading.Thread(target=work, name=f"xmr-miner-build-{step}",
                                          daemon=True)
        pending.thread.start()
        self._pending = pending
        self.last_refresh_step_ = step
        self._stats["async_builds"] += 1
        self._stats["snapshot_time_s"] += time.perf_counter() - t0

    def _swap(self) -> None:
        """Wait for the pending build if needed and make its index the one in use."""
        pending = self._pending
        t0 = time.perf_counter()
        try:
            index = pending.result()
        finally:
            self._pending = None
        self._stats["swap_wait_s"] += time.perf_counter() - t0
        self.index_ = index
        self.index_step_ = pending.step
        self._stats["refreshes"] += 1
        self._stats["refresh_time_s"] += pending.build_s
        log.info("miner: swapped in the %s index of step %d (built in %.2fs in the background)",
                 self.factory, pending.step, pending.build_s)

    def wait(self) -> "HardNegativeMiner":
        """Wait for a pending background build to finish (it is still swapped in at its step,
        not here); e.g. before timing something else on the machine."""
        if self._pending is not None:
            t0 = time.perf_counter()
            self._pending.result()
            self._stats["swap_wait_s"] += time.perf_counter() - t0
        return self

    @property
    def pending_step_(self) -> Optional[int]:
        """The snapshot step of the index being built in the background (None: none)."""
        return None if self._pending is None else self._pending.step

    def needs_refresh(self, step: int) -> bool:
        """True when no index exists yet or ``refresh_every`` steps passed since the last
        refresh (or, asynchronously, the last snapshot)."""
        if self.index_ is None and self._pending is None:
            return True
        if self.last_refresh_step_ is None:
            return False
        return step - self.last_refresh_step_ >= self.refresh_every

    def maybe_refresh(self, step: int, get_W: Callable[[], np.ndarray]) -> bool:
        """Bring the index up to date for mining at ``step``; returns whether a refresh
        started here (a synchronous rebuild, or an asynchronous snapshot).

        Synchronous: rebuild from ``get_W()`` if :meth:`needs_refresh`. Asynchronous: first
        swap in the pending index if ``step >= its snapshot step + swap_lag`` (waiting for
        its build), then, if a refresh is due, snapshot ``get_W()`` and start the build; the
        first index is built synchronously. ``get_W`` is only called when a refresh happens
        (copying W off the model costs time).
        """
        step = check_int("step", step, 0)
        self.current_step_ = step
        if self.index_ is not None and self.last_refresh_step_ is None and self._pending is None:
            self.last_refresh_step_ = step  # built by a manual refresh(W): count from here
            self.index_step_ = step
            return False
        if self._pending is not None and step >= self._pending.step + self.swap_lag:
            self._swap()
        if not self.needs_refresh(step):
            return False
        if self.async_refresh and self.index_ is not None:
            self._start_build(get_W(), step)
        else:
            self.refresh(get_W(), step=step)
        return True

    # ---- mining -----------------------------------------------------------------------------

    def _search(self, Q: np.ndarray, depth: int) -> np.ndarray:
        """``i64[n, depth]`` candidates (-1 padded) of the index in use."""
        if Q.shape[0] == 0:
            return np.empty((0, depth), dtype=np.int64)
        return self.index_.search(Q, depth)[1]

    def _search_dedup(self, Q: np.ndarray, depth: int, search) -> np.ndarray:
        """``search(Q, depth)`` with each distinct row of ``Q`` searched once (``dedup_queries``)."""
        if self.dedup_queries and Q.shape[0] > 1:
            # rows compared bit for bit (a view as bytes: -0.0 and 0.0 stay distinct)
            keys = np.ascontiguousarray(Q).view(np.dtype((np.void, Q.dtype.itemsize * Q.shape[1])))
            _, first, inverse = np.unique(keys.ravel(), return_index=True, return_inverse=True)
            if first.shape[0] < Q.shape[0]:
                self._stats["queries_searched"] += first.shape[0]
                return search(Q[first], depth)[inverse.ravel()]
        self._stats["queries_searched"] += Q.shape[0]
        return search(Q, depth)

    def _search_sharded(self, Q: np.ndarray, depth: int) -> np.ndarray:
        """Search this rank's shard for all ranks' queries and merge the ranks' top lists."""
        import torch
        import torch.distributed as dist

        n = Q.shape[0]  # the global batch: the same on every rank
        if n == 0:
            return np.empty((0, depth), dtype=np.int64)
        s = np.full((n, depth), PAD_SCORE, dtype=np.float32)
        i = np.full((n, depth), PAD_ID, dtype=np.int64)
        kk = min(depth, self.hi - self.lo)
        s[:, :kk], i[:, :kk] = self.index_.search(Q, kk)
        dev = self.comm._device()
        outs = []
        for a in (s, i):
            t = torch.from_numpy(a).to(dev)
            parts = [torch.empty_like(t) for _ in range(self.comm.world)]
            dist.all_gather(parts, t, group=self.comm.group)
            outs.append(torch.stack(parts).cpu().numpy())
        return merge_topk(outs[0], outs[1], depth)[1]

    def _gather(self, a: np.ndarray, sizes) -> np.ndarray:
        """Concatenate every rank's ``a`` along dim 0 (ranks in order; lengths ``sizes``)."""
        import torch
        import torch.distributed as dist

        t = torch.from_numpy(np.ascontiguousarray(a)).to(self.comm._device())
        cap = max(max(sizes), 1)  # no zero-size messages
        padded = t.new_zeros((cap,) + tuple(t.shape[1:]))
        padded[: t.shape[0]] = t
        parts = [torch.empty_like(padded) for _ in range(self.comm.world)]
        dist.all_gather(parts, padded, group=self.comm.group)
        return torch.cat([p[:m] for p, m in zip(parts, sizes)]).cpu().numpy()

    def mine(self, Q, pos_indptr, pos_ids) -> Tuple[np.ndarray, np.ndarray]:
        """Hard negatives of each query: ``Q f32[B, d]`` and positives as CSR → negatives as CSR.

        Returns ``(neg_indptr i64[B+1], neg_ids i64[nnz'])``. Row b's negatives are listed in
        decreasing score order; none is a positive of row b, there are no duplicates, and a row
        has at most ``k`` (or ``num_negatives``) of them (fewer only when the index returns
        fewer labels than asked, e.g. L is small). Sharded (world > 1): collective; ``Q`` and
        the positives are this rank's rows, the result is theirs, and it is what one process
        over the full table returns for the ranks' rows concatenated in rank order.
        """
        if self.index_ is None:
            raise RuntimeError("HardNegativeMiner.mine: no index yet; call refresh(W) or "
                               "maybe_refresh(step, get_W) first")
        t0 = time.perf_counter()
        if self.sharded:
            err = None
            try:
                Q = _as_matrix("Q", Q, dim=self.index_.dim)
                indptr, ids = _check_csr(Q.shape[0], self.num_labels, pos_indptr, pos_ids)
            except (ValueError, TypeError) as exc:
                err = exc
            self.comm.agree_on_error(err, "HardNegativeMiner.mine")
            B = Q.shape[0]
            dev = self.comm._device()
            sizes = self.comm.sizes(B, dev)
            row0 = sum(sizes[: self.comm.rank])
            Q = self._gather(Q, sizes)
            counts = self._gather(np.diff(indptr), sizes)
            ids = self._gather(ids, self.comm.sizes(ids.shape[0], dev))
            indptr = np.zeros(Q.shape[0] + 1, dtype=np.int64)
            np.cumsum(counts, out=indptr[1:])
        else:
            Q = _as_matrix("Q", Q, dim=self.index_.dim)
            B = Q.shape[0]
            row0 = 0
            indptr, ids = _check_csr(B, self.num_labels, pos_indptr, pos_ids)
        N = Q.shape[0]
        max_pos = int(np.diff(indptr).max()) if N else 0
        # Search deep enough that k labels survive removing positives and skipping ranks.
        depth = min(self.num_labels, self.k + self.skip_top + max_pos)
        ts = time.perf_counter()
        cand = self._search_dedup(Q, depth, self._search_sharded if self.sharded else self._search)
        self._stats["search_time_s"] += time.perf_counter() - ts
        self._stats["searches"] += 1
        self._stats["queries"] += B
        if self.current_step_ is not None and self.index_step_ is not None:
            st = self._stats
            lag = self.current_step_ - self.index_step_
            st["staleness_last"] = lag
            st["staleness_max"] = lag if st["staleness_max"] is None else max(lag, st["staleness_max"])
            st["staleness_sum"] += lag
            st["staleness_count"] += 1
        neg_indptr, neg_ids = self._select(cand, indptr, ids)
        if self.sharded:  # this rank's rows of the global batch
            a, b = neg_indptr[row0], neg_indptr[row0 + B]
            neg_ids = neg_ids[a:b]
            neg_indptr = neg_indptr[row0: row0 + B + 1] - a
        self._stats["mine_time_s"] += time.perf_counter() - t0
        return neg_indptr, neg_ids

    def _select(self, cand: np.ndarray, indptr: np.ndarray, ids: np.ndarray
                ) -> Tuple[np.ndarray, np.ndarray]:
        """Candidates ``i64[N, depth]`` → negatives CSR: drop positives, skip, keep k, sample."""
        B = cand.shape[0]
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
        return neg_indptr, neg_ids

    # ---- resume -----------------------------------------------------------------------------

    def state_dict(self) -> Dict:
        """JSON-able resume state (the indexes themselves are written by :meth:`save`)."""
        return {"last_refresh_step": self.last_refresh_step_,
                "index_step": self.index_step_,
                "pending_step": self.pending_step_,
                "rng": self._rng.bit_generator.state}

    def load_state_dict(self, state: Dict) -> "HardNegativeMiner":
        """Restore :meth:`state_dict` so a resumed run samples the same negatives."""
        self.last_refresh_step_ = state["last_refresh_step"]
        self.index_step_ = state.get("index_step", self.last_refresh_step_)
        self._rng.bit_generator.state = state["rng"]
        return self

    def save(self, path) -> Path:
        """Write ``index/`` (the index in use), ``pending_index/`` (a background build, waited
        for; its snapshot step is in the state) and ``state.json`` (:meth:`state_dict`) into the
        folder ``path``. Waiting here changes no result: the swap still happens at its step."""
        import json

        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        if self.index_ is not None:
            self.index_.save(path / "index")
        if self._pending is not None:
            self.wait()._pending.result().save(path / "pending_index")
        (path / "state.json").write_text(json.dumps(self.state_dict()))
        return path

    def load(self, path) -> "HardNegativeMiner":
        """Restore what :meth:`save` wrote (a pending build comes back as already built)."""
        from xmr.utils.validation import read_json

        path = Path(path)
        state = read_json(path / "state.json", "the JSON object of the miner's state")
        if (path / "index").exists():
            self.index_ = LabelIndex.load(path / "index", expect_num_labels=self.hi)
        self._pending = None
        if state.get("pending_step") is not None:
            pending = _PendingBuild(int(state["pending_step"]))
            pending.index = LabelIndex.load(path / "pending_index", expect_num_labels=self.hi)
            self._pending = pending
        return self.load_state_dict(state)

    def stats(self) -> Dict[str, float]:
        """Cumulative counters: refreshes (indexes put in use), refresh_time_s (their build
        time, in the background for asynchronous builds), searches, search_time_s, queries,
        mine_time_s (search plus filtering), queries_searched (distinct rows searched, see
        ``dedup_queries``; sharded: of the global batch, per rank), async_builds (background builds started),
        snapshot_time_s (copying W for them), swap_wait_s (time the training thread waited for
        a background build), staleness_last / staleness_max / staleness_mean (steps between the
        snapshot of the index in use and the step mined for, over the mines since the miner was
        made; None before the first), last_refresh_step, index_step and pending_step."""
        out = dict(self._stats)
        n = out.pop("staleness_count")
        out["staleness_mean"] = out.pop("staleness_sum") / n if n else None
        out["last_refresh_step"] = self.last_refresh_step_
        out["index_step"] = self.index_step_
        out["pending_step"] = self.pending_step_
        return out

    def __repr__(self) -> str:
        extra = (f", async_refresh=True, swap_lag={self.swap_lag}" if self.async_refresh else "")
        extra += f", labels=[{self.lo}, {self.hi})" if self.sharded else ""
        return (f"HardNegativeMiner(num_labels={self.num_labels}, k={self.k}, "
                f"refresh_every={self.refresh_every}, skip_top={self.skip_top}, "
                f"num_negatives={self.num_negatives}, factory={self.factory!r}{extra})")
