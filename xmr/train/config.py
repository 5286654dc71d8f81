"""Typed training configuration: nested dataclasses that round-trip to JSON.

The CLI is a thin mapping onto these: ``xmr train --config cfg.json --set loss.alpha=0.7``.
``xmr train --print-config`` prints the full skeleton with defaults. The resolved config is
saved as ``config.json`` next to every model and checkpoint.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional

from xmr.errors import ConfigError
from xmr.models.config import ModelConfig
from xmr.objectives.config import LossConfig
from xmr.utils.validation import check_device_name, check_int, check_number, from_dict, read_json


@dataclass
class DataConfig:
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
class MinerConfig:
    """Hard negatives from a FAISS index over the student's label table (DESIGN.md §6)."""

    k: int = 32  #: shortlist size per query
    num_negatives: int = 16  #: sampled from the shortlist (None/0 = keep all)
    refresh_every: int = 100  #: steps between index rebuilds (staleness)
    skip_top: int = 0  #: ranks skipped at the top (likely false negatives)
    factory: str = "HNSW32"
    #: build each refreshed index in a background thread from a snapshot of W taken at the
    #: refresh step t; it is used from step t + swap_lag (the training thread waits for it
    #: there), so results depend on the step numbers only (xmr.negatives.miner)
    async_refresh: bool = False
    swap_lag: int = 1  #: steps from a snapshot to its index's first use (1..refresh_every)
    build_threads: int = 0  #: FAISS threads of the background build (0 = the caller's count)

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


@dataclass
class OptimConfig:
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
        if self.schedule not in ("constant", "linear", "cosine"):
            raise ConfigError(f"{prefix}schedule: expected one of constant, linear, cosine, "
                              f"got {self.schedule!r}")
        check_number(prefix + "warmup_fraction", self.warmup_fraction, 0.0, 1.0)
        check_number(prefix + "lr_final_ratio", self.lr_final_ratio, 0.0, 1.0)


@dataclass
class TrainConfig:
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

    def validate(self) -> "TrainConfig":
        """Check every value's range (``KEY: expected X, got Y`` as :class:`ConfigError`);
        :meth:`from_dict` calls it, so a config read from JSON or ``--set`` is always checked."""
        for name in ("data", "model", "miner", "optim"):
            getattr(self, name).validate(name + ".")
        check_int("seed", self.seed, 0)
        check_int("eval_every", self.eval_every, 0)
        check_int("checkpoint_every", self.checkpoint_every, 0)
        check_int("early_stopping_patience", self.early_stopping_patience, 0)
        if not (isinstance(self.early_stopping_metric, str) and "@" in self.early_stopping_metric):
            raise ConfigError(f"early_stopping_metric: expected a metric name such as P@1, "
                              f"nDCG@5 or PSP@1, got {self.early_stopping_metric!r}")
        check_int("threads", self.threads, 0)
        check_device_name("device", self.device)
        return self

    # ------------------------------------------------------------------ JSON round trip
    def to_dict(self) -> Dict[str, Any]:
        return dataclasses.asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2) + "\n"

    @classmethod
    def from_dict(cls, d: Dict[str, Any]) -> "TrainConfig":
        return from_dict(cls, d).validate()

    @classmethod
    def from_json(cls, path) -> "TrainConfig":
        """Read a config file; errors name the file (and the line, for bad JSON)."""
        d = read_json(path, "a JSON object of config sections")
        try:
            return cls.from_dict(d)
        except ConfigError as exc:
            raise ConfigError(f"{path}: {exc}") from None

    def with_overrides(self, assignments: List[str]) -> "TrainConfig":
        """Apply ``key=value`` overrides (dotted keys, JSON values; bare words are strings)."""
        d = self.to_dict()
        for a in assignments:
            if "=" not in a:
                raise ConfigError(f"--set expects key=value, got {a!r}")
            key, raw = a.split("=", 1)
            node = d
            parts = key.strip().split(".")
            for p in parts[:-1]:
                if not isinstance(node.get(p), dict):
                    raise ConfigError(f"unknown config key {key!r}: {p!r} is not a section; "
                                     f"sections are {sorted(k for k, v in d.items() if isinstance(v, dict))}")
                node = node[p]
            if parts[-1] not in node:
                raise ConfigError(f"unknown config key {key!r}; valid keys here: {sorted(node)}")
            try:
                value = json.loads(raw)
            except json.JSONDecodeError:
                value = raw
            node[parts[-1]] = value
        return TrainConfig.from_dict(d)
