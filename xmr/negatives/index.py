"""FAISS label index: approximate top-k labels by inner product, and the exact reference.

The label index answers "which labels score highest for this query embedding?" over the rows of
a label embedding table ``W f32[L, d]`` (the student's softmax weights, or any embedding file),
for top-k inference and for hard-negative mining (:mod:`xmr.negatives.miner`). It wraps a FAISS
index built from a factory string and gives it xmr's result contract::

    scores f32[n, k], ids i64[n, k]    sorted by decreasing score; rows with fewer than k hits
                                       are padded with id -1 and score PAD_SCORE (-FLT_MAX)

``ids`` are always *label ids* (rows of the full table), also when the index is split into
shards over label ranges or across ranks: every shard carries its label offset in an id map.

Every approximate index is tested against :func:`exact_search`, a chunked brute-force top-k,
with recall floors on planted (clustered) data from :func:`planted_labels` (never pure noise).

Threading: nothing here changes FAISS's process-global OpenMP thread count; use
:func:`omp_threads` to change it for a block of code (it restores the previous value).

FAISS is imported lazily (:func:`xmr.utils.optional.faiss`), so importing this module is cheap.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional, Sequence, Tuple, Union

import numpy as np

from xmr.errors import FormatError, MetadataMismatchError, XMRError
from xmr.utils.atomic import atomic_dir, atomic_open
from xmr.utils.optional import faiss as _faiss

log = logging.getLogger(__name__)

#: Score given to padded results (id -1). Finite (FAISS's own -FLT_MAX for inner product) so
#: that a padded row can never turn a softmax into NaN.
PAD_SCORE = float(np.finfo(np.float32).min)

FORMAT = "xmr-label-index"
FORMAT_VERSION = 1
METRICS = ("ip", "l2")
#: Parameters used while building (the rest are search-time parameters set through FAISS's
#: ParameterSpace: ``nprobe``, ``efSearch``, ``ht``, ``k_factor``, ``max_codes``, ...).
BUILD_PARAMS = ("nlist", "efConstruction", "train_points_per_list")
#: Short names accepted for ``factory``.
FACTORY_ALIASES = {"IVF": "IVF{nlist},Flat", "HNSW": "HNSW32", "flat": "Flat"}
DEFAULT_EF_SEARCH = 128
DEFAULT_EF_CONSTRUCTION = 40

PathLike = Union[str, os.PathLike]


# --------------------------------------------------------------------------------------------
# exact reference
# --------------------------------------------------------------------------------------------

def _as_matrix(name: str, a, dim: Optional[int] = None) -> np.ndarray:
    """Validate a 2-D finite float array and return it as C-contiguous float32."""
    a = np.asarray(a)
    if a.ndim != 2:
        raise ValueError(f"{name}: expected a 2-D array, got shape {a.shape}")
    if not (np.issubdtype(a.dtype, np.floating) or np.issubdtype(a.dtype, np.integer)):
        raise TypeError(f"{name}: expected a float array, got dtype {a.dtype}")
    if dim is not None and a.shape[1] != dim:
        raise ValueError(f"{name}: expected dim {dim}, got shape {a.shape}")
    a = np.ascontiguousarray(a, dtype=np.float32)
    if not np.isfinite(a).all():
        raise ValueError(f"{name}: expected finite values, got NaN or inf")
    return a


def _check_k(k) -> int:
    if isinstance(k, (bool, np.bool_)) or not isinstance(k, (int, np.integer)) or k < 1:
        raise ValueError(f"k: expected an integer >= 1, got {k!r}")
    return int(k)


def _chunk_topk(S: np.ndarray, k: int, offset: int) -> Tuple[np.ndarray, np.ndarray]:
    """Top-k of each row of a score block ``S f32[n, c]`` with ties broken by smaller column.

    Returns ``(scores f32[n, k'], ids i64[n, k'])`` with ``k' = min(k, c)``, ids shifted by
    ``offset``; the order within a row is unspecified (the caller sorts after merging).
    """
    n, c = S.shape
    if k >= c:
        ids = np.broadcast_to(np.arange(c, dtype=np.int64), (n, c))
        return S.copy(), ids + offset
    # k-th largest value per row; everything strictly above it is in, ties at it by column.
    t = np.partition(S, c - k, axis=1)[:, c - k]
    mask = S >= t[:, None]
    counts = mask.sum(axis=1)
    tied = np.flatnonzero(counts > k)
    for r in tied:  # rare: only rows with ties at the k-th value
        cols = np.flatnonzero(mask[r])
        keep = cols[np.lexsort((cols, -S[r, cols]))[:k]]
        mask[r] = False
        mask[r, keep] = True
    rows, cols = np.nonzero(mask)  # row-major: exactly k per row, columns increasing
    cols = cols.reshape(n, k)
    return np.take_along_axis(S, cols, axis=1), cols.astype(np.int64) + offset


def _sort_rows(scores: np.ndarray, ids: np.ndarray, k: int) -> Tuple[np.ndarray, np.ndarray]:
    """Sort each row by (score descending, id ascending, padding last) and keep the first k."""
    pad = ids < 0
    order = np.lexsort((np.where(pad, np.iinfo(np.int64).max, ids), -scores.astype(np.float64),
                        pad), axis=1)[:, :k]
    return np.take_along_axis(scores, order, axis=1), np.take_along_axis(ids, order, axis=1)


def exact_search(W, Q, k: int, *, metric: str = "ip", label_chunk: int = 65536,
                 query_chunk: int = 1024) -> Tuple[np.ndarray, np.ndarray]:
    """Exact top-k labels of each query by brute force: the ground truth for every index.

    ``W f32[L, d]`` label embeddings, ``Q f32[n, d]`` queries. The score of label j for query q
    is ``<q, w_j>`` (``metric="ip"``) or ``-||q - w_j||^2`` (``metric="l2"``). Labels are
    processed in blocks of ``label_chunk`` rows and queries in blocks of ``query_chunk``, so
    memory stays at ``query_chunk x label_chunk`` scores; each block's partial top-k is merged
    into a running top-k.

    Returns ``(scores f32[n, k], ids i64[n, k])`` sorted by decreasing score. **Ties** are
    broken by the smaller label id, so the result equals a stable sort of the dense score row
    (``np.lexsort((arange(L), -S))``). If ``k > L`` rows are padded with id -1 and score
    :data:`PAD_SCORE`.
    """
    if metric not in METRICS:
        raise ValueError(f"metric: expected one of {METRICS}, got {metric!r}")
    W = _as_matrix("W", W)
    Q = _as_matrix("Q", Q, dim=W.shape[1])
    k = _check_k(k)
    for name, v in (("label_chunk", label_chunk), ("query_chunk", query_chunk)):
        if not isinstance(v, (int, np.integer)) or v < 1:
            raise ValueError(f"{name}: expected an integer >= 1, got {v!r}")
    L, n = W.shape[0], Q.shape[0]
    out_s = np.full((n, k), PAD_SCORE, dtype=np.float32)
    out_i = np.full((n, k), -1, dtype=np.int64)
    w_sq = (W.astype(np.float64) ** 2).sum(1).astype(np.float32) if metric == "l2" else None
    for q0 in range(0, n, query_chunk):
        q = Q[q0:q0 + query_chunk]
        q_sq = None
        if w_sq is not None:
            q_sq = (q.astype(np.float64) ** 2).sum(1).astype(np.float32)[:, None]
        best_s = np.full((q.shape[0], 0), PAD_SCORE, dtype=np.float32)
        best_i = np.full((q.shape[0], 0), -1, dtype=np.int64)
        for l0 in range(0, L, label_chunk):
            S = q @ W[l0:l0 + label_chunk].T  # f32[nq, c]
            if w_sq is not None:
                S = -(q_sq - 2.0 * S + w_sq[None, l0:l0 + label_chunk])
            s, i = _chunk_topk(S, k, l0)
            best_s, best_i = _sort_rows(np.concatenate([best_s, s], 1),
                                        np.concatenate([best_i, i], 1), k)
        m = best_s.shape[1]
        out_s[q0:q0 + q.shape[0], :m] = best_s
        out_i[q0:q0 + q.shape[0], :m] = best_i
    return out_s, out_i


def knn_recall(ids, exact_ids) -> float:
    """k-recall@k: the mean over queries of ``|ids_q ∩ exact_q| / |exact_q|`` (-1 ignored).

    Both ``i64[n, k]``; ``exact_ids`` is usually :func:`exact_search`'s output. This is the
    figure FAISS reports as "k-recall@k" (the intersection measure, not 1-recall@k).
    """
    ids, exact_ids = np.asarray(ids), np.asarray(exact_ids)
    if ids.shape[0] != exact_ids.shape[0] or ids.ndim != 2 or exact_ids.ndim != 2:
        raise ValueError(f"expected two [n, k] id arrays, got {ids.shape} and {exact_ids.shape}")
    total, hits = 0, 0
    for r0 in range(0, ids.shape[0], 4096):
        a, e = ids[r0:r0 + 4096], exact_ids[r0:r0 + 4096]
        valid = e >= 0
        eq = (a[:, :, None] == e[:, None, :]) & valid[:, None, :] & (a[:, :, None] >= 0)
        hits += int(eq.any(axis=1).sum())
        total += int(valid.sum())
    return hits / max(total, 1)


def planted_labels(num_labels: int, dim: int, *, num_centres: int = 256, noise: float = 1.0,
                   seed: int = 0) -> np.ndarray:
    """Clustered label embeddings ``f32[L, d]`` with planted neighbourhoods, for recall tests.

    ``num_centres`` unit-norm centres drawn uniformly on the sphere; label j is its centre plus
    Gaussian noise of expected norm ``noise`` (so ``noise=1`` makes clusters overlap and the
    within-cluster order depends on the noise: a non-trivial but structured search problem).
    """
    rng = np.random.default_rng(seed)
    C = rng.standard_normal((num_centres, dim))
    C = (C / np.linalg.norm(C, axis=1, keepdims=True)).astype(np.float32)
    assign = rng.integers(0, num_centres, num_labels)
    W = np.empty((num_labels, dim), dtype=np.float32)
    scale = np.float32(noise / math.sqrt(dim))
    for a in range(0, num_labels, 1 << 16):  # float32 blocks: 1M x 256 stays at 1 GB
        b = min(num_labels, a + (1 << 16))
        W[a:b] = C[assign[a:b]] + scale * rng.standard_normal((b - a, dim), dtype=np.float32)
    return W


def planted_queries(W: np.ndarray, num_queries: int, *, noise: float = 0.3,
                    seed: int = 1) -> Tuple[np.ndarray, np.ndarray]:
    """Queries near random labels: ``(Q f32[n, d], source i64[n])`` with ``Q = W[source] + e``."""
    rng = np.random.default_rng(seed)
    src = rng.integers(0, W.shape[0], num_queries)
    Q = W[src] + noise * rng.standard_normal((num_queries, W.shape[1])) / math.sqrt(W.shape[1])
    return Q.astype(np.float32), src.astype(np.int64)


@contextlib.contextmanager
def omp_threads(n: Optional[int]) -> Iterator[None]:
    """Set FAISS's OpenMP thread count inside the block and restore it afterwards (None: no-op)."""
    if n is None:
        yield
        return
    faiss = _faiss()
    before = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(int(n))
    try:
        yield
    finally:
        faiss.omp_set_num_threads(before)


# --------------------------------------------------------------------------------------------
# the index
# --------------------------------------------------------------------------------------------

def mips_augment(W) -> np.ndarray:
    """Reduce inner-product search to L2 search (Bachrach et al. 2014, "Speeding up the Xbox
    recommender system using a Euclidean transformation for inner-product spaces", §3).

    ``W f32[L, d]`` → ``f32[L, d+1]``: each row gets the extra coordinate
    ``sqrt(M² − ||w||²)`` with ``M = max ||w||``, so all rows have norm M. Queries get a 0 there
    (:func:`mips_augment_queries`); then ``||q' − w'||² = ||q||² + M² − 2⟨q, w⟩`` and the L2 order
    is exactly the inner-product order. HNSW is built for metric spaces: on a trained label table,
    whose row norms track label frequency, its 10-recall@10 under the raw inner product was 0.80
    with real query embeddings and 0.97 after this transform
    (``benchmarks/results/bench_index_debian.json``).
    """
    W = np.asarray(W, dtype=np.float32)
    sq = np.einsum("ij,ij->i", W, W, dtype=np.float64)
    extra = np.sqrt(np.maximum(sq.max(initial=0.0) - sq, 0.0)).astype(np.float32)
    return np.ascontiguousarray(np.hstack([W, extra[:, None]]))


def mips_augment_queries(Q) -> np.ndarray:
    """``Q f32[n, d]`` → ``f32[n, d+1]`` with a zero last coordinate (see :func:`mips_augment`)."""
    Q = np.asarray(Q, dtype=np.float32)
    return np.ascontiguousarray(np.hstack([Q, np.zeros((Q.shape[0], 1), np.float32)]))


@dataclass
class _Shard:
    """One FAISS index over labels ``offset .. offset + count - 1``."""

    index: Any          # faiss.Index; an IndexIDMap when offset != 0
    offset: int
    count: int
    factory: str        # the resolved factory string (``{nlist}`` filled in)
    on_gpu: bool = False


def _metric_code(metric: str) -> int:
    faiss = _faiss()
    if metric not in METRICS:
        raise ValueError(f"metric: expected one of {METRICS}, got {metric!r}")
    return faiss.METRIC_INNER_PRODUCT if metric == "ip" else faiss.METRIC_L2


def default_nlist(n: int) -> int:
    """Number of IVF lists for ``n`` vectors: about 4·sqrt(n), at most n."""
    return max(1, min(n, int(round(4 * math.sqrt(n)))))


def default_nprobe(nlist: int) -> int:
    """IVF lists visited per query by default: max(32, nlist/64), at most nlist.

    Chosen so that k-recall@10 >= 0.95 on the planted data of the tests and benchmarks.
    """
    return max(1, min(nlist, max(32, nlist // 64)))


def _resolve_factory(factory: str, n: int, params: Dict[str, Any]) -> str:
    if not isinstance(factory, str) or not factory.strip():
        raise ValueError(f"factory: expected a FAISS index factory string, got {factory!r}")
    factory = FACTORY_ALIASES.get(factory, factory)
    if "{nlist}" in factory:
        nlist = params.get("nlist", default_nlist(n))
        factory = factory.replace("{nlist}", str(int(min(nlist, n))))
    return factory


def _inner(index):
    """The innermost index below IDMap / pre-transform wrappers, downcast."""
    faiss = _faiss()
    index = faiss.downcast_index(index)
    while isinstance(index, (faiss.IndexIDMap, faiss.IndexIDMap2, faiss.IndexPreTransform)):
        index = faiss.downcast_index(index.index)
    return index


class LabelIndex:
    """A FAISS index over label embeddings, searched by inner product (or L2).

    Build with :meth:`build` (or an empty index and :meth:`add_with_offset` per label range),
    query with :meth:`search`, persist with :meth:`save` / :meth:`load`.

    Parameters
    ----------
    dim: embedding dimension d.
    factory: a FAISS index factory string: ``"Flat"`` (exact), ``"IVF{nlist},Flat"`` (``{nlist}``
        is replaced by ``nlist`` or about 4·sqrt(#labels of the shard)), ``"HNSW32"``,
        ``"IVF{nlist},PQ16"``, ... ``"IVF"`` and ``"HNSW"`` are short for the first two.
    metric: ``"ip"`` (inner product, the softmax score) or ``"l2"`` (scores are then
        ``-||q - w||^2`` so that higher is still better).
    use_gpu: ``"auto"`` (GPU when ``faiss.get_num_gpus() > 0`` and the index type has a GPU
        version), ``True`` (require it) or ``False``.
    seed: seed of FAISS's k-means / PQ training.
    **params: build parameters (``nlist``, ``efConstruction``, ``train_points_per_list``: IVF
        k-means runs on a sample of at most that many points per list, default 64) and search
        parameters (``nprobe``, ``efSearch``, ...; see :meth:`set_params`). Defaults:
        ``efSearch=128``, ``efConstruction=40``, ``nprobe = max(32, nlist/64)``.
    """

    def __init__(self, dim: int, factory: str = "HNSW32", metric: str = "ip",
                 use_gpu: Union[str, bool] = "auto", seed: int = 0, **params):
        if isinstance(dim, bool) or not isinstance(dim, (int, np.integer)) or dim < 1:
            raise ValueError(f"dim: expected an integer >= 1, got {dim!r}")
        if metric not in METRICS:
            raise ValueError(f"metric: expected one of {METRICS}, got {metric!r}")
        if use_gpu not in ("auto", True, False):
            raise ValueError(f"use_gpu: expected 'auto', True or False, got {use_gpu!r}")
        _resolve_factory(factory, 1, {})  # type check only
        self.dim = int(dim)
        self.factory = factory
        self.metric = metric
        self.use_gpu = use_gpu
        self.seed = int(seed)
        self.params: Dict[str, Any] = dict(params)
        self.shards_: List[_Shard] = []
        self._searcher = None
        self._gpu_res: Dict[Any, Any] = {}  # StandardGpuResources per device (kept alive)

    # ---- building ---------------------------------------------------------------------------

    @classmethod
    def build(cls, emb, factory: str = "HNSW32", metric: str = "ip", shards: int = 1,
              use_gpu: Union[str, bool] = "auto", seed: int = 0, **params) -> "LabelIndex":
        """Index ``emb f32[L, d]`` (row j = label j), split into ``shards`` contiguous ranges.

        Each shard is an independent FAISS index (trained on its own rows); searching merges
        the shards' top-k with :class:`faiss.IndexShards`.
        """
        emb = _as_matrix("emb", emb)
        if isinstance(shards, bool) or not isinstance(shards, (int, np.integer)) or shards < 1:
            raise ValueError(f"shards: expected an integer >= 1, got {shards!r}")
        if shards > emb.shape[0]:
            raise ValueError(f"shards: expected at most one shard per label "
                             f"({emb.shape[0]} labels), got {shards}")
        self = cls(emb.shape[1], factory=factory, metric=metric, use_gpu=use_gpu, seed=seed,
                   **params)
        bounds = np.linspace(0, emb.shape[0], shards + 1).round().astype(np.int64)
        t0 = time.perf_counter()
        for a, b in zip(bounds[:-1], bounds[1:]):
            self.add_with_offset(emb[a:b], int(a))
        log.info("built %s index over %d labels (dim %d, %d shard(s)) in %.2fs", factory,
                 emb.shape[0], emb.shape[1], shards, time.perf_counter() - t0)
        return self

    def add_with_offset(self, emb, offset: int) -> "LabelIndex":
        """Add a new shard holding labels ``offset .. offset + len(emb) - 1``.

        This is how a model-parallel label table is indexed: each rank builds a
        :class:`LabelIndex` over its own rows with its global label offset, and
        :meth:`from_shards` merges them. Label ranges must not overlap.
        """
        faiss = _faiss()
        emb = _as_matrix("emb", emb, dim=self.dim)
        if isinstance(offset, bool) or not isinstance(offset, (int, np.integer)) or offset < 0:
            raise ValueError(f"offset: expected an integer >= 0, got {offset!r}")
        n = emb.shape[0]
        if n == 0:
            raise ValueError("emb: expected at least one label, got 0 rows")
        self._check_disjoint(int(offset), n)
        resolved = _resolve_factory(self.factory, n, self.params)
        try:
            index = faiss.index_factory(self.dim, resolved, _metric_code(self.metric))
        except RuntimeError as exc:
            why = str(exc).strip().splitlines()[-1]
            why = why.split("failed: ", 1)[-1]  # drop FAISS's C++ source location
            raise ValueError(f"factory: {resolved!r} is not a valid FAISS index for dim "
                             f"{self.dim}: {why}") from None
        inner = _inner(index)
        for obj in (getattr(inner, "cp", None), getattr(getattr(inner, "pq", None), "cp", None)):
            if obj is not None:
                obj.seed = self.seed
        if hasattr(inner, "cp"):
            # nlist ~ 4 sqrt(n) leaves sqrt(n)/4 points per list by design; FAISS's "provide at
            # least 39 points per centroid" warning (printed from C++) is expected, not a fault.
            inner.cp.min_points_per_centroid = 1
            # k-means on a seeded sample of at most 64 points per list (FAISS default 256):
            # 4x cheaper training at 1M labels for the same recall on our planted data.
            inner.cp.max_points_per_centroid = int(self.params.get("train_points_per_list", 64))
        if hasattr(inner, "hnsw"):
            inner.hnsw.efConstruction = int(self.params.get("efConstruction",
                                                            DEFAULT_EF_CONSTRUCTION))
        index, on_gpu = self._maybe_to_gpu(index)
        if not index.is_trained:
            index.train(emb)
        if offset != 0:
            index = faiss.IndexIDMap(index)
            index.add_with_ids(emb, np.arange(offset, offset + n, dtype=np.int64))
        else:
            index.add(emb)
        shard = _Shard(index=index, offset=int(offset), count=n, factory=resolved, on_gpu=on_gpu)
        self._apply_search_params(shard, self._search_params_for(shard))
        self.shards_.append(shard)
        self._searcher = None
        return self

    @classmethod
    def from_shards(cls, indexes: Sequence["LabelIndex"]) -> "LabelIndex":
        """Merge label indexes over disjoint label ranges (e.g. one per rank) into one index.

        The shards are shared, not copied. All inputs must have the same dim and metric.
        """
        if not indexes:
            raise ValueError("indexes: expected at least one LabelIndex, got none")
        first = indexes[0]
        out = cls(first.dim, factory=first.factory, metric=first.metric, use_gpu=first.use_gpu,
                  seed=first.seed, **first.params)
        for i, idx in enumerate(indexes):
            if not isinstance(idx, LabelIndex):
                raise TypeError(f"indexes[{i}]: expected a LabelIndex, got {type(idx).__name__}")
            if (idx.dim, idx.metric) != (first.dim, first.metric):
                raise ValueError(f"indexes[{i}]: expected dim {first.dim} and metric "
                                 f"{first.metric!r}, got dim {idx.dim} and metric {idx.metric!r}")
            for s in idx.shards_:
                out._check_disjoint(s.offset, s.count)
                out.shards_.append(s)
            out._gpu_res.update({("from", i, dev): r for dev, r in idx._gpu_res.items()})
        return out

    def _check_disjoint(self, offset: int, n: int) -> None:
        for s in self.shards_:
            if offset < s.offset + s.count and s.offset < offset + n:
                raise ValueError(f"labels {offset}..{offset + n - 1} overlap the shard holding "
                                 f"labels {s.offset}..{s.offset + s.count - 1}")

    def _maybe_to_gpu(self, index):
        """Move ``index`` to a GPU when allowed and possible; returns (index, on_gpu).

        Shards are spread round-robin over the GPUs FAISS sees.
        """
        if self.use_gpu is False:
            return index, False
        faiss = _faiss()
        ngpu = faiss.get_num_gpus() if hasattr(faiss, "get_num_gpus") else 0
        if ngpu == 0:
            if self.use_gpu is True:
                raise XMRError("use_gpu=True but FAISS sees no GPU (faiss.get_num_gpus() == 0; "
                               "is faiss-gpu installed?)")
            return index, False
        device = len(self.shards_) % ngpu  # shard i on GPU i mod #GPUs
        try:
            if device not in self._gpu_res:
                self._gpu_res[device] = faiss.StandardGpuResources()
            return faiss.index_cpu_to_gpu(self._gpu_res[device], device, index), True
        except (RuntimeError, AttributeError) as exc:
            if self.use_gpu is True:
                raise XMRError(f"use_gpu=True but this index type has no GPU version: "
                               f"{exc}") from None
            log.info("index stays on CPU (no GPU version): %s", str(exc).splitlines()[-1])
            return index, False

    # ---- parameters -------------------------------------------------------------------------

    def _search_params_for(self, shard: _Shard) -> Dict[str, Any]:
        inner = _inner(shard.index)
        p: Dict[str, Any] = {}
        if hasattr(inner, "hnsw"):
            p["efSearch"] = DEFAULT_EF_SEARCH
        if hasattr(inner, "nlist") and hasattr(inner, "nprobe"):
            p["nprobe"] = default_nprobe(int(inner.nlist))
        p.update({k: v for k, v in self.params.items() if k not in BUILD_PARAMS})
        return p

    @staticmethod
    def _apply_search_params(shard: _Shard, params: Dict[str, Any]) -> None:
        faiss = _faiss()
        space = (faiss.GpuParameterSpace() if shard.on_gpu and hasattr(faiss, "GpuParameterSpace")
                 else faiss.ParameterSpace())
        for name, value in params.items():
            try:
                space.set_index_parameter(shard.index, name, value)
            except RuntimeError:
                raise ValueError(f"search parameter {name!r} does not apply to a "
                                 f"{shard.factory!r} index (build parameters: "
                                 f"{', '.join(BUILD_PARAMS)}; search parameters include nprobe "
                                 f"for IVF and efSearch for HNSW)") from None

    def set_params(self, **params) -> "LabelIndex":
        """Set search parameters on every shard (e.g. ``nprobe=64`` or ``efSearch=256``)."""
        for name in params:
            if name in BUILD_PARAMS:
                raise ValueError(f"{name!r} is a build parameter; pass it to LabelIndex.build")
        for shard in self.shards_:
            self._apply_search_params(shard, params)
        self.params.update(params)
        return self

    @property
    def search_params(self) -> Dict[str, Any]:
        """The search parameters in effect on the first shard (with defaults filled in)."""
        return self._search_params_for(self.shards_[0]) if self.shards_ else {}

    # ---- queries ----------------------------------------------------------------------------

    @property
    def ntotal(self) -> int:
        """Number of labels indexed."""
        return sum(s.count for s in self.shards_)

    @property
    def num_labels(self) -> int:
        """Size of the label id space: one past the largest label id indexed."""
        return max((s.offset + s.count for s in self.shards_), default=0)

    def _get_searcher(self):
        if self._searcher is None:
            faiss = _faiss()
            if len(self.shards_) == 1:
                self._searcher = self.shards_[0].index
            else:
                sh = faiss.IndexShards(self.dim, True, False)  # threaded, keep our label ids
                for s in self.shards_:
                    sh.add_shard(s.index)
                self._searcher = sh
        return self._searcher

    def search(self, Q, k: int) -> Tuple[np.ndarray, np.ndarray]:
        """Top-k labels of each query: ``Q f32[n, d] -> (scores f32[n, k], ids i64[n, k])``.

        Rows are sorted by decreasing score; missing results (k > #labels, short IVF lists,
        HNSW dead ends) are padded with id -1 and score :data:`PAD_SCORE`.
        """
        if not self.shards_:
            raise ValueError("the index is empty: build it or add_with_offset first")
        Q = _as_matrix("Q", Q, dim=self.dim)
        k = _check_k(k)
        D, I = self._get_searcher().search(Q, k)
        I = I.astype(np.int64, copy=False)
        pad = I < 0
        S = -D if self.metric == "l2" else D
        S = np.where(pad, np.float32(PAD_SCORE), S).astype(np.float32, copy=False)
        return S, I

    # ---- persistence ------------------------------------------------------------------------

    def metadata(self) -> Dict[str, Any]:
        import xmr

        faiss = _faiss()
        return {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "xmr_version": xmr.__version__,
            "faiss_version": getattr(faiss, "__version__", "?"),
            "dim": self.dim,
            "metric": self.metric,
            "num_labels": self.num_labels,
            "ntotal": self.ntotal,
            "factory": self.factory,
            "seed": self.seed,
            "params": self.params,
            "search_params": self.search_params,
            "shards": [
                {"file": "index.faiss" if len(self.shards_) == 1 else f"shard_{i:05d}.faiss",
                 "offset": s.offset, "count": s.count, "factory": s.factory}
                for i, s in enumerate(self.shards_)
            ],
        }

    def save(self, path: PathLike) -> Path:
        """Write the index as a folder, atomically: ``meta.json`` plus one FAISS file per shard.

        A single-shard index is ``index.faiss``; a sharded one ``shard_00000.faiss``, ... (FAISS
        cannot serialise an IndexShards). GPU shards are copied to CPU for writing.
        """
        faiss = _faiss()
        if not self.shards_:
            raise ValueError("the index is empty: nothing to save")
        meta = self.metadata()
        path = Path(path)
        with atomic_dir(path) as tmp:
            for s, m in zip(self.shards_, meta["shards"]):
                idx = faiss.index_gpu_to_cpu(s.index) if s.on_gpu else s.index
                faiss.write_index(idx, str(tmp / m["file"]))
            with atomic_open(tmp / "meta.json", "w") as f:
                json.dump(meta, f, indent=2, default=_json_default)
                f.write("\n")
        log.info("saved label index to %s", path)
        return path

    @classmethod
    def load(cls, path: PathLike, expect_dim: Optional[int] = None,
             expect_num_labels: Optional[int] = None, use_gpu: Union[str, bool] = False
             ) -> "LabelIndex":
        """Read an index written by :meth:`save` and check it against what it will be used with.

        Raises :class:`~xmr.errors.MetadataMismatchError` when ``expect_dim`` or
        ``expect_num_labels`` differ from the saved ones, or when the files disagree with
        ``meta.json``; :class:`~xmr.errors.FormatError` when ``meta.json`` is missing or bad.
        """
        faiss = _faiss()
        path = Path(path)
        meta_path = path / "meta.json"
        if not meta_path.is_file():
            raise FormatError(meta_path, None, "the meta.json of an index written by xmr",
                              "no such file")
        from xmr.utils.validation import read_json

        meta = read_json(meta_path, "the JSON object of an index written by xmr")
        need = ("format", "format_version", "dim", "metric", "num_labels", "factory", "shards")
        missing = [k for k in need if k not in meta] if isinstance(meta, dict) else list(need)
        if missing or meta.get("format") != FORMAT:
            raise FormatError(meta_path, None, f"an {FORMAT} object with keys {', '.join(need)}",
                              f"format {meta.get('format') if isinstance(meta, dict) else None!r}"
                              f"{' missing ' + ', '.join(missing) if missing else ''}")
        if isinstance(meta["format_version"], bool) or not isinstance(meta["format_version"], int):
            raise FormatError(meta_path, None, "an integer format_version",
                              repr(meta["format_version"]))
        if meta["format_version"] > FORMAT_VERSION:
            raise MetadataMismatchError(
                f"{meta_path}: format_version {meta['format_version']}; this xmr reads "
                f"versions up to {FORMAT_VERSION} (upgrade xmr)")
        dim, L = int(meta["dim"]), int(meta["num_labels"])
        if (expect_dim is not None and expect_dim != dim) or (
                expect_num_labels is not None and expect_num_labels != L):
            if expect_dim is not None and expect_num_labels is not None:
                want = f"the model has {expect_num_labels} labels of dim {expect_dim}"
            elif expect_dim is not None:
                want = f"expected dim {expect_dim}"
            else:
                want = f"expected {expect_num_labels} labels"
            raise MetadataMismatchError(
                f"index {path} was built for {L} labels of dim {dim}; {want}")
        out = cls(dim, factory=meta["factory"], metric=meta["metric"], use_gpu=use_gpu,
                  seed=int(meta.get("seed", 0)), **meta.get("params", {}))
        if not isinstance(meta["shards"], list) or not meta["shards"]:
            raise FormatError(meta_path, None, "shards: a non-empty list", repr(meta["shards"]))
        from xmr.utils.validation import confined

        for m in meta["shards"]:
            if not isinstance(m, dict) or not all(k in m for k in ("file", "offset", "count")):
                raise FormatError(meta_path, None, "shards: objects with file, offset, count",
                                  repr(m)[:80])
            f = confined(path, m["file"], meta_path)  # never a file outside the index folder
            if not f.is_file():
                raise MetadataMismatchError(f"index {path}: meta.json lists {m['file']}, "
                                            f"which is missing")
            try:
                index = faiss.read_index(str(f))
            except RuntimeError as exc:
                import re

                why = re.search(r"[Ee]rror: *'?([^\n]{1,100})", str(exc).split(" at /")[-1])
                raise FormatError(f, None, "a FAISS index file written by faiss.write_index",
                                  "a damaged or truncated file that faiss cannot read"
                                  + (f" ({why.group(1).strip()})" if why else "")) from None
            if index.d != dim or index.ntotal != m["count"]:
                raise MetadataMismatchError(
                    f"index {path}: {m['file']} holds {index.ntotal} vectors of dim {index.d}; "
                    f"meta.json says {m['count']} of dim {dim}")
            on_gpu = False
            if use_gpu is not False and not isinstance(index, faiss.IndexIDMap):
                index, on_gpu = out._maybe_to_gpu(index)
            shard = _Shard(index=index, offset=int(m["offset"]), count=int(m["count"]),
                           factory=m.get("factory", meta["factory"]), on_gpu=on_gpu)
            out._apply_search_params(shard, out._search_params_for(shard))
            out.shards_.append(shard)
        if out.num_labels != L:
            raise MetadataMismatchError(f"index {path}: shards cover {out.num_labels} labels; "
                                        f"meta.json says {L}")
        return out

    def __repr__(self) -> str:
        return (f"LabelIndex(factory={self.factory!r}, metric={self.metric!r}, dim={self.dim}, "
                f"num_labels={self.num_labels}, shards={len(self.shards_)})")


def _json_default(o):
    if isinstance(o, np.generic):
        return o.item()
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")
