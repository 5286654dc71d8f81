"""The chunked exact soft-target softmax agrees with a dense float64 reference, and rejects bad
input with exact messages before anything is modified."""

import math

import numpy as np
import pytest
import torch

from xmr.models import (RowAdagrad, ShardedLabelTable, SparseEncoder, csr_to_bag,
                        exact_softmax_reference)


def _targets(B, L, gen, max_pos=4, soft=False, wide_row=None):
    """Random CSR targets: uniform over 1..max_pos positives, or a random (teacher-like)
    distribution when ``soft``; row ``wide_row`` puts mass on half of all labels."""
    indptr, ids, vals = [0], [], []
    for i in range(B):
        n = L // 2 if i == wide_row else int(gen.integers(1, max_pos + 1))
        row = gen.choice(L, size=n, replace=False)
        v = gen.random(n) + 0.05 if soft else np.ones(n)
        ids.extend(row.tolist())
        vals.extend((v / v.sum()).tolist())
        indptr.append(len(ids))
    return (torch.tensor(indptr), torch.tensor(ids), torch.tensor(vals, dtype=torch.float32))


def _dense(indptr, ids, vals, B, L):
    T = torch.zeros(B, L, dtype=torch.float64)
    rows = torch.repeat_interleave(torch.arange(B), indptr[1:] - indptr[:-1])
    T.index_put_((rows, ids), vals.double(), accumulate=True)
    return T


def _table(L, d, num_shards, bias, seed=0):
    torch.manual_seed(seed)
    t = ShardedLabelTable(L, d, num_shards=num_shards, bias=bias, init_std=0.5)
    if bias:
        with torch.no_grad():
            t.bias.normal_()
    return t


def _check(loss, ref, emb, e64, t, W64, b64, rtol=1e-5):
    assert loss.shape == ref.shape
    torch.testing.assert_close(loss.double(), ref.detach(), rtol=rtol, atol=1e-6)
    torch.testing.assert_close(emb.grad.double(), e64.grad, rtol=rtol, atol=1e-6)
    torch.testing.assert_close(t.weight.grad.double(), W64.grad, rtol=rtol, atol=1e-7)
    if b64 is not None:
        torch.testing.assert_close(t.bias.grad.double(), b64.grad, rtol=rtol, atol=1e-7)


# cache: bytes of exponentiated logits forward may keep for backward (0: recompute every chunk;
# 9 * 97 * 4 * 2: the first two chunks kept, the others recomputed; 1 << 30: all kept)
@pytest.mark.parametrize("L,num_shards,chunk,bias,soft,reduction,cache", [
    (1000, 1, 65536, False, False, "mean", 0),  # one shard, one chunk
    (1000, 1, 65536, False, False, "mean", 1 << 30),
    (1003, 3, 97, True, False, "mean", 0),      # L divisible by neither shards nor chunk
    (1003, 3, 97, True, False, "mean", 9 * 97 * 4 * 2),
    (997, 7, 50, True, True, "sum", 0),         # many shards, teacher-like soft targets
    (997, 7, 50, True, True, "sum", 1 << 30),
    (512, 4, 128, False, True, "none", 1 << 30),  # chunks aligned with shards
    (301, 301, 7, True, False, "mean", 0),      # one label per shard
])
def test_matches_dense_reference(L, num_shards, chunk, bias, soft, reduction, cache):
    gen = np.random.default_rng(L)
    B, d = 9, 24
    t = _table(L, d, num_shards, bias)
    emb = torch.randn(B, d, generator=torch.Generator().manual_seed(1), requires_grad=True)
    indptr, ids, vals = _targets(B, L, gen, soft=soft, wide_row=2)
    loss = t.full_softmax_loss(emb, indptr, ids, vals, chunk_size=chunk, reduction=reduction,
                               cache_bytes=cache)
    w = torch.randn(B, dtype=torch.float64) if reduction == "none" else None
    (loss * w.float()).sum().backward() if w is not None else loss.backward()

    e64 = emb.detach().double().requires_grad_()
    W64 = t.weight.detach().double().requires_grad_()
    b64 = t.bias.detach().double().requires_grad_() if bias else None
    rows = exact_softmax_reference(e64, W64, b64, _dense(indptr, ids, vals, B, L))
    ref = {"mean": rows.mean(), "sum": rows.sum(), "none": rows}[reduction]
    (ref * w).sum().backward() if w is not None else ref.backward()
    _check(loss, ref, emb, e64, t, W64, b64)


def test_equals_torch_cross_entropy_with_probability_targets():
    gen = np.random.default_rng(5)
    B, d, L = 6, 8, 300
    t = _table(L, d, 2, False)
    emb = torch.randn(B, d)
    indptr, ids, vals = _targets(B, L, gen, soft=True)
    loss = t.full_softmax_loss(emb, indptr, ids, vals, chunk_size=64, reduction="none")
    logits = (emb @ t.weight.detach().T).double()
    ce = torch.nn.functional.cross_entropy(logits, _dense(indptr, ids, vals, B, L), reduction="none")
    torch.testing.assert_close(loss.detach().double(), ce, rtol=1e-5, atol=1e-6)


def test_large_logits_stay_finite():
    """Running max keeps the log-sum-exp exact where exp would overflow fp32."""
    B, d, L = 3, 4, 200
    t = _table(L, d, 2, False)
    with torch.no_grad():
        t.weight.mul_(100.0)
    emb = torch.randn(B, d) * 10
    indptr, ids, vals = torch.tensor([0, 1, 2, 3]), torch.tensor([0, 50, 199]), torch.ones(3)
    loss = t.full_softmax_loss(emb, indptr, ids, vals, chunk_size=30, reduction="none")
    ref = exact_softmax_reference(emb.double(), t.weight.detach().double(), None,
                                  _dense(indptr, ids, vals, B, L))
    assert torch.isfinite(loss).all()
    torch.testing.assert_close(loss.detach().double(), ref, rtol=1e-5, atol=1e-3)


def test_gradients_reach_sparse_encoder():
    """Encoder gradients (through EmbeddingBag and an MLP) match the dense reference."""
    import scipy.sparse as sp

    gen = np.random.default_rng(0)
    X = sp.random(20, 50, density=0.2, format="csr", random_state=0, dtype=np.float32)
    torch.manual_seed(0)
    enc = SparseEncoder(50, 16, hidden=(32, 32), residual=True, normalize=True)
    t = _table(211, 16, 3, True)
    rows = np.array([3, 0, 7, 7, 19, 11])
    indptr, ids, vals = _targets(len(rows), 211, gen)
    t.full_softmax_loss(enc.encode_csr(X, rows), indptr, ids, vals, chunk_size=40).backward()
    got = [p.grad.clone() for p in enc.parameters()]

    enc64 = SparseEncoder(50, 16, hidden=(32, 32), residual=True, normalize=True).double()
    enc64.load_state_dict(enc.state_dict())
    inp, off, w = csr_to_bag(X, rows)
    e = enc64(inp, off, w.double())
    exact_softmax_reference(e, t.weight.detach().double(), t.bias.detach().double(),
                            _dense(indptr, ids, vals, len(rows), 211)).mean().backward()
    for g, p in zip(got, enc64.parameters()):
        torch.testing.assert_close(g.double(), p.grad, rtol=1e-5, atol=1e-7)


def test_full_softmax_step_with_row_adagrad_decreases_loss():
    gen = np.random.default_rng(1)
    t = _table(500, 16, 2, True)
    emb = torch.randn(8, 16)
    indptr, ids, vals = _targets(8, 500, gen)
    opt = RowAdagrad(t.parameters(), lr=0.5)
    first = t.full_softmax_loss(emb, indptr, ids, vals, chunk_size=128)
    first.backward()
    opt.step()
    assert t.full_softmax_loss(emb, indptr, ids, vals, chunk_size=128).item() < first.item()


# ------------------------------------------------------------------ bad input
def _bad_setup():
    t = _table(100, 8, 2, True)
    emb = torch.randn(3, 8, requires_grad=True)
    indptr = torch.tensor([0, 1, 3, 4])
    ids = torch.tensor([5, 10, 20, 99])
    vals = torch.tensor([1.0, 0.5, 0.5, 1.0])
    return t, emb, indptr, ids, vals


@pytest.mark.parametrize("mutate,message", [
    (lambda a: a[3].__setitem__(1, 100),
     "t_ids: expected label ids in [0, 100), got 100 (row 1)"),
    (lambda a: a[3].__setitem__(0, -1),
     "t_ids: expected label ids in [0, 100), got -1 (row 0)"),
    (lambda a: a[4].__setitem__(1, 0.4),
     "targets: expected every row to sum to 1 (within 0.0001), got 0.9 in row 1 (1 rows off)"),
    (lambda a: a[4].__setitem__(3, math.nan),
     "t_vals: expected finite values, got nan (row 2)"),
    (lambda a: a[4].__setitem__(0, math.inf),
     "t_vals: expected finite values, got inf (row 0)"),
    (lambda a: (a[4].__setitem__(1, -0.5), a[4].__setitem__(2, 1.5)),
     "t_vals: expected non-negative target mass, got -0.5 (row 1)"),
    (lambda a: a[1].data.__setitem__((2, 3), math.nan),
     "emb: expected finite values, got nan at row 2, column 3"),
    (lambda a: a[1].data.__setitem__((0, 0), -math.inf),
     "emb: expected finite values, got -inf at row 0, column 0"),
])
def test_bad_input_raises_before_any_change(mutate, message):
    args = list(_bad_setup())
    mutate(args)
    t = args[0]
    before = [p.detach().clone() for p in t.parameters()]
    opt = RowAdagrad(t.parameters(), lr=0.1)
    with pytest.raises(ValueError) as exc:
        t.full_softmax_loss(*args[1:]).backward()
        opt.step()
    assert str(exc.value) == message
    for b, p in zip(before, t.parameters()):
        assert torch.equal(b, p.detach()) and p.grad is None


def test_bad_shapes_and_options():
    t, emb, indptr, ids, vals = _bad_setup()
    with pytest.raises(ValueError, match=r"^t_indptr: expected shape \[B \+ 1\] = \[4\], got \[3\]$"):
        t.full_softmax_loss(emb, indptr[:3], ids, vals)
    with pytest.raises(ValueError, match=r"^emb: expected shape \[B, 8\], got \[3, 7\]$"):
        t.full_softmax_loss(emb[:, :7], indptr, ids, vals)
    with pytest.raises(ValueError, match=r"^t_indptr: expected to start at 0 and end at nnz = 3, "
                                         r"got 0 and 4$"):
        t.full_softmax_loss(emb, indptr, ids[:3], vals[:3])
    with pytest.raises(ValueError, match=r"^reduction: expected one of \['mean', 'sum', 'none'\], "
                                         r"got 'avg'$"):
        t.full_softmax_loss(emb, indptr, ids, vals, reduction="avg")
    with pytest.raises(TypeError, match=r"^t_ids: expected an integer array, got dtype torch.float32$"):
        t.full_softmax_loss(emb, indptr, ids.float(), vals)


def test_nonfinite_loss_raises():
    t, emb, indptr, ids, vals = _bad_setup()
    with torch.no_grad():
        t.weight[7, 0] = math.nan
    with pytest.raises(FloatingPointError) as exc:
        t.full_softmax_loss(emb, indptr, ids, vals)
    assert str(exc.value).startswith(
        "full_softmax_loss: expected a finite loss, got non-finite values in 3 of 3 rows "
        "(first: row 0)")


def test_constructor_validation():
    with pytest.raises(ValueError, match=r"^num_labels: expected an integer >= 1, got 0$"):
        ShardedLabelTable(0, 4)
    with pytest.raises(ValueError, match=r"^dtype: expected torch.float32 or torch.bfloat16, "
                                         r"got torch.float16$"):
        ShardedLabelTable(10, 4, dtype=torch.float16)
    t = ShardedLabelTable(10, 4, num_shards=4)
    assert t.shard_bounds == [(0, 2), (2, 5), (5, 7), (7, 10)]
    assert (t.lo, t.hi, t.num_labels, t.dim) == (0, 10, 10, 4)
    assert t.weight_numpy().shape == (10, 4) and t.weight_numpy().dtype == np.float32


def test_bf16_path_runs_on_cpu_and_stays_close_to_fp32():
    """The bf16 option (meant for GPUs, see test_softmax_gpu.py) also runs on CPU."""
    gen = np.random.default_rng(2)
    B, d, L = 8, 32, 700
    t32 = _table(L, d, 2, True)
    t16 = ShardedLabelTable(L, d, num_shards=2, bias=True, dtype=torch.bfloat16)
    with torch.no_grad():
        t16.weight.copy_(t32.weight)
        t16.bias.copy_(t32.bias)
    emb = torch.randn(B, d)
    indptr, ids, vals = _targets(B, L, gen)
    losses, grads = [], []
    for t in (t32, t16):
        e = emb.clone().requires_grad_()
        loss = t.full_softmax_loss(e, indptr, ids, vals, chunk_size=128)
        loss.backward()
        losses.append(loss.item())
        grads.append(e.grad)
    assert t16.weight.grad.dtype == torch.bfloat16 and grads[1].dtype == torch.float32
    assert abs(losses[1] - losses[0]) < 0.05 * abs(losses[0])
    assert torch.nn.functional.cosine_similarity(grads[0].flatten(), grads[1].flatten(), dim=0) > 0.98
    s, i = t16.topk(emb, 5)
    assert s.dtype == np.float32 and i.shape == (B, 5)


@pytest.mark.parametrize("chunk,cache", [(64, 0), (64, 1 << 30), (65536, 1 << 30)])
def test_backward_twice_with_retain_graph(chunk, cache):
    gen = np.random.default_rng(3)
    t = _table(300, 8, 1, True)
    emb = torch.randn(4, 8, requires_grad=True)
    indptr, ids, vals = _targets(4, 300, gen)
    loss = t.full_softmax_loss(emb, indptr, ids, vals, chunk_size=chunk, cache_bytes=cache)
    loss.backward(retain_graph=True)
    g1 = (emb.grad.clone(), t.weight.grad.clone())
    loss.backward()
    torch.testing.assert_close(emb.grad, 2 * g1[0])
    torch.testing.assert_close(t.weight.grad, 2 * g1[1])
