"""The copies-kept sampled-logit correction oracle (tests/_oracles/correction.py, used by
tests/negatives/test_candidates.py): its kernel against its vectorised reference, and its rules by
hand."""

import numpy as np
import pytest

from _helpers import random_csr
from _oracles.correction import MASK_VALUE, correct_logits, correct_logits_ref


def _random_case(rng, random_csr, B, L, C):
    # columns: some deterministic ids, then sampled copies drawn from a small pool (duplicates,
    # accidental hits with the positives, ids 0 and L-1)
    pool = np.unique(np.concatenate([rng.integers(0, L, 12), [0, L - 1]]))
    n_det = C // 3
    cand = np.concatenate([rng.choice(pool, n_det), rng.choice(pool, C - n_det)]).astype(np.int64)
    is_s = np.zeros(C, bool)
    is_s[n_det:] = True
    is_s[rng.random(C) < 0.1] ^= True  # interleave the kinds
    off = rng.normal(0.0, 3.0, C).astype(np.float32)
    indptr, pos = random_csr(rng, B, L, 4, pool=pool)
    buf = rng.normal(0.0, 1.0, (B, C)).astype(np.float32)
    return buf, cand, off, is_s, indptr, pos


@pytest.mark.parametrize("correct_positives", [False, True])
@pytest.mark.parametrize("B,L,C", [(1, 1, 1), (1, 5, 0), (6, 2, 9), (13, 50, 40), (40, 1000, 128)])
def test_matches_reference(B, L, C, correct_positives):
    rng = np.random.default_rng(B * 1000 + C)
    for _ in range(5):
        if C == 0:
            buf, cand = np.zeros((B, 0), np.float32), np.zeros(0, np.int64)
            off, is_s = np.zeros(0, np.float32), np.zeros(0, bool)
            indptr, pos = random_csr(rng, B, L, 3)
        else:
            buf, cand, off, is_s, indptr, pos = _random_case(rng, random_csr, B, L, C)
        ref = correct_logits_ref(buf, cand, off, is_s, indptr, pos, correct_positives, MASK_VALUE)
        got = buf.copy()
        correct_logits(got, cand, off, is_s, indptr, pos, correct_positives, MASK_VALUE)
        np.testing.assert_array_equal(got, ref)


def test_rules_by_hand():
    #            col: 0  1  2  3  4  5
    cand = np.array([7, 3, 7, 3, 9, 0], np.int64)
    is_s = np.array([0, 0, 1, 1, 1, 1], bool)
    off = np.array([0, 0, 2, 3, 4, 5], np.float32)
    # row 0: positive 7 (deterministic col 0; sampled copy col 2 is an accidental hit)
    # row 1: positive 9, present only as a sampled column (col 4 is its positive column)
    # row 2: no positive
    indptr = np.array([0, 1, 2, 2], np.int64)
    pos = np.array([7, 9], np.int64)
    m = MASK_VALUE
    buf = np.zeros((3, 6), np.float32)
    correct_logits(buf, cand, off, is_s, indptr, pos, False, MASK_VALUE)
    np.testing.assert_array_equal(buf, [[0, 0, m, -3, -4, -5],
                                        [0, 0, -2, -3, 0, -5],
                                        [0, 0, -2, -3, -4, -5]])
    buf = np.zeros((3, 6), np.float32)
    correct_logits(buf, cand, off, is_s, indptr, pos, True, MASK_VALUE)
    assert buf[1, 4] == -4 and buf[0, 0] == 0 and buf[0, 2] == m


def test_fully_masked_row_stays_finite():
    import torch

    cand = np.array([5, 5, 5], np.int64)
    is_s = np.ones(3, bool)
    buf = np.zeros((1, 3), np.float32)
    correct_logits(buf, cand, np.zeros(3, np.float32), is_s, np.array([0, 1]),
                   np.array([5]), False, MASK_VALUE)
    assert buf.tolist() == [[0, MASK_VALUE, MASK_VALUE]]
    z = torch.tensor(np.full((1, 3), MASK_VALUE, np.float32) * 1000.0)
    assert torch.isfinite(torch.logsumexp(z, 1)).all()
