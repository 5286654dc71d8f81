"""Streaming frequency estimator kernels against their references."""

import numpy as np

from xmr.kernels import freq as K


def test_bucket_matches_ref():
    ids = np.array([0, 1, 2, 3, 2**31, 2**40 + 5, 2**63 - 1], dtype=np.int64)
    for nb in (1, 7, 1000, 1 << 20):
        np.testing.assert_array_equal([K.freq_bucket(i, nb) for i in ids],
                                      K.freq_bucket_ref(ids, nb))


def test_update_and_estimate_match_ref():
    rng = np.random.default_rng(0)
    for nb in (5, 64, 4096):  # small bucket counts force collisions
        a1 = np.zeros(nb, np.int64)
        b1 = np.zeros(nb)
        a2, b2 = a1.copy(), b1.copy()
        for step in range(1, 200):
            ids = rng.integers(0, 300, size=rng.integers(0, 20)).astype(np.int64)
            if step % 7 == 0:
                ids = np.concatenate([ids, ids[:3], [0, 299]]).astype(np.int64)
            K.freq_update(a1, b1, ids, step, 0.05)
            K.freq_update_ref(a2, b2, ids, step, 0.05)
        np.testing.assert_array_equal(a1, a2)
        np.testing.assert_allclose(b1, b2, rtol=1e-12)
        q = np.arange(0, 400, dtype=np.int64)
        np.testing.assert_allclose(K.freq_estimate(a1, b1, q), K.freq_estimate_ref(a2, b2, q),
                                   rtol=1e-12)


def test_first_sighting_and_repeats_within_a_batch():
    a = np.zeros(1 << 16, np.int64)
    b = np.zeros(1 << 16)
    K.freq_update(a, b, np.array([4, 4, 4], np.int64), 3, 0.5)
    assert K.freq_estimate(a, b, np.array([4, 5], np.int64)).tolist() == [1 / 3, 0.0]
    K.freq_update(a, b, np.array([4], np.int64), 5, 0.5)  # gap 2: B = 0.5*3 + 0.5*2
    assert K.freq_estimate(a, b, np.array([4], np.int64))[0] == 1 / 2.5
