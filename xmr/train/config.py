"""Typed training configuration: nested dataclasses that round-trip to JSON.

Every section is a :class:`~xmr.utils.config.ConfigBase` (strict ``from_dict``, ``to_json``,
``with_overrides``). The CLI is a thin mapping onto these:
``xmr train --config cfg.json --set loss.alpha=0.7``.
``xmr train --print-config`` prints the full skeleton with defaults. The resolved config is
saved as ``config.json`` next to every model and checkpoint.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

from xmr.errors import ConfigError
from xmr.models.config import ModelConfig
from xmr.objectives.config import LossConfig
from xmr.utils.config import ConfigBase
from xmr.utils.validation import check_choice, check_device_name, check_int, check_number


@dataclass
class DataConfig(ConfigBase):
    """Which data to train on (see :mod:`xmr.data.sources` for names, paths and layouts)."""

    dataset: str = "debian-deps"  #: registry name, or a path: a folder (xc, sparse, npz, tsv, lf or prepared layout) or one .tsv / XC BoW file
    root: Optional[str] = None  #: where prepared datasets and converted copies live ($XMR_DATA or ~/xmr_data)
    valid_fraction: float = 0.05  #: held-out part of the training rows for periodic evaluation
    test_fraction: float = 0.2  #: debian-deps and single-file datasets: the seeded train/test split
    split_seed: int = 0  #: debian-deps and single-file datasets
    format: Optional[str] = None  #: force a folder's layout: xc, sparse, npz, tsv, lf (None: detect)
    min_df: int = 1  #: text datasets (tsv, lf): TfidfVectorizer min_df, fit on the training split
    prop_a: Optional[float] = None  #: propensity constant A (None: the dataset's own, else 0.55)
    prop_b: Optional[float] = None  #: propensity constant B (None: the dataset's own, else 1.5)

    def validate(self, prefix: str = "data.") -> None:
        check_number(prefix + "valid_fraction", self.valid_fraction, 0.0, 1.0, hi_open=True)
        check_number(prefix + "test_fraction", self.test_fraction, 0.0, 1.0, True, True)


@dataclass
class MinerConfig(ConfigBase):
    """Hard negatives from a FAISS index over the student's label table (DESIGN.md §6)."""

    k: int = 32  #: shortlist size per query
    num_negatives: int = 16  #: sampled from the shortlist (None/0 = keep all)
    refresh_every: int = 100  #: steps between index rebuilds (staleness)
    skip_top: int = 0  #: ranks skipped at the top (likely false negatives)
    #: the FAISS index: "auto" (HNSW32 below 100k labels per rank, IVF{nlist},SQ8 with
    #: nprobe 2 above: xmr.negatives.miner.auto_index) or a factory string
    factory: str = "auto"
    #: build each refreshed index in a background thread from a snapshot of W taken at the
    #: refresh step t; it is used from step t + swap_lag (the training thread waits for it
    #: there), so results depend on the step numbers only (xmr.negatives.miner)
    async_refresh: bool = False
    swap_lag: int = 1  #: steps from a snapshot to its index's first use (1..refresh_every)
    build_threads: int = 0  #: FAISS threads of the background build (0 = the caller's count)
    #: IVF lists (factories with "{nlist}", e.g. "IVF{nlist},Flat"; 0 = about 4·sqrt(L))
    nlist: int = 0
    nprobe: int = 0  #: IVF lists searched per query (0 = the index default, max(32, nlist/64))
    ef_search: int = 0  #: HNSW search breadth (0 = the index default, 128)
    #: search each distinct query row of a batch once (same negatives, a shorter search)
    dedup_queries: bool = True

    def index_params(self) -> dict:
        """The LabelIndex parameters these settings give (unset ones left to the index)."""
        out = {}
        if self.nlist:
            out["nlist"] = self.nlist
        if self.nprobe:
            out["nprobe"] = self.nprobe
        if self.ef_search:
            out["efSearch"] = self.ef_search
        return out

    def validate(self, prefix: str = "miner.") -> None:
        check_int(prefix + "k", self.k, 1)
        if self.num_negatives is not None:
            check_int(prefix + "num_negatives", self.num_negatives, 0)
        check_int(prefix + "refresh_every", self.refresh_every, 1)
        check_int(prefix + "skip_top", self.skip_top, 0)
        check_int(prefix + "swap_lag", self.swap_lag, 1)
        if self.async_refresh and self.swap_lag > self.refresh_every:
            raise ConfigError(f"{prefix}swap_lag: expected at most {prefix}refresh_every="
                              f"{self.refresh_every} with {prefix}async_refresh, got "
                              f"{self.swap_lag}")
        check_int(prefix + "build_threads", self.build_threads, 0)
        from xmr.index.label_index import FACTORY_ALIASES

        factory = FACTORY_ALIASES.get(self.factory, self.factory)
        for name, needs, what in (("nlist", "{nlist}", "an IVF factory with {nlist}"),
                                  ("nprobe", "IVF", "an IVF factory"),
                                  ("ef_search", "HNSW", "an HNSW factory")):
            check_int(prefix + name, getattr(self, name), 0)
            if getattr(self, name) and self.factory == "auto":
                raise ConfigError(f"{prefix}{name}: applies to {what}; {prefix}factory 'auto' "
                                  f"picks the index by the label count, so set {prefix}factory "
                                  f"too")
            if getattr(self, name) and needs not in str(factory):
                raise ConfigError(f"{prefix}{name}: applies to {what}, got {prefix}factory "
                                  f"{self.factory!r}")
        if not isinstance(self.dedup_queries, bool):
            raise ConfigError(f"{prefix}dedup_queries: expected true or false, got "
                              f"{self.dedup_queries!r}")


@dataclass
class OptimConfig(ConfigBase):
    epochs: int = 5
    batch_size: int = 256
    lr_encoder: float = 5e-3  #: Adam on the encoder (SparseAdam on the input bag)
    lr_table: float = 0.03  #: row-wise Adagrad on the label table (touches only used rows)
    full_softmax_chunk: int = 65536  #: labels per chunk of the exact softmax
    #: decoupled weight decay of the encoder (AdamW, Loshchilov & Hutter ICLR 2019; on the
    #: sparse input bag applied to the rows a step touches)
    weight_decay: float = 0.0
    #: decoupled weight decay of the label rows a step touches (row-wise Adagrad)
    table_weight_decay: float = 0.0
    #: with model.dtype = "bfloat16": row-wise Adagrad keeps fp32 master rows and updates them,
    #: so that small updates are not rounded away (4 more bytes per table entry, also in the
    #: checkpoint); false updates the bf16 rows in place (xmr.models.optim). No effect in fp32
    table_master_weights: bool = True
    #: learning-rate schedule after the warm-up: "constant", "linear" (to lr_final_ratio at the
    #: last step) or "cosine" (Loshchilov & Hutter, SGDR, ICLR 2017, one cycle)
    schedule: str = "constant"
    warmup_fraction: float = 0.0  #: share of all steps with a linear warm-up from 0
    lr_final_ratio: float = 0.0  #: the learning rate at the last step over the base rate

    def validate(self, prefix: str = "optim.") -> None:
        check_int(prefix + "epochs", self.epochs, 1)
        check_int(prefix + "batch_size", self.batch_size, 1)
        check_number(prefix + "lr_encoder", self.lr_encoder, 0.0, lo_open=True)
        check_number(prefix + "lr_table", self.lr_table, 0.0, lo_open=True)
        check_int(prefix + "full_softmax_chunk", self.full_softmax_chunk, 1)
        check_number(prefix + "weight_decay", self.weight_decay, 0.0)
        check_number(prefix + "table_weight_decay", self.table_weight_decay, 0.0)
        check_choice(prefix + "schedule", self.schedule, ("constant", "linear", "cosine"))
        check_number(prefix + "warmup_fraction", self.warmup_fraction, 0.0, 1.0)
        check_number(prefix + "lr_final_ratio", self.lr_final_ratio, 0.0, 1.0)


@dataclass
class TrainConfig(ConfigBase):
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    miner: MinerConfig = field(default_factory=MinerConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    teacher: Optional[str] = None  #: path of a teacher top-K store (needed when loss.alpha > 0 or teacher negatives)
    seed: int = 0
    eval_every: int = 1  #: epochs between evaluations on the held-out rows (0 = never)
    checkpoint_every: int = 0  #: steps between checkpoints (0 = end of each epoch only)
    #: stop after this many evaluations without a better held-out score (0 = never) and, with
    #: held-out rows, end with the weights of the best evaluation (early stopping, as in
    #: Prechelt, *Early Stopping — But When?*, 1998); the checkpoint keeps the best state
    early_stopping_patience: int = 2
    early_stopping_metric: str = "P@1"  #: the held-out metric that early stopping watches
    restore_best: bool = True  #: end with the best evaluated weights (needs eval_every > 0)
    threads: int = 0  #: torch intra-op threads (0 = leave torch's default)
    device: str = "auto"  #: "auto" (cuda when available), "cpu", "cuda", "cuda:1", ...

    _JSON_WHAT = "a JSON object of config sections"

    def validate(self, prefix: str = "") -> "TrainConfig":
        """Check every value's range (``KEY: expected X, got Y`` as :class:`ConfigError`);
        :meth:`from_dict` calls it, so a config read from JSON or ``--set`` is always checked.
        The loss section's values are checked when it is resolved (a ``None`` is the preset's)."""
        super().validate(prefix)  # the sections
        check_int(prefix + "seed", self.seed, 0)
        check_int(prefix + "eval_every", self.eval_every, 0)
        check_int(prefix + "checkpoint_every", self.checkpoint_every, 0)
        check_int(prefix + "early_stopping_patience", self.early_stopping_patience, 0)
        if not (isinstance(self.early_stopping_metric, str) and "@" in self.early_stopping_metric):
            raise ConfigError(f"{prefix}early_stopping_metric: expected a metric name such as "
                              f"P@1, nDCG@5 or PSP@1, got {self.early_stopping_metric!r}")
        check_int(prefix + "threads", self.threads, 0)
        check_device_name(prefix + "device", self.device)
        return self
