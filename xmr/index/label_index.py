"""FAISS label index: approximate top-k labels by inner product (or L2).

The label index answers "which labels score highest for this query embedding?" over the rows of
a label embedding table ``W f32[L, d]`` (the student's softmax weights, or any embedding file),
for top-k inference (:meth:`xmr.models.xmr_model.XMRModel.predict` with ``index=``, ``xmr index``)
and for hard-negative mining (:mod:`xmr.negatives.miner`). It wraps a FAISS index built from a
factory string and returns xmr's top-k contract (:mod:`xmr.index.exact`)::

    scores f32[n, k], ids i64[n, k]    sorted by decreasing score, equal scores by lower id;
                                       rows with fewer than k hits are padded with id -1 and
                                       score PAD_SCORE (-FLT_MAX)

``ids`` are always *label ids* (rows of the full table), also when the index is split into
shards over label ranges or across ranks: every shard carries its label offset in an id map.
Which of several labels tied at the k-th place an approximate (or FAISS ``Flat``) index keeps is
FAISS's choice; the returned rows are put in contract order.

``mips=True`` indexes ``[w, sqrt(M² − ||w||²)]`` under L2 instead of ``w`` under inner product
(:mod:`xmr.index.mips`): the same ranking, but HNSW and IVF keep their recall when the row
norms vary, as they do in a trained label table. Queries are transformed and scores mapped back
to inner products inside :meth:`LabelIndex.search`; the saved index records the reduction.

Every approximate index is tested against :func:`xmr.index.exact.exact_search`, with recall
floors on planted (clustered) data from :func:`xmr.data.planted.planted_labels`.

Threading: nothing here changes FAISS's process-global OpenMP thread count; use
:func:`xmr.utils.threads.omp_threads` to change it for a block of code.

FAISS is imported lazily (:func:`xmr.utils.optional.faiss`), so importing this module is cheap.
"""

from __future__ import annotations

import json
import logging
import math
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

import numpy as np

from xmr.errors import FormatError, MetadataMismatchError, XMRError
from xmr.index.exact import METRICS, _as_matrix, _check_k, sort_rows
from xmr.index.mips import (MIPS_ALIGN, max_row_norm, mips_augment, mips_augment_queries,
                             mips_pad, mips_scores)
from xmr.utils.atomic import atomic_dir, atomic_open
from xmr.utils.optional import faiss as _faiss

log = logging.getLogger(__name__)

FORMAT = "xmr-label-index"
#: The newest format this xmr reads. Version 2 adds the MIPS reduction (``mips``,
#: ``max_norm``), version 3 its zero padding (``mips_pad``: FAISS holds d + 1 + mips_pad
#: coordinates; a version-2 index has none). An index without the reduction is still written as
#: version 1, which older xmr reads.
FORMAT_VERSION = 3
#: Parameters used while building (the rest are search-time parameters set through FAISS's
#: ParameterSpace: ``nprobe``, ``efSearch``, ``ht``, ``k_factor``, ``max_codes``, ...).
BUILD_PARAMS = ("nlist", "efConstruction", "train_points_per_list")
#: Short names accepted for ``factory``.
FACTORY_ALIASES = {"IVF": "IVF{nlist},Flat", "HNSW": "HNSW32", "flat": "Flat"}
DEFAULT_EF_SEARCH = 128
DEFAULT_EF_CONSTRUCTION = 40

PathLike = Union[str, os.PathLike]


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


def mips_pad_of(dim: int) -> int:
    """The zero padding a new MIPS index of dim ``dim`` gets (to a multiple of MIPS_ALIGN)."""
    return mips_pad(dim, MIPS_ALIGN)


def _inner(index):
    """The innermost index below IDMap / pre-transform wrappers, downcast."""
    faiss = _faiss()
    index = faiss.downcast_index(index)
    while True:
        if isinstance(index, (faiss.IndexIDMap, faiss.IndexIDMap2, faiss.IndexPreTransform)):
            index = faiss.downcast_index(index.index)
        elif isinstance(index, faiss.IndexRefine):  # "…,RFlat": the approximate base index
            index = faiss.downcast_index(index.base_index)
        else:
            return index
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
    mips: apply the MIPS→L2 reduction (:mod:`xmr.index.mips`; needs ``metric="ip"``): FAISS
        then holds ``[w, sqrt(M² − ||w||²)]`` (dim d+1) under L2, searched with ``[q, 0]``; the
        scores returned are still the inner products ``<q, w>``. Default False.
    max_norm: M of the reduction, shared by all shards (their distances must be comparable).
        :meth:`build` takes the largest row norm of the table; for per-rank shards
        (:meth:`add_with_offset`) pass the global maximum, else the first shard's is used and a
        longer row in a later shard is an error.
    **params: build parameters (``nlist``, ``efConstruction``, ``train_points_per_list``: IVF
        k-means runs on a sample of at most that many points per list, default 64) and search
        parameters (``nprobe``, ``efSearch``, ...; see :meth:`set_params`). Defaults:
        ``efSearch=128``, ``efConstruction=40``, ``nprobe = max(32, nlist/64)``.
    """

    def __init__(self, dim: int, factory: str = "HNSW32", metric: str = "ip",
                 use_gpu: Union[str, bool] = "auto", seed: int = 0, mips: bool = False,
                 max_norm: Optional[float] = None, mips_pad: Optional[int] = None, **params):
        if isinstance(dim, bool) or not isinstance(dim, (int, np.integer)) or dim < 1:
            raise ValueError(f"dim: expected an integer >= 1, got {dim!r}")
        if metric not in METRICS:
            raise ValueError(f"metric: expected one of {METRICS}, got {metric!r}")
        if not isinstance(mips, (bool, np.bool_)):
            raise ValueError(f"mips: expected True or False, got {mips!r}")
        if mips and metric != "ip":
            raise ValueError(f"mips: expected metric 'ip' (the reduction is for inner-product "
                             f"search), got metric {metric!r}")
        if max_norm is not None and (not mips or isinstance(max_norm, bool)
                                     or not isinstance(max_norm, (int, float, np.number))
                                     or not math.isfinite(max_norm) or max_norm < 0):
            raise ValueError(f"max_norm: expected a finite number >= 0 with mips=True, got "
                             f"{max_norm!r}{'' if mips else ' with mips=False'}")
        if use_gpu not in ("auto", True, False):
            raise ValueError(f"use_gpu: expected 'auto', True or False, got {use_gpu!r}")
        _resolve_factory(factory, 1, {})  # type check only
        self.dim = int(dim)
        self.factory = factory
        self.metric = metric
        self.use_gpu = use_gpu
        self.seed = int(seed)
        self.mips = bool(mips)
        self.max_norm: Optional[float] = None if max_norm is None else float(max_norm)
        #: zero columns after the reduction's extra coordinate (:data:`xmr.index.mips.MIPS_ALIGN`)
        self.mips_pad = (mips_pad_of(self.dim) if mips_pad is None else int(mips_pad)) if mips else 0
        self.params: Dict[str, Any] = dict(params)
        self.shards_: List[_Shard] = []
        self._searcher = None
        self._gpu_res: Dict[Any, Any] = {}  # StandardGpuResources per device (kept alive)

    # ---- building ---------------------------------------------------------------------------

    @classmethod
    def build(cls, emb, factory: str = "HNSW32", metric: str = "ip", shards: int = 1,
              use_gpu: Union[str, bool] = "auto", seed: int = 0, mips: bool = False,
              **params) -> "LabelIndex":
        """Index ``emb f32[L, d]`` (row j = label j), split into ``shards`` contiguous ranges.

        Each shard is an independent FAISS index (trained on its own rows); searching merges
        the shards' top-k with :class:`faiss.IndexShards`. ``mips=True``: the MIPS→L2
        reduction with ``M`` = the largest row norm of ``emb`` (see the class docstring).
        """
        emb = _as_matrix("emb", emb)
        if isinstance(shards, bool) or not isinstance(shards, (int, np.integer)) or shards < 1:
            raise ValueError(f"shards: expected an integer >= 1, got {shards!r}")
        if shards > emb.shape[0]:
            raise ValueError(f"shards: expected at most one shard per label "
                             f"({emb.shape[0]} labels), got {shards}")
        self = cls(emb.shape[1], factory=factory, metric=metric, use_gpu=use_gpu, seed=seed,
                   mips=mips, max_norm=max_row_norm(emb) if mips else None, **params)
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
        if self.mips:
            if self.max_norm is None:
                self.max_norm = max_row_norm(emb)
            emb = mips_augment(emb, self.max_norm, pad=self.mips_pad)
        resolved = _resolve_factory(self.factory, n, self.params)
        try:
            index = faiss.index_factory(self._faiss_dim, resolved,
                                        _metric_code("l2" if self.mips else self.metric))
        except RuntimeError as exc:
            why = str(exc).strip().splitlines()[-1]
            why = why.split("failed: ", 1)[-1]  # drop FAISS's C++ source location
            mips = (f" (d+1+{self.mips_pad} of the MIPS reduction)" if self.mips else "")
            raise ValueError(f"factory: {resolved!r} is not a valid FAISS index for dim "
                             f"{self._faiss_dim}{mips}: {why}") from None
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

        The shards are shared, not copied. All inputs must have the same dim and metric, and
        MIPS indexes the same ``max_norm``.
        """
        if not indexes:
            raise ValueError("indexes: expected at least one LabelIndex, got none")
        first = indexes[0]
        out = cls(first.dim, factory=first.factory, metric=first.metric, use_gpu=first.use_gpu,
                  seed=first.seed, mips=first.mips, max_norm=first.max_norm,
                  mips_pad=first.mips_pad if first.mips else None, **first.params)
        for i, idx in enumerate(indexes):
            if not isinstance(idx, LabelIndex):
                raise TypeError(f"indexes[{i}]: expected a LabelIndex, got {type(idx).__name__}")
            if (idx.dim, idx.metric) != (first.dim, first.metric):
                raise ValueError(f"indexes[{i}]: expected dim {first.dim} and metric "
                                 f"{first.metric!r}, got dim {idx.dim} and metric {idx.metric!r}")
            if (idx.mips, idx.max_norm, idx.mips_pad) != (first.mips, first.max_norm,
                                                          first.mips_pad):
                raise ValueError(f"indexes[{i}]: expected mips={first.mips} with max_norm "
                                 f"{first.max_norm} (give every rank the global max_norm), got "
                                 f"mips={idx.mips} with max_norm {idx.max_norm}")
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
    def _faiss_dim(self) -> int:
        """Dimension of the vectors FAISS holds: d, or d + 1 + mips_pad under the MIPS reduction."""
        return self.dim + (1 + self.mips_pad if self.mips else 0)

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
                sh = faiss.IndexShards(self._faiss_dim, True, False)  # threaded, keep our label ids
                for s in self.shards_:
                    sh.add_shard(s.index)
                self._searcher = sh
        return self._searcher

    def search(self, Q, k: int) -> Tuple[np.ndarray, np.ndarray]:
        """Top-k labels of each query: ``Q f32[n, d] -> (scores f32[n, k], ids i64[n, k])``.

        The contract of :mod:`xmr.index.exact`: rows sorted by decreasing score, equal scores by
        lower id; missing results (k > #labels, short IVF lists, HNSW dead ends) padded with id
        -1 and score :data:`~xmr.index.exact.PAD_SCORE`. Scores are ``<q, w>`` for
        ``metric="ip"`` (with or without ``mips``) and ``-||q - w||^2`` for ``"l2"``.
        """
        if not self.shards_:
            raise ValueError("the index is empty: build it or add_with_offset first")
        Q = _as_matrix("Q", Q, dim=self.dim)
        k = _check_k(k)
        D, I = self._get_searcher().search(
            mips_augment_queries(Q, pad=self.mips_pad) if self.mips else Q, k)
        if self.mips:
            S = mips_scores(D, Q, self.max_norm)
        else:
            S = -D if self.metric == "l2" else D
        return sort_rows(S, I)

    # ---- persistence ------------------------------------------------------------------------

    def metadata(self) -> Dict[str, Any]:
        import xmr

        faiss = _faiss()
        return {
            "format": FORMAT,
            "format_version": (3 if self.mips_pad else 2) if self.mips else 1,
            "xmr_version": xmr.__version__,
            "faiss_version": getattr(faiss, "__version__", "?"),
            "dim": self.dim,
            "metric": self.metric,
            **({"mips": True, "max_norm": self.max_norm} if self.mips else {}),
            **({"mips_pad": self.mips_pad} if self.mips_pad else {}),
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
        from xmr.utils.artefacts import read_meta

        # the one artefact reader: format, format_version <= FORMAT_VERSION, xmr_version
        meta = read_meta(meta_path, FORMAT, FORMAT_VERSION, what="an index written by xmr")
        need = ("dim", "metric", "num_labels", "factory", "shards")
        missing = [k for k in need if k not in meta]
        if missing:
            raise FormatError(meta_path, None, f"an {FORMAT} object with keys {', '.join(need)}",
                              f"missing {', '.join(missing)}")
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
        mips, max_norm = meta.get("mips", False), meta.get("max_norm")
        if mips not in (False, True) or (mips and (isinstance(max_norm, bool) or not isinstance(
                max_norm, (int, float)) or not math.isfinite(max_norm) or max_norm < 0)):
            raise FormatError(meta_path, None, "mips: true or false, and with true a max_norm "
                              ">= 0", f"mips {mips!r}, max_norm {max_norm!r}")
        pad = meta.get("mips_pad", 0)  # version 2: no padding
        if isinstance(pad, bool) or not isinstance(pad, int) or not 0 <= pad < 64:
            raise FormatError(meta_path, None, "mips_pad: an integer in [0, 64)", repr(pad))
        out = cls(dim, factory=meta["factory"], metric=meta["metric"], use_gpu=use_gpu,
                  seed=int(meta.get("seed", 0)), mips=bool(mips),
                  max_norm=float(max_norm) if mips else None, mips_pad=pad if mips else None,
                  **meta.get("params", {}))
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
            if index.d != out._faiss_dim or index.ntotal != m["count"]:
                raise MetadataMismatchError(
                    f"index {path}: {m['file']} holds {index.ntotal} vectors of dim {index.d}; "
                    f"meta.json says {m['count']} of dim {out._faiss_dim}"
                    f"{' (d+1+mips_pad of the MIPS reduction)' if out.mips else ''}")
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
                f"num_labels={self.num_labels}, shards={len(self.shards_)}"
                f"{', mips=True' if self.mips else ''})")


def _json_default(o):
    if isinstance(o, np.generic):
        return o.item()
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")
