"""The in-memory dataset container shared by loaders, trainers and the demo."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional, Sequence

import numpy as np
import scipy.sparse as sp


@dataclass
class XMCDataset:
    """A train/test split of a multi-label dataset.

    Attributes
    ----------
    X_trn, X_tst : ``csr_matrix float32 [n, D]`` input features (TF-IDF or other), or dense
        ``float32 [n, D]`` arrays for dense-input datasets.
    Y_trn, Y_tst : ``csr_matrix float32 [n, L]`` binary label matrices.
    label_names : optional list of L label names.
    prop_a, prop_b : Jain et al. (2016) propensity constants A, B of this dataset.
    filter_pairs : optional ``int64 [m, 2]`` (test row, label) pairs removed before scoring
        (reciprocal pairs of the LF datasets).
    """

    name: str
    X_trn: "sp.csr_matrix | np.ndarray"
    Y_trn: sp.csr_matrix
    X_tst: "sp.csr_matrix | np.ndarray"
    Y_tst: sp.csr_matrix
    label_names: Optional[Sequence[str]] = None
    prop_a: float = 0.55
    prop_b: float = 1.5
    filter_pairs: Optional[np.ndarray] = None
    info: dict = field(default_factory=dict)

    @property
    def num_labels(self) -> int:
        return int(self.Y_trn.shape[1])

    @property
    def num_features(self) -> int:
        return int(self.X_trn.shape[1])

    def stats(self) -> dict:
        """N, D, L, labels per point, points per label and the tail of label frequencies."""
        freq = np.asarray(self.Y_trn.sum(axis=0)).ravel() + np.asarray(self.Y_tst.sum(axis=0)).ravel()
        used = freq[freq > 0]
        n = self.Y_trn.shape[0] + self.Y_tst.shape[0]
        return {
            "name": self.name,
            "n_train": int(self.Y_trn.shape[0]),
            "n_test": int(self.Y_tst.shape[0]),
            "num_features": self.num_features,
            "num_labels": self.num_labels,
            "labels_per_point": float((self.Y_trn.nnz + self.Y_tst.nnz) / max(n, 1)),
            "points_per_label": float(used.mean()) if used.size else 0.0,
            "frac_labels_lt5": float((used < 5).mean()) if used.size else 0.0,
            "frac_labels_eq1": float((used == 1).mean()) if used.size else 0.0,
            "max_label_freq": int(used.max()) if used.size else 0,
        }
