"""Encoders: CSR batching without densifying, bag = dense product, MLP options, errors."""

import numpy as np
import pytest
import scipy.sparse as sp
import torch

from xmr.models import DenseEncoder, SparseEncoder, csr_to_bag


@pytest.fixture(scope="module")
def X():
    X = sp.random(30, 40, density=0.15, format="csr", random_state=3, dtype=np.float32)
    X = X.tolil()
    X[5, :] = 0  # an empty row
    return X.tocsr()


def test_csr_to_bag_round_trip(X):
    rows = np.array([5, 2, 2, 29, 0])
    inp, off, w = csr_to_bag(X, rows)
    assert inp.dtype == torch.int64 and off.dtype == torch.int64 and w.dtype == torch.float32
    assert off.tolist()[0] == 0 and len(off) == len(rows)
    ends = off.tolist()[1:] + [len(inp)]
    for b, r in enumerate(rows):
        dense = np.zeros(40, np.float32)
        np.add.at(dense, inp[off[b]:ends[b]].numpy(), w[off[b]:ends[b]].numpy())
        np.testing.assert_array_equal(dense, X[r].toarray()[0])


def test_sparse_encoder_is_a_weighted_sum(X):
    torch.manual_seed(0)
    enc = SparseEncoder(40, 8)
    rows = np.arange(30)
    got = enc.encode_csr(X, rows)
    ref = torch.from_numpy(X.toarray()) @ enc.bag.weight + enc.bag_bias
    torch.testing.assert_close(got, ref, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("hidden,residual,normalize", [
    ((), False, True), ((16,), False, False), ((16, 16), True, True), ((32, 16), True, False)])
def test_encoder_options(X, hidden, residual, normalize):
    torch.manual_seed(0)
    enc = SparseEncoder(40, 8, hidden=hidden, residual=residual, normalize=normalize, dropout=0.1)
    enc.eval()
    e = enc.encode_csr(X, np.arange(10))
    assert e.shape == (10, 8)
    if normalize:
        norms = e.norm(dim=1)
        torch.testing.assert_close(norms[norms > 0], torch.ones_like(norms[norms > 0]))
    d = DenseEncoder(12, 8, hidden=hidden, residual=residual, normalize=normalize)
    assert d(torch.randn(4, 12)).shape == (4, 8)


def test_residual_adds_block_input():
    torch.manual_seed(0)
    enc = DenseEncoder(6, 3, hidden=(5, 5), residual=True)
    x = torch.randn(2, 6)
    h = torch.relu(enc.inp(x))
    h = h + torch.relu(enc.head.blocks[0](h))
    torch.testing.assert_close(enc(x), enc.head.out(h))


def test_encoder_errors(X):
    with pytest.raises(ValueError) as exc:
        csr_to_bag(X, np.array([0, 30]))
    assert str(exc.value) == "rows: expected row ids in [0, 30), got 30"
    with pytest.raises(TypeError) as exc:
        csr_to_bag(X.tocsc(), np.array([0]))
    assert str(exc.value) == "X: expected a scipy.sparse CSR matrix, got format 'csc'"
    enc = SparseEncoder(39, 8)
    with pytest.raises(ValueError) as exc:
        enc.encode_csr(X, np.arange(30))
    assert str(exc.value) == "input: expected feature ids in [0, 39), got 39"
    with pytest.raises(ValueError) as exc:
        DenseEncoder(12, 8)(torch.zeros(3, 11))
    assert str(exc.value) == "x: expected shape [B, 12], got [3, 11]"
