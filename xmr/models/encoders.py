"""Encoders φ(x) ∈ R^d feeding the label table (DESIGN.md §4).

* :class:`SparseEncoder` — sparse TF-IDF input through ``nn.EmbeddingBag(mode="sum")`` with
  per-sample weights (φ₀(x) = Σ_f x_f e_f, the bag never densifies x), then optional MLP layers
  with optional residual connections (as in the DeepXML/Astec family) and optional L2
  normalisation. Batches come straight from a CSR matrix via :func:`csr_to_bag`.
* :class:`DenseEncoder` — the same MLP head on dense input features (e.g. precomputed
  sentence embeddings).

Layer layout for ``hidden=(h1, …, hk)`` and output ``dim``: the input maps to ``h1`` (the bag
for the sparse encoder, a Linear for the dense one); each next width is reached by
``Linear → ReLU → Dropout`` (with ``residual=True``, blocks whose input and output widths agree
add their input: x + block(x)); a final ``Linear(hk, dim)`` gives φ. Without ``hidden`` the input
maps directly to ``dim``.
"""

from __future__ import annotations

from typing import Sequence, Tuple

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from xmr.utils.validation import check_int


def csr_to_bag(X, rows) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Rows of a CSR matrix as EmbeddingBag inputs, without densifying.

    Args:
        X: scipy.sparse CSR matrix [n, D] (anything with ``indptr``, ``indices``, ``data`` and
            ``shape``; duplicate entries are summed by the bag).
        rows: int[B] row ids (any order, repeats allowed).

    Returns:
        ``(input i64[nnz_B], offsets i64[B], weights f32[nnz_B])``: the feature ids and values of
        the selected rows concatenated, and where each row's bag starts (the
        ``include_last_offset=False`` convention of ``nn.EmbeddingBag``). Empty rows are empty
        bags (they encode to zeros before any bias).
    """
    for attr in ("indptr", "indices", "data", "shape"):
        if not hasattr(X, attr):
            raise TypeError(f"X: expected a scipy.sparse CSR matrix, got {type(X).__name__}")
    if getattr(X, "format", "csr") != "csr":
        raise TypeError(f"X: expected a scipy.sparse CSR matrix, got format {X.format!r}")
    rows = np.asarray(rows)
    if rows.ndim != 1 or (rows.size and not np.issubdtype(rows.dtype, np.integer)):
        raise ValueError(f"rows: expected a 1-d integer array, got shape {list(rows.shape)} "
                         f"of dtype {rows.dtype}")
    rows = rows.astype(np.int64, copy=False)
    n = X.shape[0]
    if rows.size and (rows.min() < 0 or rows.max() >= n):
        bad = rows[(rows < 0) | (rows >= n)][0]
        raise ValueError(f"rows: expected row ids in [0, {n}), got {int(bad)}")
    indptr = np.asarray(X.indptr, dtype=np.int64)
    starts = indptr[rows]
    lens = indptr[rows + 1] - starts
    offsets = np.zeros(rows.size, dtype=np.int64)
    if rows.size > 1:
        np.cumsum(lens[:-1], out=offsets[1:])
    # position p of bag b reads X at starts[b] + (p − offsets[b])
    pos = np.arange(int(lens.sum()), dtype=np.int64) - np.repeat(offsets - starts, lens)
    inp = np.asarray(X.indices)[pos].astype(np.int64)
    w = np.asarray(X.data)[pos].astype(np.float32)
    return torch.from_numpy(inp), torch.from_numpy(offsets), torch.from_numpy(w)


class _MLPHead(nn.Module):
    """Layers after the input map (see module docstring); ``hidden=()`` leaves only the norm."""

    def __init__(self, hidden: Sequence[int], dim: int, residual: bool, normalize: bool,
                 dropout: float):
        super().__init__()
        self.blocks = nn.ModuleList(nn.Linear(a, b) for a, b in zip(hidden[:-1], hidden[1:]))
        self.out = nn.Linear(hidden[-1], dim) if hidden else None
        self.residual, self.normalize = residual, normalize
        self.drop = nn.Dropout(dropout) if dropout > 0 else nn.Identity()

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        if self.out is not None:  # h is the first hidden layer's pre-activation [B, h1]
            h = self.drop(F.relu(h))
            for lin in self.blocks:
                y = self.drop(F.relu(lin(h)))
                h = h + y if (self.residual and y.shape == h.shape) else y
            h = self.out(h)  # [B, d]
        if self.normalize:
            h = F.normalize(h, dim=-1)
        return h


def _check_arch(dim: int, hidden, dropout: float) -> Tuple[int, ...]:
    hidden = tuple(int(h) for h in hidden)
    if dim < 1 or any(h < 1 for h in hidden):
        raise ValueError(f"dim, hidden: expected positive widths, got dim={dim}, hidden={hidden}")
    if not 0.0 <= dropout < 1.0:
        raise ValueError(f"dropout: expected a value in [0, 1), got {dropout}")
    return hidden


class SparseEncoder(nn.Module):
    """φ(x) for sparse (TF-IDF) input: EmbeddingBag(sum, per-sample weights) + optional MLP.

    Args:
        num_features: D, the input vocabulary size.
        dim: d, the output embedding size (must match the label table).
        hidden: widths of hidden layers between the bag and the output (empty: the bag outputs
            ``dim`` directly).
        residual: add a block's input to its output where the widths agree.
        normalize: L2-normalise φ (cosine scores).
        dropout: dropout after each hidden activation.
        sparse: the bag's weight gets sparse gradients (only the features of the batch), so a
            sparse optimizer (``torch.optim.SparseAdam``) makes a step's cost independent of D —
            what TF-IDF inputs with millions of features need.

    ``forward(input i64[nnz], offsets i64[B], per_sample_weights f32[nnz]) -> f32[B, d]``;
    :meth:`encode_csr` takes a CSR matrix and row ids.
    """

    def __init__(self, num_features: int, dim: int, hidden: Sequence[int] = (),
                 residual: bool = False, normalize: bool = False, dropout: float = 0.0,
                 sparse: bool = False):
        super().__init__()
        hidden = _check_arch(dim, hidden, dropout)
        check_int("num_features", num_features, 1)
        self.num_features, self.dim = int(num_features), int(dim)
        self.bag = nn.EmbeddingBag(num_features, hidden[0] if hidden else dim, mode="sum",
                                   sparse=sparse)
        self.bag_bias = nn.Parameter(torch.zeros(hidden[0] if hidden else dim))
        self.head = _MLPHead(hidden, dim, residual, normalize, dropout)

    def forward(self, input: torch.Tensor, offsets: torch.Tensor,
                per_sample_weights: torch.Tensor) -> torch.Tensor:
        if input.numel() and (int(input.min()) < 0 or int(input.max()) >= self.num_features):
            bad = input[(input < 0) | (input >= self.num_features)][0]
            raise ValueError(f"input: expected feature ids in [0, {self.num_features}), "
                             f"got {int(bad)}")
        h = self.bag(input, offsets, per_sample_weights=per_sample_weights) + self.bag_bias
        return self.head(h)

    def encode_csr(self, X, rows) -> torch.Tensor:
        """φ of rows ``rows`` of CSR matrix ``X`` [n, D] → f32[len(rows), d]."""
        dev = self.bag.weight.device
        inp, off, w = csr_to_bag(X, rows)
        return self(inp.to(dev), off.to(dev), w.to(dev))


class DenseEncoder(nn.Module):
    """φ(x) for dense input features x ∈ R^in_dim: Linear + optional MLP (same options).

    ``forward(x f32[B, in_dim]) -> f32[B, d]``.
    """

    def __init__(self, in_dim: int, dim: int, hidden: Sequence[int] = (), residual: bool = False,
                 normalize: bool = False, dropout: float = 0.0):
        super().__init__()
        hidden = _check_arch(dim, hidden, dropout)
        check_int("in_dim", in_dim, 1)
        self.in_dim, self.dim = int(in_dim), int(dim)
        self.inp = nn.Linear(in_dim, hidden[0] if hidden else dim)
        self.head = _MLPHead(hidden, dim, residual, normalize, dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 2 or x.shape[1] != self.in_dim:
            raise ValueError(f"x: expected shape [B, {self.in_dim}], got {list(x.shape)}")
        return self.head(self.inp(x))
