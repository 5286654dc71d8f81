"""The one top-k contract (xmr.index.exact) held by every exact path: ties inside one label chunk
and across chunks and shards in the stable lower-id order, one padding, numpy and torch alike."""

import numpy as np
import pytest
import torch

from xmr.index.exact import PAD_ID, PAD_SCORE, RunningTopK, chunk_topk, exact_search, sort_rows
from xmr.models import ShardedLabelTable

L, D = 40, 3


def _tied_table():
    """Label j has score j mod 3 for the query e_0: 14 labels tie at 2, 13 at 1, 13 at 0."""
    W = np.zeros((L, D), np.float32)
    W[:, 0] = np.arange(L) % 3
    return W


TOP2 = np.arange(2, L, 3)  # the 14 labels scoring 2, in the only allowed order
TOP1 = np.arange(1, L, 3)  # the 13 scoring 1
TOP0 = np.arange(0, L, 3)  # the 13 scoring 0
FULL = np.concatenate([TOP2, TOP1, TOP0])


def _expected(k):
    ids = np.full(k, PAD_ID, np.int64)
    ids[:min(k, L)] = FULL[:k]
    s = np.full(k, PAD_SCORE, np.float32)
    s[:min(k, L)] = ids[:min(k, L)] % 3
    return s, ids


@pytest.mark.parametrize("k", [5, 14, 20, 40, 45])  # inside the top tie, its edge, k > L
@pytest.mark.parametrize("label_chunk", [40, 7, 3])  # one chunk; ties across chunks
def test_numpy_exact_search_ties_in_lower_id_order(k, label_chunk):
    Q = np.tile(np.eye(1, D, dtype=np.float32), (3, 1))
    s, i = exact_search(_tied_table(), Q, k, label_chunk=label_chunk, query_chunk=2)
    want_s, want_i = _expected(k)
    np.testing.assert_array_equal(i, np.tile(want_i, (3, 1)))
    np.testing.assert_array_equal(s, np.tile(want_s, (3, 1)))


@pytest.mark.parametrize("k", [5, 14, 20, 40, 45])
@pytest.mark.parametrize("num_shards, label_chunk", [(1, 8192), (1, 7), (3, 8192), (3, 4), (4, 3)])
def test_torch_table_topk_ties_in_lower_id_order(k, num_shards, label_chunk):
    # (1, 8192): every label in one chunk, so torch.topk's unspecified tie order and its choice
    # among the 14 labels tied at the k-th place must both be overridden inside that chunk.
    t = ShardedLabelTable(L, D, num_shards=num_shards)
    with torch.no_grad():
        t.weight.copy_(torch.from_numpy(_tied_table()))
    s, i = t.topk(torch.eye(1, D).repeat(3, 1), k, query_chunk=2, label_chunk=label_chunk)
    want_s, want_i = _expected(k)
    np.testing.assert_array_equal(i, np.tile(want_i, (3, 1)))
    np.testing.assert_array_equal(s, np.tile(want_s, (3, 1)))


def test_numpy_and_torch_paths_agree_on_random_ties():
    # Small integers: exact products, frequent ties at every rank.
    rng = np.random.default_rng(0)
    W = rng.integers(-1, 2, size=(301, 4)).astype(np.float32)
    Q = rng.integers(-1, 2, size=(17, 4)).astype(np.float32)
    ref = np.lexsort((np.tile(np.arange(301), (17, 1)), -(Q @ W.T)), axis=1)[:, :25]
    s_np, i_np = exact_search(W, Q, 25, label_chunk=50)
    t = ShardedLabelTable(301, 4, num_shards=3)
    with torch.no_grad():
        t.weight.copy_(torch.from_numpy(W))
    s_t, i_t = t.topk(torch.from_numpy(Q), 25, label_chunk=16)
    np.testing.assert_array_equal(i_np, ref)
    np.testing.assert_array_equal(i_t, ref)
    np.testing.assert_array_equal(s_t, s_np)


def test_chunk_topk_is_sorted_with_lower_ids_kept():
    S = np.array([[1, 3, 3, 0, 3, 3]], np.float32)
    s, i = chunk_topk(S, 3, offset=10)
    np.testing.assert_array_equal(i, [[11, 12, 14]])
    np.testing.assert_array_equal(s, [[3, 3, 3]])
    s, i = chunk_topk(S, 9, offset=0)  # k > c: the whole row, sorted
    np.testing.assert_array_equal(i, [[1, 2, 4, 5, 0, 3]])


def test_sort_rows_and_running_topk_padding():
    s, i = sort_rows(np.array([[1, 5, 7, 5]], np.float32), np.array([[4, 9, -1, 2]]))
    np.testing.assert_array_equal(i, [[2, 9, 4, -1]])
    np.testing.assert_array_equal(s, [[5, 5, 1, PAD_SCORE]])
    top = RunningTopK(1, 4, merge_every=2)
    for ids in ([[7]], [[3]], [[5]]):  # three equal-score blocks, merged two at a time
        top.add(np.zeros((1, 1), np.float32), np.array(ids))
    s, i = top.result()
    np.testing.assert_array_equal(i, [[3, 5, 7, PAD_ID]])
    np.testing.assert_array_equal(s, [[0, 0, 0, PAD_SCORE]])
