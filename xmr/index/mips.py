"""The MIPS→L2 reduction: inner-product search as Euclidean search over one extra coordinate.

Bachrach et al. 2014, "Speeding up the Xbox recommender system using a Euclidean transformation
for inner-product spaces", §3. With ``M >= max_j ||w_j||``::

    w' = [w, sqrt(M² − ||w||²)]   (every label row gets norm M)
    q' = [q, 0]
    ||q' − w'||² = ||q||² + M² − 2⟨q, w⟩

so for each query the L2 order of the ``w'`` is exactly the inner-product order of the ``w``,
and ``⟨q, w⟩ = (||q||² + M² − ||q' − w'||²) / 2`` recovers the score. Graph and cluster
indexes (HNSW, IVF) are built for metric spaces: on a trained label table, whose row norms
track label frequency, HNSW's 10-recall@10 under the raw inner product was 0.80 with real query
embeddings and 0.97 after this reduction (``benchmarks/results/bench_index_debian.json``), and
on planted data whose norms are carried by a direction the queries share (popularity) 0.84 vs
0.998. It is not better everywhere: when the norms vary independently of direction, raw-IP HNSW
kept the higher recall on planted data (0.99 vs 0.84 at d = 64, L = 20k).
:class:`xmr.index.LabelIndex` applies it with ``mips=True``.
"""

from __future__ import annotations

from typing import Optional

import numpy as np

#: :class:`xmr.index.LabelIndex` pads the reduced vectors with zeros to a multiple of this many
#: coordinates. FAISS's SIMD distance kernels and its scalar quantizer want dimensions that are
#: multiples of 8: at d = 256, searching ``IVF512,SQ8`` over 300k labels took 2.08 s for 256
#: queries at dim 257 and 0.24 s at dim 264 (one thread, same recall); PQ needs M to divide the
#: dimension, and 257 is prime.
MIPS_ALIGN = 8


def max_row_norm(W) -> float:
    """``max_j ||w_j||`` of ``W f32[L, d]`` (computed in float64; 0 for an empty table)."""
    W = np.asarray(W)
    return float(np.sqrt(np.einsum("ij,ij->i", W, W, dtype=np.float64).max(initial=0.0)))


def mips_pad(dim: int, align: int = MIPS_ALIGN) -> int:
    """Zero columns appended after the extra coordinate so that ``d + 1 + pad`` is a multiple
    of ``align`` (0 when ``align`` is 1 or ``d + 1`` already is one)."""
    return (-(int(dim) + 1)) % int(align)


def mips_augment(W, max_norm: Optional[float] = None, pad: int = 0) -> np.ndarray:
    """Label rows ``W f32[L, d]`` → ``f32[L, d+1+pad]``: ``[w, sqrt(M² − ||w||²), 0 … 0]``.

    ``M = max_norm``, or the largest row norm of ``W`` when None. A row longer than
    ``max_norm`` is an error (the reduction needs ``M >= ||w||``; rounding of 1e-6·M is allowed).
    ``pad`` zero columns change no distance (queries get zeros there too); see
    :data:`MIPS_ALIGN` for why they are there.
    """
    W = np.asarray(W, dtype=np.float32)
    sq = np.einsum("ij,ij->i", W, W, dtype=np.float64)
    top_sq = float(sq.max(initial=0.0))
    M_sq = top_sq if max_norm is None else float(max_norm) ** 2
    if top_sq > M_sq * (1 + 2e-6):
        raise ValueError(f"W: expected row norms <= max_norm {float(max_norm):.6g}, got "
                         f"{np.sqrt(top_sq):.6g} (row {int(np.argmax(sq))})")
    out = np.zeros((W.shape[0], W.shape[1] + 1 + int(pad)), dtype=np.float32)
    out[:, :W.shape[1]] = W
    out[:, W.shape[1]] = np.sqrt(np.maximum(M_sq - sq, 0.0))
    return out


def mips_augment_queries(Q, pad: int = 0) -> np.ndarray:
    """Queries ``Q f32[n, d]`` → ``f32[n, d+1+pad]`` with zeros after the first d coordinates."""
    Q = np.asarray(Q, dtype=np.float32)
    out = np.zeros((Q.shape[0], Q.shape[1] + 1 + int(pad)), dtype=np.float32)
    out[:, :Q.shape[1]] = Q
    return out


def mips_scores(D, Q, max_norm: float) -> np.ndarray:
    """Inner products ``f32[n, k]`` from the squared distances ``D f32[n, k]`` of the reduced
    search: ``⟨q, w⟩ = (||q||² + M² − D) / 2`` per query row of ``Q f32[n, d]``."""
    q_sq = np.einsum("ij,ij->i", Q, Q, dtype=np.float64)[:, None]
    return ((q_sq + float(max_norm) ** 2 - np.asarray(D, dtype=np.float64)) / 2).astype(
        np.float32)
