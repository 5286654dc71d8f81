"""Candidate logits: values and gradients match a dense reference; gradients are sparse rows;
sparse optimizer steps leave every untouched row (and its optimizer state) bit-identical."""

import numpy as np
import pytest
import torch

from xmr.models import DenseEncoder, RowAdagrad, ShardedLabelTable


def _setup(L=1000, d=16, B=6, bias=True, seed=0):
    torch.manual_seed(seed)
    t = ShardedLabelTable(L, d, num_shards=3, bias=bias)
    if bias:
        with torch.no_grad():
            t.bias.normal_()
    emb = torch.randn(B, d, requires_grad=True)
    cand = torch.tensor([7, 999, 0, 513, 7, 250])  # a duplicate on purpose
    return t, emb, cand


def test_values_and_gradients_match_dense():
    t, emb, cand = _setup()
    lb = torch.randn(emb.shape[0], cand.numel())
    z = t.candidate_logits(emb, cand, logit_bias=lb)
    w = torch.randn_like(z)
    (z * w).sum().backward()
    assert z.shape == (6, 6) and z.dtype == torch.float32
    assert t.weight.grad.is_sparse and t.bias.grad.is_sparse

    e2 = emb.detach().clone().requires_grad_()
    W2 = t.weight.detach().clone().requires_grad_()
    b2 = t.bias.detach().clone().requires_grad_()
    z2 = e2 @ W2[cand].T + b2[cand] + lb
    (z2 * w).sum().backward()
    torch.testing.assert_close(z, z2)
    torch.testing.assert_close(emb.grad, e2.grad)
    torch.testing.assert_close(t.weight.grad.to_dense(), W2.grad)
    torch.testing.assert_close(t.bias.grad.to_dense(), b2.grad)
    touched = set(t.weight.grad.coalesce().indices()[0].tolist())
    assert touched == {0, 7, 250, 513, 999}


@pytest.mark.parametrize("make_opt", [
    lambda ps: RowAdagrad(ps, lr=0.1),
    lambda ps: torch.optim.SparseAdam(ps, lr=0.1),
    lambda ps: torch.optim.SGD(ps, lr=0.1),
])
def test_sparse_steps_touch_only_used_rows(make_opt):
    t, emb, cand = _setup()
    opt = make_opt(list(t.parameters()))
    used = torch.zeros(t.num_labels, dtype=torch.bool)
    # a first step over other rows creates optimizer state everywhere it will be compared
    for ids in (torch.tensor([1, 2, 3, 7]), cand):
        before_w, before_b = t.weight.detach().clone(), t.bias.detach().clone()
        before_state = {k: {n: v.clone() for n, v in s.items() if torch.is_tensor(v) and v.dim() > 0}
                        for k, s in ((id(p), opt.state[p]) for p in t.parameters())}
        opt.zero_grad()
        t.candidate_logits(emb, ids).pow(2).sum().backward()
        opt.step()
        used[:] = False
        used[ids] = True
        assert not torch.equal(t.weight.detach()[used], before_w[used])
        assert torch.equal(t.weight.detach()[~used], before_w[~used])
        assert torch.equal(t.bias.detach()[~used], before_b[~used])
        for p in t.parameters():
            for n, v in opt.state[p].items():
                if torch.is_tensor(v) and v.dim() > 0 and n in before_state[id(p)]:
                    assert torch.equal(v[~used], before_state[id(p)][n][~used]), n


def test_row_adagrad_matches_formula_sparse_and_dense():
    torch.manual_seed(0)
    W = torch.nn.Parameter(torch.randn(10, 4))
    W0 = W.detach().clone()
    opt = RowAdagrad([W], lr=0.3, eps=1e-8, initial_accumulator=0.1)
    g = torch.randn(10, 4)
    W.grad = g.clone()
    opt.step()
    acc = 0.1 + g.pow(2).mean(1)
    torch.testing.assert_close(W.detach(), W0 - 0.3 * g / (acc.sqrt() + 1e-8)[:, None])
    # now a sparse gradient on rows 2 and 5 (row 5 twice: coalesced)
    W1 = W.detach().clone()
    gs = torch.sparse_coo_tensor(torch.tensor([[2, 5, 5]]), torch.ones(3, 4), (10, 4),
                                 check_invariants=True)
    W.grad = gs
    opt.step()
    g2 = gs.to_dense()
    acc2 = acc + g2.pow(2).mean(1)
    expect = W1 - 0.3 * g2 / (acc2.sqrt() + 1e-8)[:, None]
    torch.testing.assert_close(W.detach(), expect)
    assert torch.equal(opt.state[W]["sum"][[0, 1, 3, 4, 6, 7, 8, 9]], acc[[0, 1, 3, 4, 6, 7, 8, 9]])


def test_encoder_dense_optimizer_and_table_sparse_optimizer_step():
    """The intended training step: Adam on the encoder, RowAdagrad on the table."""
    torch.manual_seed(0)
    enc = DenseEncoder(12, 8, hidden=(16,))
    t = ShardedLabelTable(300, 8, num_shards=2, bias=True)
    x = torch.randn(5, 12)
    cand = torch.arange(0, 300, 13)
    pos = torch.tensor([0, 1, 2, 3, 4])
    o_enc, o_tab = torch.optim.Adam(enc.parameters(), 1e-2), RowAdagrad(t.parameters(), lr=0.1)
    losses = []
    for _ in range(5):
        o_enc.zero_grad(), o_tab.zero_grad()
        loss = torch.nn.functional.cross_entropy(t.candidate_logits(enc(x), cand), pos)
        loss.backward()
        o_enc.step(), o_tab.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0]


def test_bad_candidates():
    t, emb, cand = _setup()
    with pytest.raises(ValueError) as exc:
        t.candidate_logits(emb, torch.tensor([3, 1000]))
    assert str(exc.value) == "cand_ids: expected label ids in [0, 1000), got 1000 (position 1)"
    with pytest.raises(ValueError) as exc:
        t.candidate_logits(emb, cand, logit_bias=torch.zeros(6, 5))
    assert str(exc.value) == "logit_bias: expected a tensor of shape [B, C] = [6, 6], got [6, 5]"
    with pytest.raises(ValueError) as exc:
        t.candidate_logits(emb, cand.view(2, 3))
    assert str(exc.value) == "cand_ids: expected a 1-d array, got shape [2, 3]"
    with pytest.raises(TypeError) as exc:
        t.candidate_logits(emb, cand.float())
    assert str(exc.value) == "cand_ids: expected an integer array, got dtype torch.float32"
    assert t.weight.grad is None


def test_numpy_candidate_ids():
    t, emb, _ = _setup(bias=False)
    z = t.candidate_logits(emb, np.array([1, 2, 3]))
    torch.testing.assert_close(z, emb @ t.weight[[1, 2, 3]].T)
