"""The label index's settings: :class:`IndexConfig`, what ``xmr index build`` builds.

A :class:`~xmr.utils.config.ConfigBase` like every other config: ``xmr index build``'s flags
(``--factory``, ``--metric``, ``--mips``, ``--shards``, ``--gpu``, ``--seed``) fill its fields
and its ``--set NAME=VALUE`` options are :meth:`~xmr.utils.config.ConfigBase.with_overrides`
on it, so an unknown name or a wrong type is refused before anything is built. The FAISS
parameters left at ``None`` take :class:`~xmr.index.label_index.LabelIndex`'s defaults
(``efSearch=128``, ``efConstruction=40``, ``nlist`` about 4·sqrt(L), ``nprobe = max(32,
nlist/64)``). Whether a parameter applies to the factory (``nprobe`` to IVF, ``efSearch`` to
HNSW) and whether the factory string is valid FAISS is checked when the index is built.

Plain data: importing this module does not import FAISS.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any, Dict, Optional, Union

from xmr.errors import ConfigError
from xmr.index.exact import METRICS
from xmr.index.label_index import BUILD_PARAMS
from xmr.utils.config import ConfigBase
from xmr.utils.validation import check_choice, check_int, check_number

#: the fields that are FAISS search parameters (set through FAISS's ParameterSpace); the build
#: parameters are :data:`xmr.index.label_index.BUILD_PARAMS`
SEARCH_PARAMS = ("nprobe", "efSearch", "ht", "k_factor", "max_codes")
FAISS_PARAMS = BUILD_PARAMS + SEARCH_PARAMS


@dataclass
class IndexConfig(ConfigBase):
    """How a :class:`~xmr.index.label_index.LabelIndex` is built and searched."""

    #: FAISS factory string: Flat, IVF{nlist},Flat, HNSW32, IVF{nlist},PQ16, ...
    factory: str = "HNSW32"
    metric: str = "ip"  #: "ip" (inner product) or "l2"
    #: the MIPS→L2 reduction (:mod:`xmr.index.mips`); None: on for a model's label table with
    #: metric "ip" (:func:`xmr.api.build_index`), off for an embeddings file
    mips: Optional[bool] = None
    shards: int = 1  #: contiguous label-range shards, one FAISS index each
    use_gpu: Union[bool, str] = "auto"  #: "auto" (a GPU when FAISS sees one), true or false
    seed: int = 0  #: seed of FAISS's k-means / PQ training
    # build parameters (None: LabelIndex's default)
    nlist: Optional[int] = None  #: IVF lists (the {nlist} of the factory string)
    efConstruction: Optional[int] = None  #: HNSW build-time neighbour list size
    train_points_per_list: Optional[int] = None  #: IVF k-means sample per list (default 64)
    # search parameters (None: LabelIndex's default; saved with the index)
    nprobe: Optional[int] = None  #: IVF lists visited per query
    efSearch: Optional[int] = None  #: HNSW search-time neighbour list size
    ht: Optional[int] = None  #: IVFPQ polysemous Hamming threshold
    k_factor: Optional[float] = None  #: refinement: candidates re-ranked per result
    max_codes: Optional[int] = None  #: IVF: codes visited per query at most

    def validate(self, prefix: str = "") -> "IndexConfig":
        if not isinstance(self.factory, str) or not self.factory.strip():
            raise ConfigError(f"{prefix}factory: expected a FAISS index factory string, got "
                              f"{self.factory!r}")
        check_choice(prefix + "metric", self.metric, METRICS)
        check_int(prefix + "shards", self.shards, 1)
        check_choice(prefix + "use_gpu", self.use_gpu, ("auto", True, False))
        check_int(prefix + "seed", self.seed, 0)
        for name in ("nlist", "efConstruction", "train_points_per_list", "nprobe", "efSearch",
                     "max_codes"):
            check_int(prefix + name, getattr(self, name), 1, allow_none=True)
        check_int(prefix + "ht", self.ht, 0, allow_none=True)
        if self.k_factor is not None:
            check_number(prefix + "k_factor", self.k_factor, 1.0)
        return self

    def faiss_params(self) -> Dict[str, Any]:
        """The FAISS parameters that are set (not ``None``), by name."""
        return {n: getattr(self, n) for n in FAISS_PARAMS if getattr(self, n) is not None}

    def build_kwargs(self) -> Dict[str, Any]:
        """Keyword arguments of :meth:`LabelIndex.build <xmr.index.label_index.LabelIndex.build>`
        (and :func:`xmr.api.build_index`): factory, metric, mips, shards, use_gpu, seed and the
        FAISS parameters that are set."""
        out = {f.name: getattr(self, f.name) for f in fields(self)
               if f.name not in FAISS_PARAMS}
        out.update(self.faiss_params())
        return out
