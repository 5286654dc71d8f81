"""Sampler kernels against their references (identical random streams) and their proposals."""

import math

import numpy as np
import pytest

from xmr.kernels import samplers as K

CASES = [(1, 0), (1, 5), (2, 7), (17, 40), (1000, 300), (1000, 1000)]


@pytest.mark.parametrize("unique", [False, True])
@pytest.mark.parametrize("num_labels,m", CASES)
def test_uniform_matches_ref(num_labels, m, unique):
    if unique and m > num_labels:
        m = num_labels
    for seed in (0, 7, 2**32 - 2):
        got = K.uniform_sample(num_labels, m, unique, seed, 10**6)
        ref = K.uniform_sample_ref(num_labels, m, unique, seed, 10**6)
        np.testing.assert_array_equal(got[0], ref[0])
        assert got[1:] == ref[1:]
        assert got[1] == m


@pytest.mark.parametrize("unique", [False, True])
@pytest.mark.parametrize("num_labels,m", CASES)
def test_log_uniform_matches_ref(num_labels, m, unique):
    if unique:
        m = min(m, num_labels, 300)
    for seed in (0, 11):
        got = K.log_uniform_sample(num_labels, m, unique, seed, 10**7)
        ref = K.log_uniform_sample_ref(num_labels, m, unique, seed, 10**7)
        np.testing.assert_array_equal(got[0], ref[0])
        assert got[1:] == ref[1:]


def _zipf_q(num_labels, rng):
    q = 1.0 / (1.0 + rng.permutation(num_labels)) ** 1.1
    q[rng.random(num_labels) < 0.1] = 0.0  # some impossible labels
    q[0] = q[-1] = 0.05                   # and the ends possible
    return q / q.sum()


@pytest.mark.parametrize("num_labels", [1, 2, 50, 3000])
def test_alias_setup_matches_ref_and_encodes_q(num_labels):
    q = _zipf_q(num_labels, np.random.default_rng(num_labels)) if num_labels > 2 else \
        np.full(num_labels, 1.0 / num_labels)
    prob, alias = K.alias_setup(q)
    prob_r, alias_r = K.alias_setup_ref(q)
    np.testing.assert_array_equal(prob, prob_r)
    np.testing.assert_array_equal(alias, alias_r)
    # the table's implied distribution: keep k with prob[k], else go to alias[k]
    implied = prob.copy()
    np.add.at(implied, alias, 1.0 - prob)
    np.testing.assert_allclose(implied / num_labels, q, atol=1e-12)


@pytest.mark.parametrize("unique", [False, True])
def test_alias_sample_matches_ref(unique):
    q = _zipf_q(500, np.random.default_rng(3))
    prob, alias = K.alias_setup(q)
    for m in (0, 1, 100, 400):
        got = K.alias_sample(prob, alias, m, unique, 5, 10**7)
        ref = K.alias_sample_ref(prob, alias, m, unique, 5, 10**7)
        np.testing.assert_array_equal(got[0], ref[0])
        assert got[1:] == ref[1:]
        assert np.all(q[got[0]] > 0)


def _chi2_ok(ids, q, num_draws):
    """Pearson chi-square of the empirical counts against q, bins with expected count >= 5."""
    counts = np.bincount(ids, minlength=len(q))
    exp = num_draws * q
    keep = exp >= 5
    stat = (((counts - exp) ** 2)[keep] / exp[keep]).sum() + \
        ((counts[~keep].sum() - exp[~keep].sum()) ** 2 / max(exp[~keep].sum(), 1e-9))
    dof = int(keep.sum())
    # mean dof, sd sqrt(2 dof): 6 sd is a bound a correct sampler never fails in practice
    return stat < dof + 6 * math.sqrt(2 * dof) + 10


def test_samplers_follow_their_proposals():
    n = 200_000
    L = 300
    ids, _, _ = K.uniform_sample(L, n, False, 1, 0)
    assert _chi2_ok(ids, np.full(L, 1.0 / L), n)
    assert ids.min() == 0 and ids.max() == L - 1
    ids, _, _ = K.log_uniform_sample(L, n, False, 2, 0)
    k = np.arange(L)
    assert _chi2_ok(ids, np.log((k + 2.0) / (k + 1.0)) / math.log(L + 1.0), n)
    assert ids.min() == 0 and ids.max() == L - 1
    q = _zipf_q(L, np.random.default_rng(0))
    prob, alias = K.alias_setup(q)
    ids, _, _ = K.alias_sample(prob, alias, n, False, 3, 0)
    assert _chi2_ok(ids, q, n)
    assert ids.min() == 0 and ids.max() == L - 1 and np.all(q[ids] > 0)


def test_unique_sampling_returns_distinct_ids_and_tries():
    ids, n, tries = K.log_uniform_sample(1000, 500, True, 9, 10**7)
    assert n == 500 and len(np.unique(ids)) == 500 and tries >= 500
    ids, n, tries = K.uniform_sample(10, 10, True, 9, 10**6)
    assert sorted(ids.tolist()) == list(range(10))


def test_unique_sampling_stops_at_max_tries():
    ids, n, tries = K.uniform_sample(1000, 1000, True, 0, 50)
    assert tries == 50 and n == len(ids) <= 50
