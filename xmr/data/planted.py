"""Planted (clustered) label embeddings and queries near them: the test data of label search.

Recall floors of approximate indexes are measured on these (never on pure noise, where every
neighbour is nearly as good as any other and recall says little).
"""

from __future__ import annotations

import math
from typing import Tuple

import numpy as np


def planted_labels(num_labels: int, dim: int, *, num_centres: int = 256, noise: float = 1.0,
                   seed: int = 0) -> np.ndarray:
    """Clustered label embeddings ``f32[L, d]`` with planted neighbourhoods, for recall tests.

    ``num_centres`` unit-norm centres drawn uniformly on the sphere; label j is its centre plus
    Gaussian noise of expected norm ``noise`` (so ``noise=1`` makes clusters overlap and the
    within-cluster order depends on the noise: a non-trivial but structured search problem).
    """
    rng = np.random.default_rng(seed)
    C = rng.standard_normal((num_centres, dim))
    C = (C / np.linalg.norm(C, axis=1, keepdims=True)).astype(np.float32)
    assign = rng.integers(0, num_centres, num_labels)
    W = np.empty((num_labels, dim), dtype=np.float32)
    scale = np.float32(noise / math.sqrt(dim))
    for a in range(0, num_labels, 1 << 16):  # float32 blocks: 1M x 256 stays at 1 GB
        b = min(num_labels, a + (1 << 16))
        W[a:b] = C[assign[a:b]] + scale * rng.standard_normal((b - a, dim), dtype=np.float32)
    return W


def planted_queries(W: np.ndarray, num_queries: int, *, noise: float = 0.3,
                    seed: int = 1) -> Tuple[np.ndarray, np.ndarray]:
    """Queries near random labels: ``(Q f32[n, d], source i64[n])`` with ``Q = W[source] + e``."""
    rng = np.random.default_rng(seed)
    src = rng.integers(0, W.shape[0], num_queries)
    Q = W[src] + noise * rng.standard_normal((num_queries, W.shape[1])) / math.sqrt(W.shape[1])
    return Q.astype(np.float32), src.astype(np.int64)
