"""Contracts that values alone cannot show: the table gradient stays sparse and untouched rows
are never written; the exact softmax never forms a logits block wider than ``chunk_size``;
top-k breaks exact ties inside one chunk by the lower id (a stable sort)."""

import numpy as np
import pytest
import torch
from torch.overrides import TorchFunctionMode

import xmr.models.exact_softmax as ES
from xmr.models import RowAdagrad, ShardedLabelTable


class _DenseWatch(TorchFunctionMode):
    """Record every op whose result is a dense tensor of the table's full shape other than the
    table itself (a densified gradient, or an update formed for all L rows)."""

    def __init__(self, param):
        super().__init__()
        self.param, self.hits = param, []

    def __torch_function__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        if isinstance(out, torch.Tensor) and not out.is_sparse and \
                tuple(out.shape) == tuple(self.param.shape) and \
                out.data_ptr() != self.param.data_ptr():
            self.hits.append(getattr(func, "__name__", str(func)))
        return out


def test_row_adagrad_keeps_the_gradient_sparse_and_leaves_untouched_rows_alone():
    L, d = 5000, 8
    torch.manual_seed(0)
    t = ShardedLabelTable(L, d, init_std=0.1)
    opt = RowAdagrad(t.parameters(), lr=0.1)
    cand = torch.tensor([3, 17, 17, 4000, 4999])
    before = t.weight.detach().clone()
    t.candidate_logits(torch.randn(4, d), cand).square().sum().backward()
    assert t.weight.grad.is_sparse
    watch = _DenseWatch(t.weight)
    with watch:
        opt.step()
    assert watch.hits == [], f"dense [L, d] tensors formed during the step: {watch.hits}"
    used = torch.zeros(L, dtype=torch.bool)
    used[cand] = True
    assert torch.equal(t.weight.detach()[~used], before[~used])
    assert not torch.equal(t.weight.detach()[used], before[used])
    acc = opt.state[t.weight]["sum"]
    assert torch.count_nonzero(acc[~used]) == 0 and bool((acc[used] > 0).all())


@pytest.mark.parametrize("cache_bytes", [0, 1 << 30])
def test_exact_softmax_never_forms_a_block_wider_than_chunk_size(monkeypatch, cache_bytes):
    L, d, B, chunk = 1000, 8, 6, 64
    widths = []
    real = ES._chunk_logits

    def spy(E, W, bias, c0, c1, *a, **k):
        z = real(E, W, bias, c0, c1, *a, **k)
        widths.append(z.shape[1])
        return z

    monkeypatch.setattr(ES, "_chunk_logits", spy)
    torch.manual_seed(0)
    t = ShardedLabelTable(L, d, num_shards=3, init_std=0.3)
    emb = torch.randn(B, d, requires_grad=True)
    ptr = torch.arange(B + 1)
    ids = torch.arange(B) * 7
    loss = t.full_softmax_loss(emb, ptr, ids, torch.ones(B), chunk_size=chunk,
                               cache_bytes=cache_bytes)
    n_forward = len(widths)
    loss.backward()
    assert max(widths) <= chunk
    assert sum(widths[:n_forward]) == L  # forward visits every label once, chunk by chunk
    if cache_bytes == 0:
        assert sum(widths[n_forward:]) == L  # backward recomputes every chunk


@pytest.mark.parametrize("label_chunk", [8192, 7])
def test_topk_ties_inside_one_chunk_follow_a_stable_sort(label_chunk):
    L, d, k = 300, 4, 25
    gen = np.random.default_rng(0)
    t = ShardedLabelTable(L, d)
    levels = gen.integers(0, 4, size=L).astype(np.float32)  # 4 score levels: ~75 labels each
    with torch.no_grad():
        t.weight.zero_()
        t.weight[:, 0] = torch.from_numpy(levels)
    q = torch.tensor([[1.0, 0, 0, 0], [-1.0, 0, 0, 0]])
    s, i = t.topk(q, k, label_chunk=label_chunk)
    z = (q.numpy() @ t.weight.detach().numpy().T)
    ref = np.argsort(-z, axis=1, kind="stable")[:, :k]  # ties: lower id first
    np.testing.assert_array_equal(i, ref)
    np.testing.assert_array_equal(s, np.take_along_axis(z, ref, 1).astype(np.float32))


def test_default_exp_cache_never_exceeds_the_table(monkeypatch):
    """With B > d the cache would otherwise grow past the weights (the old fixed 1 GiB)."""
    t = ShardedLabelTable(1000, 8, bias=True)
    assert t.default_cache_bytes() == (1000 * 8 + 1000) * 4
    kept = []
    real = ES.ExactSoftmaxFunction.apply

    def spy(*args):
        kept.append(args[10])  # cache_bytes (then the optional decoupled positives)
        return real(*args)

    monkeypatch.setattr(ES.ExactSoftmaxFunction, "apply", spy)
    emb = torch.randn(64, 8)
    t.full_softmax_loss(emb, torch.arange(65), torch.arange(64), torch.ones(64))
    assert kept == [(1000 * 8 + 1000) * 4]
