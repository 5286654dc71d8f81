"""Typed training configuration: nested dataclasses that round-trip to JSON.

The CLI is a thin mapping onto these: ``xmr train --config cfg.json --set loss.alpha=0.7``.
``xmr train --print-config`` prints the full skeleton with defaults. The resolved config is
saved as ``config.json`` next to every model and checkpoint.
"""

from __future__ import annotations

import dataclasses
import json
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional

from xmr.errors import ConfigError
from xmr.objectives.config import LossConfig


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


@dataclass
class ModelConfig:
    """The student (or teacher) architecture: encoder φ(x) ∈ R^dim and the label table."""

    dim: int = 256
    hidden: List[int] = field(default_factory=list)  #: MLP widths after the embedding bag
    residual: bool = False
    normalize: bool = False  #: L2-normalise φ(x)
    dropout: float = 0.0
    #: input (feature) dropout: each stored feature of a training row is dropped with this
    #: probability and the kept ones scaled by 1/(1 − p) — the input regularisation that
    #: Guo et al. (NeurIPS 2019, *Breaking the Glass Ceiling*) find embedding-based XMC needs
    input_dropout: float = 0.0
    sparse_input: bool = True  #: sparse gradients + SparseAdam for the input bag (cost independent of D)
    num_shards: int = 1  #: label shards within this process
    label_bias: bool = False


@dataclass
class MinerConfig:
    """Hard negatives from a FAISS index over the student's label table (DESIGN.md §6)."""

    k: int = 32  #: shortlist size per query
    num_negatives: int = 16  #: sampled from the shortlist (None/0 = keep all)
    refresh_every: int = 100  #: steps between index rebuilds (staleness)
    skip_top: int = 0  #: ranks skipped at the top (likely false negatives)
    factory: str = "HNSW32"


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
    #: learning-rate schedule after the warm-up: "constant", "linear" (to lr_final_ratio at the
    #: last step) or "cosine" (Loshchilov & Hutter, SGDR, ICLR 2017, one cycle)
    schedule: str = "constant"
    warmup_fraction: float = 0.0  #: share of all steps with a linear warm-up from 0
    lr_final_ratio: float = 0.0  #: the learning rate at the last step over the base rate


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

    # ------------------------------------------------------------------ JSON round trip
    def to_dict(self) -> Dict[str, Any]:
        return dataclasses.asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2) + "\n"

    @classmethod
    def from_dict(cls, d: Dict[str, Any]) -> "TrainConfig":
        return _from_dict(cls, d, "")

    @classmethod
    def from_json(cls, path) -> "TrainConfig":
        return cls.from_dict(json.loads(Path(path).read_text()))

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


def _from_dict(cls, d: Dict[str, Any], prefix: str):
    if not isinstance(d, dict):
        raise ConfigError(f"config section {prefix or '<root>'!r} must be an object, got {type(d).__name__}")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = set(d) - set(fields)
    if unknown:
        raise ConfigError(f"unknown config key(s) {sorted(prefix + k for k in unknown)}; "
                         f"valid keys: {sorted(prefix + k for k in fields)}")
    hints = typing.get_type_hints(cls)
    kwargs = {}
    for name, value in d.items():
        tp = hints[name]
        if dataclasses.is_dataclass(tp):
            kwargs[name] = _from_dict(tp, value, f"{prefix}{name}.")
        else:
            kwargs[name] = _coerce(tp, value, prefix + name)
    return cls(**kwargs)


def _coerce(tp, value, key):
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin is typing.Union and type(None) in args:
        if value is None:
            return None
        tp = next(a for a in args if a is not type(None))
        origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin in (list, List):
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"config key {key!r}: expected a list, got {value!r}")
        return [_coerce(args[0], v, key) for v in value] if args else list(value)
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(f"config key {key!r}: expected true or false, got {value!r}")
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"config key {key!r}: expected an integer, got {value!r}")
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"config key {key!r}: expected a number, got {value!r}")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"config key {key!r}: expected a string, got {value!r}")
        return value
    return value
