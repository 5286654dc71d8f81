"""Sampler wrappers: reproducibility, exact log expected counts, errors."""

import math

import numpy as np
import pytest

from xmr.negatives import (LogUniformSampler, UniformSampler, UnigramSampler,
                           log_expected_count, make_sampler)


def _all_samplers(L=500):
    counts = np.random.default_rng(0).integers(0, 50, L).astype(float)
    return [UniformSampler(L), LogUniformSampler(L), UnigramSampler(counts, 0.75)]


@pytest.mark.parametrize("unique", [False, True])
def test_reproducible_and_exact_log_expected_count(unique):
    for s in _all_samplers():
        a = s.sample(200, np.random.default_rng(42), unique=unique, return_tries=True)
        b = s.sample(200, np.random.default_rng(42), unique=unique, return_tries=True)
        np.testing.assert_array_equal(a[0], b[0])
        ids, lec, tries = a
        assert ids.dtype == np.int64 and ids.shape == (200,) and lec.shape == (200,)
        assert ids.min() >= 0 and ids.max() < s.num_labels
        q = s.probability(ids)
        if unique:
            assert len(np.unique(ids)) == 200 and tries >= 200
            np.testing.assert_allclose(np.exp(lec), 1 - (1 - q) ** tries, rtol=1e-9)
        else:
            assert tries == 200
            np.testing.assert_allclose(lec, np.log(200 * q), rtol=1e-12)
        c = s.sample(200, np.random.default_rng(43), unique=unique)
        assert not np.array_equal(c[0], ids)


def test_probabilities_sum_to_one():
    for s in _all_samplers(300):
        assert abs(s.probability(np.arange(300)).sum() - 1) < 1e-12


def test_log_expected_count_is_stable_for_tiny_q():
    q = np.array([1e-18, 1e-9, 0.5, 1.0])
    got = log_expected_count(q, 1000, unique=True)
    np.testing.assert_allclose(got[:2], np.log(1000 * q[:2]), rtol=1e-6)
    assert got[2] == pytest.approx(math.log(1 - 0.5 ** 1000)) and got[3] == 0.0


def test_unique_expected_counts_match_inclusion_frequencies():
    """E[count_j] = 1 − (1 − q_j)^T: the empirical inclusion frequency over many draws of a
    fixed T-try budget matches it (T is nearly constant for m << L)."""
    s = LogUniformSampler(200)
    rng = np.random.default_rng(1)
    incl = np.zeros(200)
    tries = []
    for _ in range(2000):
        ids, _, t = s.sample(20, rng, unique=True, return_tries=True)
        incl[ids] += 1
        tries.append(t)
    q = s.probability(np.arange(200))
    pred = np.mean([1 - (1 - q) ** t for t in tries], axis=0)
    np.testing.assert_allclose(incl / 2000, pred, atol=0.03)


def test_errors():
    with pytest.raises(ValueError) as e:
        make_sampler("zipf", 10)
    assert str(e.value) == "sampler: expected one of ['log-uniform', 'uniform', 'unigram'], got 'zipf'"
    with pytest.raises(ValueError) as e:
        UniformSampler(10).sample(11, 0, unique=True)
    assert str(e.value) == ("m: expected at most 10 distinct ids (labels with q > 0) when "
                            "unique=True, got 11")
    with pytest.raises(ValueError) as e:
        UnigramSampler([1.0, -2.0])
    assert str(e.value) == "counts: expected finite non-negative values, got min=np.float64(-2.0)"
    with pytest.raises(ValueError) as e:
        make_sampler("unigram", 3)
    assert str(e.value) == "sampler 'unigram': expected counts (label frequencies), got None"
    with pytest.raises(TypeError) as e:
        UniformSampler(5).sample(2, "seed")
    assert str(e.value) == "rng: expected a numpy.random.Generator, an int seed or None, got str"
    with pytest.raises(RuntimeError, match="drew only"):
        UnigramSampler([1e6] + [1e-9] * 50).sample(40, 0, unique=True, max_tries=100)
