"""The model's architecture settings: :class:`ModelConfig`, the ``model`` section of a
:class:`~xmr.train.config.TrainConfig` and of a saved model's ``config.json``.

Plain data (no torch): importing this module imports only the config base and the validation
helpers.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import List

from xmr.errors import ConfigError
from xmr.utils.config import ConfigBase
from xmr.utils.validation import check_choice, check_int, check_number

#: accepted values of :attr:`ModelConfig.encoder`
ENCODERS = ("sparse", "dense")
#: accepted values of :attr:`ModelConfig.dtype`
DTYPES = ("float32", "bfloat16")


@dataclass
class ModelConfig(ConfigBase):
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
    #: the input φ reads: "sparse" (CSR rows, e.g. TF-IDF, through an embedding bag:
    #: :class:`~xmr.models.encoders.SparseEncoder`) or "dense" (dense feature rows f32[n, D],
    #: e.g. precomputed sentence embeddings, through a Linear:
    #: :class:`~xmr.models.encoders.DenseEncoder`; sparse_input and input_dropout do not apply)
    encoder: str = "sparse"
    #: storage and matmul dtype of the label table: "float32" or "bfloat16" (bf16 matmuls, fp32
    #: log-sum-exp and softmax; meant for GPUs). The encoder stays float32; the trainer's
    #: row-wise Adagrad keeps fp32 accumulators and, by default, fp32 master rows
    #: (optim.table_master_weights, :mod:`xmr.models.optim`); scores are returned as float32.
    dtype: str = "float32"

    def validate(self, prefix: str = "model.") -> "ModelConfig":
        check_int(prefix + "dim", self.dim, 1)
        for i, h in enumerate(self.hidden):
            check_int(f"{prefix}hidden[{i}]", h, 1)
        check_number(prefix + "dropout", self.dropout, 0.0, 1.0, hi_open=True)
        check_number(prefix + "input_dropout", self.input_dropout, 0.0, 1.0, hi_open=True)
        check_int(prefix + "num_shards", self.num_shards, 1)
        check_choice(prefix + "encoder", self.encoder, ENCODERS)
        check_choice(prefix + "dtype", self.dtype, DTYPES)
        if self.encoder == "dense" and self.input_dropout > 0:
            raise ConfigError(f"{prefix}input_dropout: the dense encoder has no input (feature) "
                              f"dropout; expected 0, got {self.input_dropout}")
        return self
