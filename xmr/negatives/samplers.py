"""Negative samplers with exact expected counts.

A sampler draws ``m`` label ids from a proposal ``q`` over ``[0, L)`` and returns, for every
draw, ``log E[count_j]`` — the offset ``b_j`` of the sampled-logit correction (DESIGN.md §5):

- with replacement: ``E[count_j] = m * q_j`` (duplicates are returned as separate draws;
  :func:`xmr.negatives.candidates.assemble_batch` collapses them and adds ``log count_j``);
- without replacement (``unique=True``; rejection of repeats until ``m`` distinct ids, T tries):
  ``E[count_j] = 1 - (1 - q_j)^T``, computed stably as ``-expm1(T * log1p(-q_j))``.

Proposals: :class:`UniformSampler`, :class:`LogUniformSampler` (Zipf,
``q_k = log((k+2)/(k+1)) / log(L+1)``, best when ids are sorted by decreasing frequency) and
:class:`UnigramSampler` (``q ∝ count^beta``, alias method, table built once). Pick one by name
with :func:`make_sampler`.

Randomness: each call takes a ``numpy.random.Generator`` (or an int seed); a 32-bit seed is drawn
from it for the Numba kernel, so a run is reproducible from its generator's seed.
"""

from __future__ import annotations

import logging
import math
from typing import Optional, Union

import numpy as np

from xmr.utils.validation import check_int

logger = logging.getLogger(__name__)

__all__ = [
    "Sampler", "UniformSampler", "LogUniformSampler", "UnigramSampler", "make_sampler",
    "SAMPLERS", "log_expected_count",
]

RngLike = Union[np.random.Generator, int, None]


def _seed(rng: RngLike) -> int:
    if isinstance(rng, np.random.Generator):
        return int(rng.integers(0, 2**32 - 1))
    if rng is None:
        return int(np.random.default_rng().integers(0, 2**32 - 1))
    if isinstance(rng, (int, np.integer)) and not isinstance(rng, bool):
        return int(np.random.default_rng(int(rng)).integers(0, 2**32 - 1))
    raise TypeError(f"rng: expected a numpy.random.Generator, an int seed or None, "
                    f"got {type(rng).__name__}")


def log_expected_count(q: np.ndarray, num_tries: int, unique: bool) -> np.ndarray:
    """``log E[count]`` for draw probabilities ``q`` (f64[n]) after ``num_tries`` draws.

    With replacement (``unique=False``): ``log(T q)``; without: ``log(-expm1(T log1p(-q)))``.
    Returns f64[n] (``-inf`` where ``q == 0``).
    """
    q = np.asarray(q, dtype=np.float64)
    with np.errstate(divide="ignore"):
        if not unique:
            return np.log(float(num_tries)) + np.log(q)
        return np.log(-np.expm1(float(num_tries) * np.log1p(-q)))


class Sampler:
    """Base class: a proposal over ``num_labels`` ids with exact per-id probabilities."""

    name = "base"

    def __init__(self, num_labels: int):
        self.num_labels = check_int("num_labels", num_labels, 1)

    # subclasses implement these two
    def probability(self, ids: np.ndarray) -> np.ndarray:
        """Proposal probability ``q`` of each id (f64)."""
        raise NotImplementedError

    def _draw(self, m: int, unique: bool, seed: int, max_tries: int):
        raise NotImplementedError

    def support_size(self) -> int:
        """Number of ids with ``q > 0`` (the most distinct ids a unique draw can return)."""
        return self.num_labels

    def sample(self, m: int, rng: RngLike = None, *, unique: bool = False,
               max_tries: Optional[int] = None, return_tries: bool = False):
        """Draw ``m`` ids; return ``(ids i64[m], log_expected_count f64[m])``.

        ``unique=True`` samples without replacement by rejection; ``max_tries`` (default
        ``1000 * m + 10000``) bounds the number of draws. With ``return_tries`` the number of
        draws T is returned as a third element.
        """
        m = check_int("m", m, 0)
        if unique and m > self.support_size():
            raise ValueError(f"m: expected at most {self.support_size()} distinct ids "
                             f"(labels with q > 0) when unique=True, got {m}")
        if max_tries is None:
            max_tries = 1000 * m + 10000
        ids, n_out, tries = self._draw(m, bool(unique), _seed(rng), int(max_tries))
        if n_out < m:
            raise RuntimeError(f"{self.name} sampler: drew only {n_out} distinct ids of the {m} "
                               f"requested in max_tries={max_tries} draws; lower m or raise "
                               f"max_tries")
        lec = log_expected_count(self.probability(ids), tries, bool(unique))
        if return_tries:
            return ids, lec, int(tries)
        return ids, lec

    def __repr__(self) -> str:
        return f"{type(self).__name__}(num_labels={self.num_labels})"


class UniformSampler(Sampler):
    """``q_k = 1 / L``."""

    name = "uniform"

    def probability(self, ids):
        return np.full(len(ids), 1.0 / self.num_labels)

    def _draw(self, m, unique, seed, max_tries):
        from xmr.kernels.samplers import uniform_sample

        return uniform_sample(self.num_labels, m, unique, seed, max_tries)


class LogUniformSampler(Sampler):
    """Log-uniform (Zipf) proposal ``q_k = log((k+2)/(k+1)) / log(L+1)``.

    Matches a long-tailed label distribution when ids are sorted by decreasing frequency.
    """

    name = "log-uniform"

    def probability(self, ids):
        k = np.asarray(ids, dtype=np.float64)
        return np.log1p(1.0 / (k + 1.0)) / math.log(self.num_labels + 1.0)

    def _draw(self, m, unique, seed, max_tries):
        from xmr.kernels.samplers import log_uniform_sample

        return log_uniform_sample(self.num_labels, m, unique, seed, max_tries)


class UnigramSampler(Sampler):
    """Unigram^beta proposal ``q_k ∝ counts_k^beta`` from label counts (alias method).

    ``beta = 1`` is the label frequency, ``beta = 0.75`` the word2vec smoothing, ``beta = 0``
    uniform over all labels (numpy's 0^0 = 1, so zero counts are included too).
    The alias table is built once, at construction (O(L)).
    """

    name = "unigram"

    def __init__(self, counts, beta: float = 1.0):
        counts = np.asarray(counts, dtype=np.float64)
        if counts.ndim != 1 or counts.size == 0:
            raise ValueError(f"counts: expected a non-empty 1-d array, got shape {counts.shape}")
        if not np.all(np.isfinite(counts)) or np.any(counts < 0):
            raise ValueError("counts: expected finite non-negative values, got "
                             f"min={counts.min()!r}")
        if not math.isfinite(beta) or beta < 0:
            raise ValueError(f"beta: expected a finite value >= 0, got {beta!r}")
        super().__init__(len(counts))
        w = counts ** beta
        total = w.sum()
        if total <= 0:
            raise ValueError("counts: expected at least one positive count, got all zeros")
        self.beta = float(beta)
        self.q_ = w / total
        self._support = int(np.count_nonzero(self.q_))
        from xmr.kernels.samplers import alias_setup

        self.alias_prob_, self.alias_ = alias_setup(np.ascontiguousarray(self.q_))

    def probability(self, ids):
        return self.q_[np.asarray(ids, dtype=np.int64)]

    def support_size(self):
        return self._support

    def _draw(self, m, unique, seed, max_tries):
        from xmr.kernels.samplers import alias_sample

        return alias_sample(self.alias_prob_, self.alias_, m, unique, seed, max_tries)

    def __repr__(self) -> str:
        return f"UnigramSampler(num_labels={self.num_labels}, beta={self.beta})"


SAMPLERS = {"uniform": UniformSampler, "log-uniform": LogUniformSampler,
            "unigram": UnigramSampler}


def make_sampler(name: str, num_labels: Optional[int] = None, *, counts=None,
                 beta: float = 1.0) -> Sampler:
    """Build a sampler by name: ``uniform``, ``log-uniform`` (need ``num_labels``) or
    ``unigram`` (needs ``counts``; ``beta`` its exponent)."""
    if name not in SAMPLERS:
        raise ValueError(f"sampler: expected one of {sorted(SAMPLERS)}, got {name!r}")
    if name == "unigram":
        if counts is None:
            raise ValueError("sampler 'unigram': expected counts (label frequencies), got None")
        if num_labels is not None and num_labels != len(counts):
            raise ValueError(f"num_labels: expected len(counts)={len(counts)}, got {num_labels}")
        return UnigramSampler(counts, beta)
    return SAMPLERS[name](num_labels)
