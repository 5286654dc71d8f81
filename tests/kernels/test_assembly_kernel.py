"""Candidate-assembly kernels against their vectorised references, and their rules by hand: the
library's sparse layout, and the dense-layout oracle (tests/_oracles/dense_assembly.py) that it
must densify to bit for bit."""

import itertools

import numpy as np
import pytest
from _helpers import random_csr

from _oracles.dense_assembly import assemble_candidates, assemble_candidates_ref

from xmr.kernels.assembly import (assemble_candidates_sparse, assemble_candidates_sparse_ref,
                                  sparse_to_dense)
from xmr.negatives.candidates import MASK_VALUE


def _case(rng, random_csr, B, L, has_t, has_h, m):
    pool = np.unique(np.concatenate([rng.integers(0, L, 30), [0, L - 1]]))
    p_ptr, p_ids = random_csr(rng, B, L, 4, pool=pool)
    if has_t:
        t_ptr, t_ids = random_csr(rng, B, L, 5, pool=pool)
        t_log = rng.normal(0, 3, len(t_ids)).astype(np.float32)
    else:
        t_ptr, t_ids, t_log = np.zeros(B + 1, np.int64), np.zeros(0, np.int64), np.zeros(0, np.float32)
    if has_h:
        h_ptr, h_ids = random_csr(rng, B, L, 3, pool=pool)
    else:
        h_ptr, h_ids = np.zeros(B + 1, np.int64), np.zeros(0, np.int64)
    r_ids = rng.choice(pool, m).astype(np.int64)
    lec_of = {int(i): float(rng.normal(-2, 2)) for i in pool}  # one log E[count] per id
    r_lec = np.array([lec_of[int(i)] for i in r_ids], np.float64)
    return p_ptr, p_ids, t_ptr, t_ids, t_log, h_ptr, h_ids, r_ids, r_lec


SWITCHES = list(itertools.product([False, True], repeat=3))  # correct_pos, share, teacher_cand


@pytest.mark.parametrize("B,L,m", [(1, 1, 0), (1, 1, 3), (5, 3, 4), (17, 60, 25), (40, 5000, 100)])
def test_matches_reference(B, L, m):
    rng = np.random.default_rng(B + L + m)
    for has_t, has_h in [(False, False), (True, False), (True, True), (False, True)]:
        args = _case(rng, random_csr, B, L, has_t, has_h, m)
        for alpha, tau in [(0.0, 1.0), (0.3, 0.5), (1.0, 2.0)]:
            for cp, share, tc in SWITCHES:
                got = assemble_candidates(B, *args, alpha, tau, cp, share, tc, MASK_VALUE)
                ref = assemble_candidates_ref(B, *args, alpha, tau, cp, share, tc, MASK_VALUE)
                names = ["cand", "is_sampled", "bias", "targets", "pos_cols", "t_cols", "h_cols"]
                for name, g, r in zip(names, got, ref):
                    if name == "targets":
                        np.testing.assert_allclose(g, r, rtol=1e-6, atol=1e-7, err_msg=name)
                    else:
                        np.testing.assert_array_equal(g, r, err_msg=name)
                sums = got[3].sum(1)
                assert np.all((np.abs(sums - 1) < 1e-5) | (sums == 0))
                assert np.all(got[3][got[2] == MASK_VALUE] == 0)  # no target on a masked cell
                assert len(np.unique(got[0])) == len(got[0])


def test_rules_by_hand():
    m_ = MASK_VALUE
    # row 0: P={4}, T={4: 0.0, 6: log 3}; row 1: P={}, H={8}; R = 6, 9, 9, 4 with log E = -1
    args = (np.array([0, 1, 1]), np.array([4]),
            np.array([0, 2, 2]), np.array([4, 6]), np.array([0.0, np.log(3.0)], np.float32),
            np.array([0, 0, 1]), np.array([8]),
            np.array([6, 9, 9, 4]), np.array([-1.0, -1.0, -1.0, -1.0]))
    cand, is_s, bias, tgt, pc, tc_, hc = assemble_candidates(2, *args, 0.5, 1.0, False, False,
                                                             True, MASK_VALUE)
    assert cand.tolist() == [4, 6, 8, 9]
    assert is_s.tolist() == [True, True, False, True]
    s9 = np.float32(1.0 + np.log(2.0))  # log count - log E = log 2 + 1
    np.testing.assert_array_equal(bias, np.array([[0, 0, m_, s9], [1, 1, 0, s9]], np.float32))
    np.testing.assert_allclose(tgt, [[0.5 + 0.5 * 0.25, 0.5 * 0.75, 0, 0], [0, 0, 0, 0]],
                               rtol=1e-6)
    # correct_positives: the positive 4 was drawn once -> offset 1; sharing unmasks row 0 col 2
    _, _, bias, _, _, _, _ = assemble_candidates(2, *args, 0.5, 1.0, True, True, True, MASK_VALUE)
    np.testing.assert_array_equal(bias[0], np.array([1, 0, 0, s9], np.float32))


SPARSE_NAMES = ["cand", "is_sampled", "col_bias", "ex_rows", "ex_cols", "ex_vals", "tg_indptr",
                "tg_cols", "tg_vals", "pos_cols", "t_cols", "h_cols"]


@pytest.mark.parametrize("B,L,m", [(1, 1, 0), (1, 1, 3), (5, 3, 4), (17, 60, 25), (40, 5000, 100)])
def test_sparse_matches_dense_and_reference(B, L, m):
    """Sparse kernel: densified it equals the dense oracle kernel bit for bit; it equals its
    vectorised reference (targets up to fp32 rounding); its layout invariants hold."""
    rng = np.random.default_rng(B + L + m)
    for has_t, has_h in [(False, False), (True, False), (True, True), (False, True)]:
        args = _case(rng, random_csr, B, L, has_t, has_h, m)
        p_ptr, _, t_ptr, _, _, h_ptr = args[:6]
        for alpha, tau in [(0.0, 1.0), (0.3, 0.5), (1.0, 2.0)]:
            for cp, share, tc in SWITCHES:
                dense = assemble_candidates(B, *args, alpha, tau, cp, share, tc, MASK_VALUE)
                got = assemble_candidates_sparse(B, *args, alpha, tau, cp, share, tc, MASK_VALUE)
                ref = assemble_candidates_sparse_ref(B, *args, alpha, tau, cp, share, tc,
                                                     MASK_VALUE)
                for name, g, r in zip(SPARSE_NAMES, got, ref):
                    assert g.dtype == r.dtype, name
                    if name == "tg_vals":
                        np.testing.assert_allclose(g, r, rtol=1e-6, atol=1e-7, err_msg=name)
                    else:
                        np.testing.assert_array_equal(g, r, err_msg=name)
                cand, _, col_bias, er, ec, ev, tp, tcols, tvals = got[:9]
                bias, targets = sparse_to_dense(B, *got[2:9])
                np.testing.assert_array_equal(bias, dense[2])
                np.testing.assert_array_equal(targets, dense[3])
                # exceptions: sorted unique cells that differ from the column default, at most
                # one per own P/T/H entry (the per-row visibility list when not sharing)
                key = er * len(cand) + ec
                assert np.all(np.diff(key) > 0)
                assert np.all(ev != col_bias[ec])
                n_own = p_ptr[-1] + h_ptr[-1] + (t_ptr[-1] if tc else 0)
                assert len(er) <= n_own
                # targets: CSR with ascending columns per row and nonzero values only
                assert tp[0] == 0 and tp[-1] == len(tcols) and np.all(np.diff(tp) >= 0)
                rows = np.repeat(np.arange(B), np.diff(tp))
                assert np.all(np.diff(rows * len(cand) + tcols) > 0)
                assert np.all(tvals != 0)


def test_sparse_rules_by_hand():
    """The example of test_rules_by_hand in the sparse layout."""
    m_ = MASK_VALUE
    args = (np.array([0, 1, 1]), np.array([4]),
            np.array([0, 2, 2]), np.array([4, 6]), np.array([0.0, np.log(3.0)], np.float32),
            np.array([0, 0, 1]), np.array([8]),
            np.array([6, 9, 9, 4]), np.array([-1.0, -1.0, -1.0, -1.0]))
    s9 = np.float32(1.0 + np.log(2.0))
    (cand, is_s, col_bias, er, ec, ev, tp, tcols, tvals, *_) = assemble_candidates_sparse(
        2, *args, 0.5, 1.0, False, False, True, MASK_VALUE)
    assert cand.tolist() == [4, 6, 8, 9]
    # columns 4, 6 sampled (offset 1), 8 deterministic (hidden by default: no sharing), 9 twice
    np.testing.assert_array_equal(col_bias, np.array([1, 1, m_, s9], np.float32))
    # row 0 owns 4 (P) and 6 (T): their random draws are absorbed; row 1 sees its H column 8
    assert list(zip(er.tolist(), ec.tolist(), ev.tolist())) == [(0, 0, 0.0), (0, 1, 0.0),
                                                               (1, 2, 0.0)]
    assert tp.tolist() == [0, 2, 2] and tcols.tolist() == [0, 1]
    np.testing.assert_allclose(tvals, [0.5 + 0.5 * 0.25, 0.5 * 0.75], rtol=1e-6)
    # sharing: column 8 visible to everyone (default 0): only the absorbed draws remain;
    # correct_positives: row 0's positive 4 keeps its offset, so only column 6 is an exception
    (_, _, col_bias, er, ec, ev, *_) = assemble_candidates_sparse(
        2, *args, 0.5, 1.0, True, True, True, MASK_VALUE)
    np.testing.assert_array_equal(col_bias, np.array([1, 1, 0, s9], np.float32))
    assert list(zip(er.tolist(), ec.tolist(), ev.tolist())) == [(0, 1, 0.0)]
