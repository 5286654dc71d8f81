"""Tests of xmr.eval.metrics and its top-k kernels: hand-computed values, edge cases, exact error
messages, filter pairs, and agreement with napkinXC's implementation (napkinxc.metrics)."""

import math

import numpy as np
import pytest
import scipy.sparse as sp

from xmr.eval import (
    evaluate,
    ndcg_at_k,
    precision_at_k,
    psndcg_at_k,
    psprecision_at_k,
    recall_at_k,
    remove_pairs,
    topk_from_scores,
)
from xmr.kernels.metrics import topk_csr, topk_csr_ref, topk_dense, topk_dense_ref

# ---------------------------------------------------------------------------------------------
# the 3 x 6 example, worked out by hand
#
#   row  positives   predictions (top 3)   hits
#   0    {0, 2}      [2, 1, 0]             1 0 1
#   1    {1, 3, 5}   [0, 5, 3]             0 1 1
#   2    {4}         [4, -1, -1]           1 0 0      (-1: no prediction)
#
#   inverse propensities w = [1.0, 2.0, 1.5, 3.0, 4.0, 2.5], discounts d_r = 1/log2(r+1).
#
#   P@1 = (1+0+1)/3 = 2/3        P@2 = (1/2+1/2+1/2)/3 = 1/2     P@3 = (2/3+2/3+1/3)/3 = 5/9
#   R@1 = (1/2+0+1)/3 = 1/2      R@2 = (1/2+1/3+1)/3 = 11/18     R@3 = (1+2/3+1)/3 = 8/9
#   nDCG@1 = (1+0+1)/3 = 2/3
#   nDCG@2 = (1/(1+d2) + d2/(1+d2) + 1)/3 = 2/3        (rows 0, 1 have >= 2 positives)
#   nDCG@3 = ((1+d3)/(1+d2) + (d2+d3)/(1+d2+d3) + 1)/3 (row 0: ideal over min(3, 2) = 2)
#   PSP: gains of hits   row0 [1.5, 0, 1.0], row1 [0, 2.5, 3.0], row2 [4, 0, 0]
#        best gains      row0 [1.5, 1.0, 0], row1 [3.0, 2.5, 2.0], row2 [4, 0, 0]
#   PSP@1 = 5.5/8.5 = 11/17   PSP@2 = 8/12 = 2/3   PSP@3 = 12/14 = 6/7
#   PSnDCG@k = sum_i DCG_i/I_i / sum_i bestDCG_i/I_i with I_i the unit ideal DCG of row i:
#   PSnDCG@1 = 5.5/8.5
#   PSnDCG@2 = (1.5/(1+d2) + 2.5 d2/(1+d2) + 4) / ((1.5+d2)/(1+d2) + (3+2.5 d2)/(1+d2) + 4)
#   PSnDCG@3 = ((1.5+d3)/(1+d2) + (2.5 d2+3 d3)/(1+d2+d3) + 4)
#            / ((1.5+d2)/(1+d2) + (3+2.5 d2+2 d3)/(1+d2+d3) + 4)
# ---------------------------------------------------------------------------------------------

D2, D3 = 1 / math.log2(3), 0.5
W = np.array([1.0, 2.0, 1.5, 3.0, 4.0, 2.5])
IDS = np.array([[2, 1, 0], [0, 5, 3], [4, -1, -1]], dtype=np.int64)


def _csr(rows, L):
    indptr = np.cumsum([0] + [len(r) for r in rows])
    indices = np.array([j for r in rows for j in r], dtype=np.int32)
    return sp.csr_matrix((np.ones(len(indices)), indices, indptr), shape=(len(rows), L))


Y = _csr([[0, 2], [1, 3, 5], [4]], 6)

EXPECTED = {
    "P": [2 / 3, 1 / 2, 5 / 9],
    "R": [1 / 2, 11 / 18, 8 / 9],
    "nDCG": [2 / 3, 2 / 3, ((1 + D3) / (1 + D2) + (D2 + D3) / (1 + D2 + D3) + 1) / 3],
    "PSP": [11 / 17, 2 / 3, 6 / 7],
    "PSnDCG": [
        11 / 17,
        (1.5 / (1 + D2) + 2.5 * D2 / (1 + D2) + 4)
        / ((1.5 + D2) / (1 + D2) + (3 + 2.5 * D2) / (1 + D2) + 4),
        ((1.5 + D3) / (1 + D2) + (2.5 * D2 + 3 * D3) / (1 + D2 + D3) + 4)
        / ((1.5 + D2) / (1 + D2) + (3 + 2.5 * D2 + 2 * D3) / (1 + D2 + D3) + 4),
    ],
}


def test_hand_computed_example():
    np.testing.assert_allclose(precision_at_k(Y, IDS), EXPECTED["P"], rtol=1e-12)
    np.testing.assert_allclose(recall_at_k(Y, IDS), EXPECTED["R"], rtol=1e-12)
    np.testing.assert_allclose(ndcg_at_k(Y, IDS), EXPECTED["nDCG"], rtol=1e-12)
    np.testing.assert_allclose(psprecision_at_k(Y, IDS, W), EXPECTED["PSP"], rtol=1e-12)
    np.testing.assert_allclose(psndcg_at_k(Y, IDS, W), EXPECTED["PSnDCG"], rtol=1e-12)


def test_evaluate_keys_and_values():
    out = evaluate(Y, IDS, ks=(1, 3), inv_prop=W)
    assert list(out) == ["P@1", "P@3", "nDCG@1", "nDCG@3", "R@1", "R@3",
                         "PSP@1", "PSP@3", "PSnDCG@1", "PSnDCG@3"]
    for name, vals in EXPECTED.items():
        assert out[f"{name}@1"] == pytest.approx(vals[0], rel=1e-12)
        assert out[f"{name}@3"] == pytest.approx(vals[2], rel=1e-12)
    assert "PSP@1" not in evaluate(Y, IDS, ks=(1,))


def test_k_truncates_and_prefix_consistency():
    np.testing.assert_allclose(precision_at_k(Y, IDS, k=2), EXPECTED["P"][:2], rtol=1e-12)
    np.testing.assert_allclose(psndcg_at_k(Y, IDS, W, k=1), EXPECTED["PSnDCG"][:1], rtol=1e-12)


def test_perfect_predictions_score_one():
    ids = np.array([[2, 0, -1], [3, 5, 1], [4, -1, -1]])  # best PS order in every row
    np.testing.assert_allclose(psprecision_at_k(Y, ids, W), 1.0)
    np.testing.assert_allclose(psndcg_at_k(Y, ids, W), 1.0)
    np.testing.assert_allclose(ndcg_at_k(Y, ids), 1.0)
    np.testing.assert_allclose(recall_at_k(Y, ids)[2], 1.0)


def test_rows_without_positives_contribute_zero():
    Y2 = _csr([[0, 2], [], [4]], 6)
    ids = np.array([[0, 1], [3, 4], [4, 5]])
    # row 1 has no positives: it counts in the mean with 0 for P, R and nDCG
    np.testing.assert_allclose(precision_at_k(Y2, ids), [2 / 3, 1 / 3])
    np.testing.assert_allclose(recall_at_k(Y2, ids), [(0.5 + 1) / 3, (0.5 + 1) / 3])
    np.testing.assert_allclose(ndcg_at_k(Y2, ids), [2 / 3, (1 / (1 + D2) + 1) / 3])
    # and adds nothing to either sum of PSP: same value as without that row
    keep = [0, 2]
    np.testing.assert_allclose(psprecision_at_k(Y2, ids, W),
                               psprecision_at_k(Y2[keep], ids[keep], W))
    np.testing.assert_allclose(psndcg_at_k(Y2, ids, W), psndcg_at_k(Y2[keep], ids[keep], W))
    # no positives anywhere: 0, not NaN
    empty = sp.csr_matrix((2, 6))
    np.testing.assert_array_equal(psprecision_at_k(empty, ids[:2], W), [0.0, 0.0])
    np.testing.assert_array_equal(ndcg_at_k(empty, ids[:2]), [0.0, 0.0])


def test_k_larger_than_positives_and_padding():
    Y1 = _csr([[3]], 6)
    # one positive, found at rank 2; -1 padding is never a hit
    ids = np.array([[-1, 3, -1, -1, -1]])
    np.testing.assert_allclose(precision_at_k(Y1, ids), [0, 1 / 2, 1 / 3, 1 / 4, 1 / 5])
    np.testing.assert_allclose(ndcg_at_k(Y1, ids), [0] + [D2] * 4)  # ideal DCG = d1 = 1
    np.testing.assert_allclose(psprecision_at_k(Y1, ids, W), [0, 1, 1, 1, 1])


def test_weighted_duplicate_and_zero_entries_in_y_are_binarised():
    Yw = sp.csr_matrix((np.array([5.0, 0.0, 2.0, 1.0]), np.array([0, 2, 2, 1]),
                        np.array([0, 3, 4])), shape=(2, 6))  # row 0: 0 (5.0), 2 (0 + 2), ...
    Yw.has_canonical_format = False
    Yb = _csr([[0, 2], [1]], 6)
    ids = np.array([[2, 0], [1, 3]])
    np.testing.assert_allclose(precision_at_k(Yw, ids), precision_at_k(Yb, ids))
    Yz = sp.csr_matrix((np.array([1.0, 0.0]), np.array([0, 2]), np.array([0, 2, 2])), shape=(2, 6))
    # a stored zero is not a positive
    np.testing.assert_allclose(recall_at_k(Yz, ids), [0.0, 0.5])


# ---------------------------------------------------------------------------------------------
# bad input: exact messages


def test_duplicate_predicted_ids_rejected():
    with pytest.raises(ValueError) as e:
        precision_at_k(Y, np.array([[2, 1, 0], [0, 5, 5], [4, -1, -1]]))
    assert str(e.value) == "ids: expected distinct label ids per row, got label 5 twice in row 1"


@pytest.mark.parametrize("ids, exc, msg", [
    (np.zeros((3, 2), dtype=np.float32), TypeError,
     "ids: expected an integer array [n, k] of label ids, got dtype float32 "
     "(convert scores with topk_from_scores)"),
    (np.zeros(3, dtype=np.int64), ValueError, "ids: expected a 2-D array [n, k], got shape (3,)"),
    (np.zeros((2, 2), dtype=np.int64), ValueError,
     "ids: expected 3 rows (one per row of Y_true), got 2"),
    (np.array([[0], [6], [1]]), ValueError, "ids: expected label ids in [-1, 6), got 6 in row 1"),
    (np.array([[0], [-2], [1]]), ValueError, "ids: expected label ids in [-1, 6), got -2 in row 1"),
])
def test_bad_ids(ids, exc, msg):
    with pytest.raises(exc) as e:
        precision_at_k(Y, ids)
    assert str(e.value) == msg


def test_other_bad_inputs():
    with pytest.raises(ValueError) as e:
        precision_at_k(Y, IDS, k=4)
    assert str(e.value) == ("k: expected an integer in [1, 3] (the number of predicted columns), "
                            "got 4")
    with pytest.raises(TypeError) as e:
        precision_at_k(Y.toarray(), IDS)
    assert str(e.value) == "Y_true: expected a scipy.sparse matrix [n, L], got ndarray"
    with pytest.raises(ValueError) as e:
        psprecision_at_k(Y, IDS, W[:5])
    assert str(e.value) == ("inv_prop: expected a float array of shape (6,), got float64 array "
                            "of shape (5,)")
    with pytest.raises(ValueError) as e:
        evaluate(Y, IDS, ks=(1, 5))
    assert str(e.value) == "predictions: expected at least 5 columns for ks=(1, 5), got 3"
    with pytest.raises(ValueError) as e:
        evaluate(Y, np.zeros((3, 5)), ks=(1,))
    assert str(e.value) == ("predictions: expected ids [n, k] or scores of shape (3, 6), "
                            "got shape (3, 5)")
    with pytest.raises(ValueError) as e:
        evaluate(Y, IDS, ks=(1,), filter_pairs=np.array([[3, 0]]))
    assert str(e.value) == ("filter_pairs: expected rows in [0, 3) and labels in [0, 6), "
                            "got pair (3, 0) at index 0")
    with pytest.raises(ValueError) as e:
        evaluate(Y, IDS, ks=(1,), filter_pairs=np.array([0, 1]))
    assert str(e.value) == ("filter_pairs: expected an integer array [m, 2] of (row, label) "
                            "pairs, got int64 array of shape (2,)")
    with pytest.raises(ValueError) as e:
        topk_from_scores(np.array([[0.0, np.nan]]), 1)
    assert str(e.value) == "scores: expected no NaN, got NaN scores"
    with pytest.raises(ValueError) as e:
        topk_from_scores(np.zeros((2, 2)), 0)
    assert str(e.value) == "k: expected an integer >= 1, got 0"


# ---------------------------------------------------------------------------------------------
# filter pairs


def test_remove_pairs_drops_and_shifts():
    pairs = np.array([[0, 2], [1, 5], [2, 0]])  # (2, 0) is neither predicted nor a positive
    Yf, idsf = remove_pairs(Y, IDS, pairs)
    assert [list(Yf[i].indices) for i in range(3)] == [[0], [1, 3], [4]]
    np.testing.assert_array_equal(idsf, [[1, 0, -1], [0, 3, -1], [4, -1, -1]])
    assert Y.nnz == 6 and IDS[0, 0] == 2  # inputs untouched
    out = evaluate(Y, IDS, ks=(1, 2, 3), inv_prop=W, filter_pairs=pairs)
    ref = evaluate(_csr([[0], [1, 3], [4]], 6), idsf, ks=(1, 2, 3), inv_prop=W)
    assert out == ref
    # P@1: row0 -> 1 (miss), row1 -> 0 (miss), row2 -> 4 (hit)
    assert out["P@1"] == pytest.approx(1 / 3)


def test_filter_pairs_with_scores_refill_the_list():
    scores = np.array([[0.9, 0.1, 0.8, 0.0, 0.0, 0.3]])
    Y1 = _csr([[0, 5]], 6)
    out = evaluate(Y1, scores, ks=(2,), filter_pairs=np.array([[0, 2]]))
    # label 2 is removed before the top-k: the top 2 becomes [0, 5], both hits
    assert out["P@2"] == 1.0
    out_sparse = evaluate(Y1, sp.csr_matrix(scores), ks=(2,), filter_pairs=np.array([[0, 2]]))
    assert out_sparse["P@2"] == 1.0
    assert evaluate(Y1, scores, ks=(2,))["P@2"] == 0.5


# ---------------------------------------------------------------------------------------------
# top-k from scores and its kernels


def test_topk_ties_by_lower_id_and_padding():
    s, i = topk_from_scores(np.array([[1.0, 3.0, 3.0, 0.0, 3.0]]), 2)
    np.testing.assert_array_equal(i, [[1, 2]])
    assert s.dtype == np.float32 and i.dtype == np.int64
    S = sp.csr_matrix((np.array([3.0, 1.0, 3.0]), np.array([4, 0, 2]), np.array([0, 3, 3])),
                      shape=(2, 5))
    s, i = topk_from_scores(S, 4)
    np.testing.assert_array_equal(i, [[2, 4, 0, -1], [-1, -1, -1, -1]])
    np.testing.assert_array_equal(s, [[3, 3, 1, -np.inf], [-np.inf] * 4])
    s, i = topk_from_scores(np.array([[0.5, 2.0]]), 3)  # k > L
    np.testing.assert_array_equal(i, [[1, 0, -1]])


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_topk_kernels_match_reference(dtype):
    rng = np.random.default_rng(0)
    n, L = 200, 40
    # integer-valued scores make many ties; ~1/3 of entries stored, some rows empty
    dense = rng.integers(-3, 4, size=(n, L)).astype(dtype)
    dense[rng.random((n, L)) < 0.66] = 0
    dense[::17] = 0
    S = sp.csr_matrix(dense)
    S.data = S.data.astype(dtype)
    for k in (1, 5, 50):
        out_s, out_i = np.empty((n, k), dtype), np.empty((n, k), np.int64)
        topk_csr(S.indptr, S.indices, S.data, k, out_s, out_i)
        ref_s, ref_i = topk_csr_ref(S.indptr, S.indices, S.data, k)
        np.testing.assert_array_equal(out_i, ref_i)
        np.testing.assert_array_equal(out_s, ref_s)
        topk_dense(dense, k, out_s, out_i)
        ref_s, ref_i = topk_dense_ref(dense, k)
        np.testing.assert_array_equal(out_i, ref_i)
        np.testing.assert_array_equal(out_s, ref_s)


def test_topk_dense_chunking(monkeypatch):
    import xmr.eval.metrics as m

    rng = np.random.default_rng(1)
    scores = rng.normal(size=(37, 11))
    full = topk_from_scores(scores, 4)
    monkeypatch.setattr(m, "_ROW_CHUNK_ELEMS", 50)  # 4 rows per chunk
    chunked = topk_from_scores(scores, 4)
    np.testing.assert_array_equal(full[1], chunked[1])


# ---------------------------------------------------------------------------------------------
# agreement with napkinXC


def _random_problem(seed, n=400, L=60, K=5):
    rng = np.random.default_rng(seed)
    Y = sp.random(n, L, density=0.05, format="csr", random_state=seed)
    Y.data[:] = 1.0
    Y = sp.csr_matrix(Y)
    # predictions: a mix of random labels and true labels, distinct per row, -1 tails
    ids = np.empty((n, K), dtype=np.int64)
    for i in range(n):
        pool = np.concatenate([Y[i].indices, rng.choice(L, K, replace=False)])
        row = list(dict.fromkeys(rng.permutation(pool).tolist()))[:K]
        ids[i] = row + [-1] * (K - len(row))
    ids[rng.random(n) < 0.2, 3:] = -1
    w = 1.0 + rng.gamma(2.0, 2.0, size=L)
    return Y, ids, w


@pytest.mark.parametrize("seed", [0, 1])
def test_agrees_with_napkinxc(seed):
    nm = pytest.importorskip("napkinxc.metrics")
    Y, ids, w = _random_problem(seed)
    assert (np.diff(Y.indptr) == 0).any()  # rows without positives are exercised
    lists = [[int(j) for j in row if j >= 0] for row in ids]
    np.testing.assert_allclose(precision_at_k(Y, ids), nm.precision_at_k(Y, lists, k=5), rtol=1e-12)
    np.testing.assert_allclose(recall_at_k(Y, ids), nm.recall_at_k(Y, lists, k=5), rtol=1e-12)
    np.testing.assert_allclose(ndcg_at_k(Y, ids), nm.ndcg_at_k(Y, lists, k=5), rtol=1e-12)
    # napkinXC normalises PS metrics like pyxclib: sum over rows / sum of best over rows
    np.testing.assert_allclose(psprecision_at_k(Y, ids, w),
                               nm.psprecision_at_k(Y, lists, w, k=5), rtol=1e-12)
    np.testing.assert_allclose(psndcg_at_k(Y, ids, w),
                               nm.psndcg_at_k(Y, lists, w, k=5), rtol=1e-12)


def test_agrees_with_napkinxc_from_dense_scores():
    nm = pytest.importorskip("napkinxc.metrics")
    Y, _, w = _random_problem(3, n=200, L=30)
    scores = np.random.default_rng(3).normal(size=Y.shape)  # continuous: no ties
    out = evaluate(Y, scores, ks=(1, 3, 5), inv_prop=w)
    ref = {"P": nm.precision_at_k(Y, scores, k=5), "nDCG": nm.ndcg_at_k(Y, scores, k=5),
           "R": nm.recall_at_k(Y, scores, k=5), "PSP": nm.psprecision_at_k(Y, scores, w, k=5),
           "PSnDCG": nm.psndcg_at_k(Y, scores, w, k=5)}
    for name, vals in ref.items():
        for k in (1, 3, 5):
            assert out[f"{name}@{k}"] == pytest.approx(vals[k - 1], rel=1e-6), f"{name}@{k}"
