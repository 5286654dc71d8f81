"""Tests of xmr.eval.propensity: the Jain et al. (2016) formula by hand, input forms, agreement
with napkinXC's Jain_et_al_inverse_propensity, and exact error messages."""

import logging
import math

import numpy as np
import pytest
import scipy.sparse as sp

from xmr.eval import inverse_propensity, label_frequency


def test_formula_by_hand():
    # N = 100, N_l = [0, 1, 10, 100], A = 0.55, B = 1.5
    C = (math.log(100) - 1) * 2.5 ** 0.55
    expected = [1 + C * (n_l + 1.5) ** -0.55 for n_l in (0, 1, 10, 100)]
    got = inverse_propensity(np.array([0, 1, 10, 100]), n_train=100)
    assert got.dtype == np.float64
    np.testing.assert_allclose(got, expected, rtol=1e-14)
    assert np.all(np.diff(got) < 0)  # rarer labels weigh more
    # Amazon constants
    C = (math.log(100) - 1) * 3.6 ** 0.6
    np.testing.assert_allclose(inverse_propensity(np.array([7]), 100, A=0.6, B=2.6),
                               [1 + C * 9.6 ** -0.6], rtol=1e-14)


def test_matrix_and_frequency_forms_agree():
    rng = np.random.default_rng(0)
    Y = sp.random(500, 80, density=0.03, format="csr", random_state=0)
    Y.data[:] = 1.0
    freq = np.asarray((Y != 0).sum(axis=0)).ravel()
    np.testing.assert_array_equal(label_frequency(Y), freq)
    np.testing.assert_array_equal(label_frequency(Y.toarray()), freq)
    a = inverse_propensity(Y, A=0.5, B=0.4)
    np.testing.assert_allclose(a, inverse_propensity(freq, n_train=500, A=0.5, B=0.4))
    np.testing.assert_allclose(a, inverse_propensity(Y.toarray(), A=0.5, B=0.4))
    np.testing.assert_allclose(a, inverse_propensity(Y.tocsc(), A=0.5, B=0.4))
    assert rng is not None


def test_weighted_and_duplicate_entries_count_once():
    Y = sp.csr_matrix((np.array([3.0, 2.0, 0.0, 1.0]), np.array([0, 0, 1, 1]),
                       np.array([0, 2, 4])), shape=(2, 3))
    Y.has_canonical_format = False
    np.testing.assert_array_equal(label_frequency(Y), [1, 1, 0])


@pytest.mark.parametrize("AB", [(0.55, 1.5), (0.6, 2.6), (0.5, 0.4)])
def test_agrees_with_napkinxc(AB):
    nm = pytest.importorskip("napkinxc.metrics")
    Y = sp.random(1000, 200, density=0.02, format="csr", random_state=1)
    Y.data[:] = 1.0
    Y = sp.csr_matrix(Y)
    np.testing.assert_allclose(inverse_propensity(Y, A=AB[0], B=AB[1]),
                               nm.Jain_et_al_inverse_propensity(Y, A=AB[0], B=AB[1]), rtol=1e-12)


def test_small_n_warns(caplog):
    with caplog.at_level(logging.WARNING, logger="xmr.eval.propensity"):
        w = inverse_propensity(np.array([1, 0]), n_train=2)
    assert np.all(w < 1)
    assert "N=2 < e" in caplog.text


@pytest.mark.parametrize("args, kwargs, exc, msg", [
    ((np.array([1, 2]),), {}, ValueError,
     "n_train: expected the number of training points with a frequency vector, got None"),
    ((np.array([1, 2]),), {"n_train": 0}, ValueError, "n_train: expected an integer > 0, got 0"),
    ((np.array([1, 20]),), {"n_train": 10}, ValueError,
     "label frequencies: expected values <= n_train (10), got 20 for label 1"),
    ((np.array([1, -1]),), {"n_train": 10}, ValueError,
     "label frequencies: expected finite numbers >= 0, got -1"),
    ((np.array(["a"]),), {"n_train": 10}, TypeError,
     "label frequencies: expected a numeric vector, got dtype <U1"),
    ((sp.csr_matrix((4, 3)),), {"n_train": 4}, ValueError,
     "n_train: expected None when a label matrix is given (N is its row count, 4), got 4"),
    ((np.zeros((2, 2, 2)),), {}, ValueError,
     "Y_trn_or_label_freq: expected a label matrix [N, L] or a frequency vector [L], "
     "got shape (2, 2, 2)"),
    ((np.array([1]),), {"n_train": 10, "A": -1.0}, ValueError,
     "A: expected a finite number >= 0, got -1.0"),
    ((np.array([1]),), {"n_train": 10, "B": 0}, ValueError,
     "B: expected a finite number > 0, got 0"),
])
def test_bad_input(args, kwargs, exc, msg):
    with pytest.raises(exc) as e:
        inverse_propensity(*args, **kwargs)
    assert str(e.value) == msg
