"""Tests of the synthetic generator with known Bayes probabilities (xmr.data.synthetic)."""

from __future__ import annotations

import subprocess
import sys
import tracemalloc

import numpy as np
import pytest
import scipy.sparse as sp
from scipy.special import logsumexp

import xmr.data.synthetic as synthetic
from xmr.data.synthetic import SyntheticXMC


def _dense_logp(g: SyntheticXMC, X: np.ndarray) -> np.ndarray:
    """Reference: float64 log p*(·|x) from the plain formula, no chunking."""
    s = g.scale * (X.astype(np.float64) @ g.U.astype(np.float64)) @ g.V.astype(np.float64).T
    s += g.b.astype(np.float64)
    return s - logsumexp(s, axis=1, keepdims=True)


def _chi2_bound(df: int) -> float:
    # Pearson statistic ~ chi2(df) (slightly below for Poisson-binomial counts); a 5-sigma bound.
    return df + 5.0 * np.sqrt(2.0 * df)


@pytest.mark.parametrize("chunk", [7, 4096])
def test_label_frequencies_match_bayes_marginals(chunk):
    g = SyntheticXMC(60, 8, rank=4, zipf=1.0, scale=2.0, seed=1, chunk=chunk)
    X = g.sample_x(20_000, seed=5)
    ids = g.sample_labels(X, seed=6)
    assert ids.shape == (20_000, 1) and ids.dtype == np.int64
    observed = np.bincount(ids[:, 0], minlength=60).astype(np.float64)
    expected = np.exp(_dense_logp(g, X)).sum(axis=0)  # Σ_i p*(l|x_i)
    keep = expected >= 5
    stat = ((observed[keep] - expected[keep]) ** 2 / expected[keep]).sum()
    rest_o, rest_e = observed[~keep].sum(), expected[~keep].sum()
    if rest_e > 0:
        stat += (rest_o - rest_e) ** 2 / rest_e
    df = int(keep.sum()) + int(rest_e > 0) - 1
    assert stat < _chi2_bound(df), (stat, df)


def test_without_replacement_follows_sequential_draws():
    """Two labels per point: P(a then b) = p_a · p_b / (1 − p_a) (Plackett–Luce)."""
    g = SyntheticXMC(4, 3, rank=2, zipf=0.5, scale=1.0, seed=2, chunk=3)
    x = g.sample_x(1, seed=0)
    X = np.repeat(x, 30_000, axis=0)
    ids = g.sample_labels(X, seed=9, labels_per_point=2)
    assert (ids[:, 0] != ids[:, 1]).all()
    p = np.exp(_dense_logp(g, x))[0]
    pairs = [(a, b) for a in range(4) for b in range(4) if a != b]
    expected = np.array([p[a] * p[b] / (1 - p[a]) for a, b in pairs]) * len(X)
    observed = np.array([np.sum((ids[:, 0] == a) & (ids[:, 1] == b)) for a, b in pairs])
    assert expected.min() > 5
    stat = ((observed - expected) ** 2 / expected).sum()
    assert stat < _chi2_bound(len(pairs) - 1), stat


def test_all_labels_drawn_when_m_equals_L():
    g = SyntheticXMC(9, 4, seed=0, chunk=2)
    ids = g.sample_labels(g.sample_x(50, 0), seed=1, labels_per_point=9)
    assert (np.sort(ids, axis=1) == np.arange(9)).all()


def test_sampling_is_chunk_invariant_and_seeded():
    kw = dict(num_labels=500, dim=16, seed=3)
    X = SyntheticXMC(**kw).sample_x(400, seed=1)
    a = SyntheticXMC(**kw, chunk=4096).sample_labels(X, seed=2, labels_per_point=3)
    b = SyntheticXMC(**kw, chunk=7, block_elems=50).sample_labels(X, seed=2, labels_per_point=3)
    # Same uniforms, same inverse CDF: only float rounding at a CDF boundary could differ.
    assert (a != b).any(axis=1).sum() <= 1
    X1, Y1 = SyntheticXMC(**kw).sample(300, seed=4, labels_per_point=2)
    X2, Y2 = SyntheticXMC(**kw).sample(300, seed=4, labels_per_point=2)
    np.testing.assert_array_equal(X1, X2)
    assert (Y1 != Y2).nnz == 0
    X3, Y3 = SyntheticXMC(**kw).sample(300, seed=5, labels_per_point=2)
    assert not np.array_equal(X1, X3) and (Y1 != Y3).nnz > 0
    other = SyntheticXMC(500, 16, seed=4)
    assert not np.array_equal(other.V, SyntheticXMC(**kw).V)


def test_sample_returns_binary_csr():
    g = SyntheticXMC(100, 8, seed=0)
    X, Y = g.sample(50, seed=0, labels_per_point=3)
    assert X.dtype == np.float32 and X.shape == (50, 8)
    assert sp.isspmatrix_csr(Y) and Y.dtype == np.float32 and Y.shape == (50, 100)
    assert (np.diff(Y.indptr) == 3).all() and (Y.data == 1).all() and Y.has_sorted_indices
    ds = g.to_dataset(40, 10, seed=1)
    assert ds.X_trn.shape == (40, 8) and ds.Y_tst.shape == (10, 100)
    assert ds.info["generator"] == g.config()
    assert SyntheticXMC(**g.config()).config() == g.config()


@pytest.mark.parametrize("chunk", [1, 7, 64, 500, 4096])
def test_streaming_equals_dense(chunk):
    g = SyntheticXMC(500, 16, seed=0, chunk=chunk, block_elems=300)
    X = g.sample_x(37, seed=1)
    ref = _dense_logp(g, X)
    np.testing.assert_allclose(g.bayes_proba(X), np.exp(ref), rtol=1e-4, atol=1e-7)
    lz = logsumexp(ref - ref[:, :1] + g.logits(X, np.zeros((37, 1), np.int64)), axis=1)
    np.testing.assert_allclose(g.log_partition(X), lz, rtol=0, atol=1e-4)
    probs, ids = g.bayes_topk(X, 10, chunk=chunk)
    ref_ids = np.argsort(-ref, axis=1, kind="stable")[:, :10]
    np.testing.assert_array_equal(ids, ref_ids)
    np.testing.assert_allclose(probs, np.exp(np.take_along_axis(ref, ref_ids, 1)), rtol=1e-4)
    assert ids.dtype == np.int64 and probs.dtype == np.float32
    some = np.random.default_rng(0).integers(0, 500, size=(37, 4))
    np.testing.assert_allclose(g.log_bayes(X, some), np.take_along_axis(ref, some, 1),
                               rtol=0, atol=1e-4)
    np.testing.assert_allclose(g.logits(X, some), np.take_along_axis(g.logits(X), some, 1),
                               rtol=1e-5, atol=1e-5)


def test_loose_bound_falls_back_to_exact_max(monkeypatch):
    """A very peaky p* makes the Cauchy–Schwarz shift underflow; the exact path takes over."""
    calls = []
    orig = synthetic._lse_rows
    monkeypatch.setattr(synthetic, "_lse_rows", lambda s: calls.append(1) or orig(s))
    g = SyntheticXMC(300, 16, seed=0, scale=80.0, chunk=50)
    X = g.sample_x(20, seed=0)
    s = g.logits(X).astype(np.float64)
    np.testing.assert_allclose(g.log_partition(X), logsumexp(s, axis=1), rtol=1e-6)
    assert len(calls) > 1  # fallback rows were recomputed (one call is the final reduction)
    ids = g.sample_labels(X, seed=0)
    assert (np.exp(_dense_logp(g, X))[np.arange(20), ids[:, 0]] > 1e-6).all()


def test_topk_k_larger_than_chunk():
    g = SyntheticXMC(50, 4, seed=0, chunk=3)
    X = g.sample_x(5, seed=0)
    probs, ids = g.bayes_topk(X, 50)
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, rtol=1e-5)
    assert (np.sort(ids, axis=1) == np.arange(50)).all()
    assert (np.diff(probs, axis=1) <= 0).all()


def test_long_tail():
    g = SyntheticXMC(5_000, 16, seed=0)
    _, Y = g.sample(10_000, seed=0)
    freq = np.sort(np.asarray(Y.sum(axis=0)).ravel())[::-1]
    assert (freq < 5).mean() > 0.8  # most labels are rare
    assert freq[:50].sum() / freq.sum() > 0.3  # the top 1% of labels carry a large share


def test_million_labels_without_dense_allocation():
    n, L = 1000, 1_000_000
    g = SyntheticXMC(L, 32, seed=0)
    X = g.sample_x(n, seed=0)
    tracemalloc.start()
    try:
        ids = g.sample_labels(X, seed=1)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < n * L * 4 / 50, peak  # well below one dense float32 [n, L] (4 GB)
    assert ids.shape == (n, 1) and 0 <= ids.min() and ids.max() < L
    assert len(np.unique(ids)) > 100  # not collapsed onto a few labels
    with pytest.raises(ValueError) as e:
        g.bayes_proba(X[:2])
    assert str(e.value) == (
        "bayes_proba: expected num_labels <= 65536 for a dense [n, L] result, got 1000000; "
        "use bayes_topk() or log_bayes(), which stream over labels")
    # The drawn labels are plausible under p*: their mean log-probability beats uniform's.
    assert g.log_bayes(X[:50], ids[:50]).mean() > -np.log(L) + 3


def test_error_messages():
    g = SyntheticXMC(20, 4, seed=0)
    X = g.sample_x(3, seed=0)
    cases = [
        (lambda: g.bayes_proba(np.zeros((3, 5))),
         "X: expected a float array of shape [n, 4], got float64 array of shape (3, 5)"),
        (lambda: g.log_bayes(X, np.array([[0], [1], [20]])),
         "ids: expected label ids in [0, 20), got values in [0, 20]"),
        (lambda: g.log_bayes(X, np.zeros((2, 1), np.int64)),
         "ids: expected an integer array of shape [3, k], got int64 array of shape (2, 1)"),
        (lambda: g.sample_labels(X, seed=0, labels_per_point=21),
         "labels_per_point: expected an integer in [1, 20], got 21"),
        (lambda: g.bayes_topk(X, 0), "k: expected an integer in [1, 20], got 0"),
        (lambda: g.bayes_topk(X, 2, chunk=0), "chunk: expected an integer >= 1, got 0"),
        (lambda: SyntheticXMC(1, 4), "num_labels: expected an integer >= 2, got 1"),
        (lambda: SyntheticXMC(10, 4, zipf=-1.0),
         "zipf: expected a finite number >= 0, got -1.0"),
    ]
    for fn, msg in cases:
        with pytest.raises(ValueError) as e:
            fn()
        assert str(e.value) == msg


def test_import_is_cheap():
    code = ("import sys, xmr.data.synthetic; "
            "bad = [m for m in ('torch', 'numba', 'faiss') if m in sys.modules]; "
            "assert not bad, bad")
    subprocess.run([sys.executable, "-c", code], check=True)
