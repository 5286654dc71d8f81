"""Streaming frequency estimator for in-batch negatives (Yi et al. 2019, RecSys,
*Sampling-bias-corrected neural modeling for large corpus item recommendations*, §4, Alg. 2).

Each id is hashed into one of ``H`` buckets. Two arrays hold, per bucket,

- ``last_step i64[H]`` (the paper's A): the last training step at which the bucket was seen;
- ``gap f64[H]`` (the paper's B): an exponential moving average of the number of steps between
  two sightings, ``B <- (1 - alpha) * B + alpha * (t - A)``.

The probability that an id occurs in a batch is estimated as ``p = 1 / B``, and in-batch
negatives get the logit offset ``b = log p`` (DESIGN.md §5). Conventions chosen here:

- steps are counted from 1; ``last_step == 0`` means "never seen";
- the first sighting at step t sets ``B = t`` (the gap since the start) instead of averaging
  with an arbitrary initial value;
- an id repeated within one batch is counted once (the second sighting at the same step would
  add a zero gap): the estimate is the probability of *appearing in a batch*;
- ``p = 0`` for a bucket never seen.

Hashing: ``bucket = splitmix64(id) mod H`` (the finaliser of Steele et al.'s SplitMix64, all
arithmetic mod 2^64); with H at least a few times the number of distinct ids, collisions are
rare.
"""

from __future__ import annotations

import numpy as np
from numba import njit

__all__ = ["freq_bucket", "freq_update", "freq_update_ref", "freq_estimate", "freq_estimate_ref",
           "freq_bucket_ref"]

_C0 = 0x9E3779B97F4A7C15
_C1 = 0xBF58476D1CE4E5B9
_C2 = 0x94D049BB133111EB


@njit(cache=True)
def freq_bucket(label_id, num_buckets):
    """Bucket of one id (see module docstring)."""
    z = np.uint64(label_id) + np.uint64(_C0)
    z = (z ^ (z >> np.uint64(30))) * np.uint64(_C1)
    z = (z ^ (z >> np.uint64(27))) * np.uint64(_C2)
    z = z ^ (z >> np.uint64(31))
    return np.int64(z % np.uint64(num_buckets))


@njit(cache=True)
def freq_update(last_step, gap, ids, step, alpha):
    """Update ``last_step``/``gap`` (in place) with the ids of the batch seen at ``step`` (>= 1)."""
    nb = last_step.shape[0]
    for i in range(ids.shape[0]):
        h = freq_bucket(ids[i], nb)
        a = last_step[h]
        if a == step:
            continue  # already counted in this batch
        if a == 0:
            gap[h] = float(step)
        else:
            gap[h] = (1.0 - alpha) * gap[h] + alpha * float(step - a)
        last_step[h] = step


@njit(cache=True)
def freq_estimate(last_step, gap, ids):
    """Estimated per-batch occurrence probability ``p = 1/B`` of each id (0 if never seen)."""
    nb = last_step.shape[0]
    out = np.empty(ids.shape[0], dtype=np.float64)
    for i in range(ids.shape[0]):
        h = freq_bucket(ids[i], nb)
        out[i] = 1.0 / gap[h] if last_step[h] > 0 else 0.0
    return out


def freq_bucket_ref(ids, num_buckets):
    """Vectorised reference of :func:`freq_bucket` (uint64 arithmetic wraps like the kernel)."""
    z = np.asarray(ids, dtype=np.int64).astype(np.uint64) + np.uint64(_C0)
    z = (z ^ (z >> np.uint64(30))) * np.uint64(_C1)
    z = (z ^ (z >> np.uint64(27))) * np.uint64(_C2)
    z = z ^ (z >> np.uint64(31))
    return (z % np.uint64(num_buckets)).astype(np.int64)


def freq_update_ref(last_step, gap, ids, step, alpha):
    """Reference of :func:`freq_update` (Python loop over the batch, in place)."""
    for h in freq_bucket_ref(ids, len(last_step)):
        a = last_step[h]
        if a == step:
            continue
        gap[h] = float(step) if a == 0 else (1.0 - alpha) * gap[h] + alpha * float(step - a)
        last_step[h] = step


def freq_estimate_ref(last_step, gap, ids):
    """Reference of :func:`freq_estimate`."""
    h = freq_bucket_ref(ids, len(last_step))
    seen = last_step[h] > 0
    out = np.zeros(len(h))
    out[seen] = 1.0 / gap[h[seen]]
    return out
