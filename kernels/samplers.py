"""Negative samplers: uniform, log-uniform (Zipf) and alias-method draws, with try counts.

Every kernel draws from Numba's Mersenne-Twister, seeded inside the call, so a draw is a pure
function of its arguments. Numba's ``np.random.random()`` reproduces the stream of
``np.random.RandomState(seed).random_sample()``, which is what the ``*_ref`` functions use: the
kernels and their references return *identical* ids for the same seed.

Sampling *with* replacement returns ``m`` ids (duplicates possible) and ``tries == m``.
Sampling *without* replacement (``unique=True``) draws with replacement and rejects repeats
until ``m`` distinct ids are held (the scheme of TensorFlow's ``log_uniform_candidate_sampler``
with ``unique=True``); it returns the number of draws ``tries`` = T it needed, so that the
expected count of label j is ``E[count_j] = 1 - (1 - q_j)^T`` (DESIGN.md §5). If ``max_tries``
is reached first, the returned ``n_out < m`` tells the caller (the wrapper raises).

Proposals (DESIGN.md §6):

- uniform: ``q_k = 1/L``;
- log-uniform (Zipf): ``q_k = log((k+2)/(k+1)) / log(L+1)``, drawn by inversion:
  ``k = floor((L+1)^u) - 1`` with ``u ~ U[0,1)``;
- arbitrary ``q`` (e.g. unigram^β of label counts) by Walker's alias method, table built once
  with Vose's O(L) algorithm (Vose 1991, *A linear algorithm for generating random numbers with
  a given distribution*, IEEE TSE 17(9)); each draw uses two uniforms (column, then coin).
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit

__all__ = [
    "uniform_sample", "uniform_sample_ref",
    "log_uniform_sample", "log_uniform_sample_ref",
    "alias_setup", "alias_setup_ref",
    "alias_sample", "alias_sample_ref",
]


# ----------------------------------------------------------------------------------------------
# a small open-addressing set of int64 ids, for rejection of repeats (no L-sized array)
# ----------------------------------------------------------------------------------------------

@njit(cache=True)
def _set_capacity(m):
    cap = 16
    while cap < 2 * m:
        cap *= 2
    return cap


@njit(cache=True)
def _set_insert(table, key):
    """Insert ``key`` (>= 0) into ``table`` (int64, -1 = empty, power-of-two size).

    Returns True if the key was new.
    """
    mask = table.shape[0] - 1
    h = (np.uint64(key) * np.uint64(0x9E3779B97F4A7C15)) >> np.uint64(17)
    i = np.int64(h & np.uint64(mask))
    while True:
        k = table[i]
        if k == key:
            return False
        if k == -1:
            table[i] = key
            return True
        i = (i + 1) & mask


# ----------------------------------------------------------------------------------------------
# per-proposal single draws (shared by the with/without-replacement loops)
# ----------------------------------------------------------------------------------------------

@njit(cache=True)
def _draw_uniform(num_labels):
    k = np.int64(np.random.random() * num_labels)
    return min(k, num_labels - 1)


@njit(cache=True)
def _draw_log_uniform(log_l1, num_labels):
    k = np.int64(math.floor(math.exp(np.random.random() * log_l1))) - 1
    return min(max(k, 0), num_labels - 1)


@njit(cache=True)
def _draw_alias(prob, alias):
    n = prob.shape[0]
    k = min(np.int64(np.random.random() * n), n - 1)
    if np.random.random() < prob[k]:
        return k
    return alias[k]


# ----------------------------------------------------------------------------------------------
# kernels
# ----------------------------------------------------------------------------------------------

@njit(cache=True)
def uniform_sample(num_labels, m, unique, seed, max_tries):
    """Draw ``m`` ids uniformly from ``[0, num_labels)``.

    Returns ``(ids i64[n_out], n_out, tries)``; ``n_out == m`` unless ``unique`` and
    ``max_tries`` draws did not yield ``m`` distinct ids.
    """
    np.random.seed(seed)
    out = np.empty(m, dtype=np.int64)
    if not unique:
        for i in range(m):
            out[i] = _draw_uniform(num_labels)
        return out, m, m
    table = np.full(_set_capacity(m), -1, dtype=np.int64)
    n = 0
    tries = 0
    while n < m and tries < max_tries:
        k = _draw_uniform(num_labels)
        tries += 1
        if _set_insert(table, k):
            out[n] = k
            n += 1
    return out[:n], n, tries


@njit(cache=True)
def log_uniform_sample(num_labels, m, unique, seed, max_tries):
    """Draw ``m`` ids from the log-uniform (Zipf) proposal over ``[0, num_labels)``.

    ``P(k) = log((k+2)/(k+1)) / log(L+1)``; returns ``(ids, n_out, tries)`` as
    :func:`uniform_sample`.
    """
    np.random.seed(seed)
    log_l1 = math.log(num_labels + 1.0)
    out = np.empty(m, dtype=np.int64)
    if not unique:
        for i in range(m):
            out[i] = _draw_log_uniform(log_l1, num_labels)
        return out, m, m
    table = np.full(_set_capacity(m), -1, dtype=np.int64)
    n = 0
    tries = 0
    while n < m and tries < max_tries:
        k = _draw_log_uniform(log_l1, num_labels)
        tries += 1
        if _set_insert(table, k):
            out[n] = k
            n += 1
    return out[:n], n, tries


@njit(cache=True)
def alias_setup(q):
    """Build Walker's alias table for the distribution ``q`` (f64[L], sums to 1).

    Returns ``(prob f64[L], alias i64[L])``: a draw picks column k uniformly, keeps k with
    probability ``prob[k]`` and otherwise returns ``alias[k]``. Vose's stable O(L) variant.
    """
    n = q.shape[0]
    prob = np.empty(n, dtype=np.float64)
    alias = np.arange(n).astype(np.int64)
    scaled = q * n
    small = np.empty(n, dtype=np.int64)
    large = np.empty(n, dtype=np.int64)
    ns = 0
    nl = 0
    for i in range(n):
        if scaled[i] < 1.0:
            small[ns] = i
            ns += 1
        else:
            large[nl] = i
            nl += 1
    while ns > 0 and nl > 0:
        ns -= 1
        s = small[ns]
        nl -= 1
        g = large[nl]
        prob[s] = scaled[s]
        alias[s] = g
        scaled[g] = (scaled[g] + scaled[s]) - 1.0
        if scaled[g] < 1.0:
            small[ns] = g
            ns += 1
        else:
            large[nl] = g
            nl += 1
    # leftovers are 1 up to rounding
    for i in range(nl):
        prob[large[i]] = 1.0
    for i in range(ns):
        prob[small[i]] = 1.0
    return prob, alias


@njit(cache=True)
def alias_sample(prob, alias, m, unique, seed, max_tries):
    """Draw ``m`` ids from an alias table (see :func:`alias_setup`).

    Returns ``(ids, n_out, tries)`` as :func:`uniform_sample`.
    """
    np.random.seed(seed)
    out = np.empty(m, dtype=np.int64)
    if not unique:
        for i in range(m):
            out[i] = _draw_alias(prob, alias)
        return out, m, m
    table = np.full(_set_capacity(m), -1, dtype=np.int64)
    n = 0
    tries = 0
    while n < m and tries < max_tries:
        k = _draw_alias(prob, alias)
        tries += 1
        if _set_insert(table, k):
            out[n] = k
            n += 1
    return out[:n], n, tries


# ----------------------------------------------------------------------------------------------
# references (same random stream, plain numpy / Python; exact agreement expected)
# ----------------------------------------------------------------------------------------------

def _unique_loop_ref(draw, m, max_tries):
    seen: set = set()
    out = []
    tries = 0
    while len(out) < m and tries < max_tries:
        k = draw()
        tries += 1
        if k not in seen:
            seen.add(k)
            out.append(k)
    return np.asarray(out, dtype=np.int64), len(out), tries


def uniform_sample_ref(num_labels, m, unique, seed, max_tries):
    """Reference of :func:`uniform_sample` (``RandomState`` stream)."""
    rs = np.random.RandomState(seed)
    draw = lambda: min(int(rs.random_sample() * num_labels), num_labels - 1)  # noqa: E731
    if not unique:
        ids = np.minimum((rs.random_sample(m) * num_labels).astype(np.int64), num_labels - 1)
        return ids, m, m
    return _unique_loop_ref(draw, m, max_tries)


def log_uniform_sample_ref(num_labels, m, unique, seed, max_tries):
    """Reference of :func:`log_uniform_sample` (``RandomState`` stream, libm ``exp``)."""
    rs = np.random.RandomState(seed)
    log_l1 = math.log(num_labels + 1.0)

    def draw():
        k = int(math.floor(math.exp(rs.random_sample() * log_l1))) - 1
        return min(max(k, 0), num_labels - 1)

    if not unique:
        return np.asarray([draw() for _ in range(m)], dtype=np.int64), m, m
    return _unique_loop_ref(draw, m, max_tries)


def alias_setup_ref(q):
    """Reference of :func:`alias_setup` (same algorithm with Python lists)."""
    q = np.asarray(q, dtype=np.float64)
    n = len(q)
    scaled = q * n
    prob = np.empty(n)
    alias = np.arange(n, dtype=np.int64)
    small = [i for i in range(n) if scaled[i] < 1.0]
    large = [i for i in range(n) if scaled[i] >= 1.0]
    while small and large:
        s = small.pop()
        g = large.pop()
        prob[s] = scaled[s]
        alias[s] = g
        scaled[g] = (scaled[g] + scaled[s]) - 1.0
        (small if scaled[g] < 1.0 else large).append(g)
    for i in large + small:
        prob[i] = 1.0
    return prob, alias


def alias_sample_ref(prob, alias, m, unique, seed, max_tries):
    """Reference of :func:`alias_sample` (``RandomState`` stream)."""
    rs = np.random.RandomState(seed)
    n = len(prob)
    if not unique:
        u = rs.random_sample(2 * m).reshape(m, 2)  # per draw: column, then coin
        k = np.minimum((u[:, 0] * n).astype(np.int64), n - 1)
        return np.where(u[:, 1] < prob[k], k, alias[k]).astype(np.int64), m, m

    def draw():
        k = min(int(rs.random_sample() * n), n - 1)
        return k if rs.random_sample() < prob[k] else int(alias[k])

    return _unique_loop_ref(draw, m, max_tries)
