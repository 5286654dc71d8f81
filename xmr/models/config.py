"""The model's architecture settings: :class:`ModelConfig`, the ``model`` section of a
:class:`~xmr.train.config.TrainConfig` and of a saved model's ``config.json``.

Plain data (no torch): importing this module imports only the validation helpers.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import List

from xmr.utils.validation import check_int, check_number


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

    def validate(self, prefix: str = "model.") -> None:
        check_int(prefix + "dim", self.dim, 1)
        for i, h in enumerate(self.hidden):
            check_int(f"{prefix}hidden[{i}]", h, 1)
        check_number(prefix + "dropout", self.dropout, 0.0, 1.0, hi_open=True)
        check_number(prefix + "input_dropout", self.input_dropout, 0.0, 1.0, hi_open=True)
        check_int(prefix + "num_shards", self.num_shards, 1)
