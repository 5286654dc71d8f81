"""Top-k: the Numba merge kernel agrees with its numpy reference (ties, -1 padding, k larger
than a list), and the chunked, sharded top-k agrees with a dense torch.topk."""

import numpy as np
import pytest
import torch

from xmr.index.exact import PAD_SCORE, merge_topk
from xmr.kernels.topk_merge import topk_merge_ref
from xmr.models import ShardedLabelTable


def _random_lists(gen, m, n, kk, id_space, tie_levels=None):
    """m sorted lists per query with disjoint ids, random lengths (tail-padded with -1)."""
    scores = np.full((m, n, kk), -np.inf, dtype=np.float32)
    ids = np.full((m, n, kk), -1, dtype=np.int64)
    for q in range(n):
        perm = gen.permutation(id_space)
        for j in range(m):
            length = int(gen.integers(0, kk + 1))
            own = perm[j * kk: j * kk + length]
            s = (gen.integers(0, tie_levels, size=length).astype(np.float32) if tie_levels
                 else gen.standard_normal(length).astype(np.float32))
            order = np.lexsort((own, -s))
            scores[j, q, :length] = s[order]
            ids[j, q, :length] = own[order]
            scores[j, q, length:] = gen.standard_normal(kk - length)  # garbage after padding
    return scores, ids


@pytest.mark.parametrize("m,n,kk,k,ties", [
    (1, 5, 4, 4, None),
    (3, 20, 5, 5, None),
    (6, 30, 4, 10, 3),    # many ties, k > list length
    (4, 10, 3, 50, None),  # k > all valid entries: -1 padding
    (5, 25, 6, 3, 2),
])
def test_merge_kernel_matches_reference(m, n, kk, k, ties):
    gen = np.random.default_rng(m * 100 + k)
    scores, ids = _random_lists(gen, m, n, kk, id_space=m * kk + 7, tie_levels=ties)
    got_s, got_i = merge_topk(scores, ids, k)
    ref_s, ref_i = topk_merge_ref(scores, ids, k, PAD_SCORE)
    np.testing.assert_array_equal(got_i, ref_i)
    np.testing.assert_array_equal(got_s, ref_s)
    assert got_s.dtype == np.float32 and got_i.dtype == np.int64
    assert np.all(got_s[got_i == -1] == PAD_SCORE)


def test_merge_rejects_bad_shapes():
    with pytest.raises(ValueError) as exc:
        merge_topk(np.zeros((2, 3, 4)), np.zeros((2, 3, 5), dtype=np.int64), 2)
    assert str(exc.value) == ("merge_topk: expected scores and ids of one shape [m, n, kk], "
                              "got [2, 3, 4] and [2, 3, 5]")


@pytest.mark.parametrize("L,num_shards,label_chunk,query_chunk,k,bias", [
    (1000, 1, 8192, 4096, 5, False),
    (1003, 3, 64, 7, 10, True),   # L divisible by nothing, queries in chunks of 7
    (50, 4, 5, 3, 8, True),       # k > label chunk and > shard size
    (6, 2, 4, 4, 9, False),       # k > L: -1 padding
])
def test_table_topk_matches_dense(L, num_shards, label_chunk, query_chunk, k, bias):
    torch.manual_seed(L)
    t = ShardedLabelTable(L, 16, num_shards=num_shards, bias=bias)
    if bias:
        with torch.no_grad():
            t.bias.normal_()
    q = torch.randn(23, 16)
    s, i = t.topk(q, k, query_chunk=query_chunk, label_chunk=label_chunk)
    assert s.shape == (23, k) and i.shape == (23, k)
    z = q @ t.weight.detach().T + (t.bias.detach() if bias else 0)
    kk = min(k, L)
    ref = torch.topk(z, kk, dim=1)
    np.testing.assert_array_equal(i[:, :kk], ref.indices.numpy())
    np.testing.assert_allclose(s[:, :kk], ref.values.numpy(), rtol=1e-6, atol=1e-6)
    assert np.all(i[:, kk:] == -1) and np.all(s[:, kk:] == PAD_SCORE)


def test_topk_ties_broken_by_lower_id():
    t = ShardedLabelTable(40, 4, num_shards=3)
    with torch.no_grad():
        t.weight.zero_()
        t.weight[[3, 17, 35, 38], 0] = 1.0  # four labels tied at the top
    s, i = t.topk(torch.ones(2, 4), 3, label_chunk=6)
    np.testing.assert_array_equal(i, [[3, 17, 35], [3, 17, 35]])
    np.testing.assert_array_equal(s, np.ones((2, 3), dtype=np.float32))


def test_topk_bad_input():
    t = ShardedLabelTable(40, 4)
    with pytest.raises(ValueError) as exc:
        t.topk(torch.ones(2, 5), 3)
    assert str(exc.value) == "emb: expected shape [n, 4], got [2, 5]"
    with pytest.raises(ValueError) as exc:
        t.topk(torch.ones(2, 4), 0)
    assert str(exc.value) == "k: expected an integer >= 1, got 0"
