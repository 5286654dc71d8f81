"""The GLaS label-table regulariser (Guo, Reddi, Kumar et al., NeurIPS 2019, *Breaking the Glass
Ceiling for Embedding-Based Classifiers for Large Output Spaces*, §4).

Embedding-based XMC models overfit because nothing ties the label embeddings w_j to each other.
GLaS asks the Gram matrix of the label embeddings to match the labels' symmetrised conditional
co-occurrence: with A = YᵀY (training label co-occurrence) and D = diag(A),

    R(W) = ‖W Wᵀ − ½ (A D⁻¹ + D⁻¹ A)‖²_F,   i.e. per pair  (⟨w_a, w_b⟩ − ½ A_ab (1/A_aa + 1/A_bb))²

so a label's embedding has unit norm and two labels that always co-occur point the same way
(the "spread-out" regulariser of the paper). As the paper does, it is evaluated on the labels of
the batch: S = the batch's distinct positives, the mean over the |S|² pairs. Gradients reach the
table through the sparse row gather, so a row-wise optimizer touches the rows of S only.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp
import torch


class GlasRegularizer:
    """``λ · mean_{a,b∈S} (⟨w_a, w_b⟩ − T_ab)²`` over the batch's positive labels S.

    ``Y``: the training rows' labels (CSR ``[n, L]``, binary; rows held out for validation must
    be left out by the caller); ``weight``: λ.
    """

    def __init__(self, Y: sp.csr_matrix, weight: float):
        B = sp.csr_matrix(Y, dtype=np.float32)
        B.data[:] = 1.0
        self.C = sp.csr_matrix(B.T @ B)  # [L, L] co-occurrence counts
        self.diag = self.C.diagonal().astype(np.float64)
        self.weight = float(weight)

    def targets(self, labels: np.ndarray) -> np.ndarray:
        """T_SS = ½ A_ab (1/A_aa + 1/A_bb) for the (distinct) ``labels`` S, ``f32[|S|, |S|]``."""
        A = self.C[labels][:, labels].toarray().astype(np.float64)
        inv = 1.0 / np.maximum(self.diag[labels], 1.0)
        return (0.5 * A * (inv[:, None] + inv[None, :])).astype(np.float32)

    def __call__(self, table, pos_ids: np.ndarray) -> torch.Tensor:
        from xmr.models.label_table import _RowGather

        S = np.unique(np.asarray(pos_ids, dtype=np.int64))
        dev = table.weight.device
        ids = torch.from_numpy(S - table.lo).to(dev)
        W = _RowGather.apply(ids, table.weight, 1.0).float()  # [|S|, d], sparse gradient
        T = torch.from_numpy(self.targets(S)).to(dev)
        return self.weight * ((W @ W.T - T) ** 2).mean()


def glas_reference(W: torch.Tensor, Y: np.ndarray, labels: np.ndarray) -> torch.Tensor:
    """Dense reference (tests): the mean over ``labels``² of the GLaS residual², from a dense
    label matrix ``Y [n, L]`` and the full table ``W [L, d]``."""
    Yb = (np.asarray(Y) > 0).astype(np.float64)
    A = Yb.T @ Yb
    d = np.diag(A)
    T = 0.5 * (A / d[None, :] + A / d[:, None])
    S = np.unique(labels)
    Ws = W[torch.from_numpy(S)]
    R = Ws @ Ws.T - torch.as_tensor(T[np.ix_(S, S)], dtype=W.dtype)
    return (R ** 2).mean()
