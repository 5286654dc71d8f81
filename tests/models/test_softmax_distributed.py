"""Two gloo processes on 127.0.0.1 give the single-process results (to fp32 rounding): full
softmax loss and gradients (also the decoupled reduction, its decoupled teacher term, and the
one-versus-all loss) (each rank's slice of W and b, the DDP encoder), candidate logits and
their gradients, top-k; and bad input on one rank raises on both instead of hanging."""

import os

import numpy as np
import pytest
import torch
import torch.distributed as dist
from _helpers import run_ranks

from xmr.models import DenseEncoder, ShardedLabelTable

WORLD, L, D, IN = 2, 1003, 8, 12
SPLIT = [5, 3]  # uneven batch sizes on purpose


def _problem():
    """The whole problem, built identically in every process."""
    g = torch.Generator().manual_seed(0)
    gen = np.random.default_rng(0)
    B = sum(SPLIT)
    x = torch.randn(B, IN, generator=g)
    W = torch.randn(L, D, generator=g) * 0.5
    b = torch.randn(L, generator=g)
    indptr, ids, vals = [0], [], []
    for i in range(B):
        n = 300 if i == 1 else int(gen.integers(1, 4))
        row = gen.choice(L, size=n, replace=False)
        v = gen.random(n) + 0.1
        ids += row.tolist()
        vals += (v / v.sum()).tolist()
        indptr.append(len(ids))
    cands = [torch.tensor([0, 17, 500, 501, 1002, 17]), torch.tensor([3, 999, 250, 600])]
    wgts = [torch.randn(SPLIT[0], 6, generator=g), torch.randn(SPLIT[1], 4, generator=g)]
    lbias = [torch.randn(SPLIT[0], 6, generator=g), torch.randn(SPLIT[1], 4, generator=g)]
    q = torch.randn(B, D, generator=g)
    return dict(x=x, W=W, b=b, indptr=torch.tensor(indptr), ids=torch.tensor(ids),
                vals=torch.tensor(vals, dtype=torch.float32), cands=cands, wgts=wgts,
                lbias=lbias, q=q)


def _encoder():
    torch.manual_seed(1)
    return DenseEncoder(IN, D, hidden=(16,))


def _rows(r):
    r0 = sum(SPLIT[:r])
    return r0, r0 + SPLIT[r]


def _local_targets(p, r):
    a, b = _rows(r)
    ip = p["indptr"]
    s, e = int(ip[a]), int(ip[b])
    return ip[a:b + 1] - s, p["ids"][s:e], p["vals"][s:e]


def _first_and_rest(ip, ids, vals):
    """Each row's first target as its positive (weight 2 × its value), the rest as soft targets
    off the positives: the decoupled teacher term's input."""
    lens = (ip[1:] - ip[:-1]).clamp(max=1)
    first = torch.zeros(ids.shape[0], dtype=torch.bool)
    first[ip[:-1][lens > 0]] = True
    pp = torch.cat([torch.zeros(1, dtype=torch.int64), torch.cumsum(lens, 0)])
    rest_len = (ip[1:] - ip[:-1]) - lens
    rp = torch.cat([torch.zeros(1, dtype=torch.int64), torch.cumsum(rest_len, 0)])
    return (pp, ids[first], 2 * vals[first]), (rp, ids[~first], vals[~first])


def _worker(rank, out_dir):
    p = _problem()
    enc = torch.nn.parallel.DistributedDataParallel(_encoder())
    table = ShardedLabelTable(L, D, num_shards=2, bias=True, process_group=dist.group.WORLD)
    with torch.no_grad():
        table.weight.copy_(p["W"][table.lo:table.hi])
        table.bias.copy_(p["b"][table.lo:table.hi])
    a, b = _rows(rank)
    out = {"lo": table.lo, "hi": table.hi}

    # 1. exact full softmax
    loss = table.full_softmax_loss(enc(p["x"][a:b]), *_local_targets(p, rank), chunk_size=97,
                                   reduction="none", cache_bytes=8 * 97 * 4 * 3)
    loss.sum().backward()
    out["loss"] = loss.detach()
    out["gW"], out["gb"] = table.weight.grad.clone(), table.bias.grad.clone()
    out["genc"] = [q.grad.clone() for q in enc.parameters()]

    # 1b. the decoupled reduction: the targets as positives, half of them as soft targets
    table.zero_grad(set_to_none=True)
    enc.zero_grad(set_to_none=True)
    ip, ids, vals = _local_targets(p, rank)
    loss = table.full_softmax_loss(enc(p["x"][a:b]), ip, ids, 0.5 * vals, chunk_size=97,
                                   reduction="none", normalized=False,
                                   positives=(ip, ids, vals))
    loss.sum().backward()
    out["dloss"] = loss.detach()
    out["dgW"], out["dgb"] = table.weight.grad.clone(), table.bias.grad.clone()
    out["dgenc"] = [q.grad.clone() for q in enc.parameters()]

    # 1c. the decoupled teacher term (soft targets against the negatives only)
    for key in ("n", "o"):
        table.zero_grad(set_to_none=True)
        enc.zero_grad(set_to_none=True)
        ip, ids, vals = _local_targets(p, rank)
        if key == "n":
            (pp, pi, pw), (rp, ri, rv) = _first_and_rest(ip, ids, vals)
            loss = table.full_softmax_loss(enc(p["x"][a:b]), rp, ri, rv, chunk_size=97,
                                           reduction="none", normalized=False,
                                           positives=(pp, pi, pw), soft_on_neg=True)
        else:  # 1d. one-versus-all over all labels
            loss = table.full_ova_loss(enc(p["x"][a:b]), ip, ids, vals, chunk_size=97,
                                       reduction="none")
        loss.sum().backward()
        out[key + "loss"] = loss.detach()
        out[key + "gW"], out[key + "gb"] = table.weight.grad.clone(), table.bias.grad.clone()
        out[key + "genc"] = [q.grad.clone() for q in enc.parameters()]

    # 2. candidate logits (each rank its own candidate set)
    table.zero_grad(set_to_none=True)
    enc.zero_grad(set_to_none=True)
    z = table.candidate_logits(enc(p["x"][a:b]), p["cands"][rank], logit_bias=p["lbias"][rank])
    (z * p["wgts"][rank]).sum().backward()
    out["z"] = z.detach()
    out["cgW"], out["cgb"] = table.weight.grad.to_dense(), table.bias.grad.to_dense()
    out["cgenc"] = [q.grad.clone() for q in enc.parameters()]

    # 3. exact top-k
    out["topk"] = table.topk(p["q"][a:b], 7, query_chunk=2, label_chunk=100)

    # 4. bad input on rank 1 only: both ranks raise, neither hangs
    ip, ids, vals = _local_targets(p, rank)
    if rank == 1:
        ids = ids.clone()
        ids[0] = L
    try:
        table.full_softmax_loss(torch.zeros(SPLIT[rank], D), ip, ids, vals)
        out["error"] = None
    except ValueError as e:
        out["error"] = str(e)
    torch.save(out, os.path.join(out_dir, f"rank{rank}.pt"))


@pytest.mark.distributed
def test_two_gloo_ranks_match_single_process(tmp_path):
    run_ranks(_worker, str(tmp_path), world=WORLD, timeout_s=120, pg_timeout_s=60)
    res = [torch.load(tmp_path / f"rank{r}.pt", weights_only=False) for r in range(WORLD)]
    assert [(r["lo"], r["hi"]) for r in res] == [(0, 501), (501, 1003)]

    # single-process reference on the same data; DDP averages over ranks, so the objective the
    # distributed gradients belong to is (1/world) Σ_ranks loss_rank
    p = _problem()
    enc = _encoder()
    table = ShardedLabelTable(L, D, num_shards=3, bias=True)
    with torch.no_grad():
        table.weight.copy_(p["W"])
        table.bias.copy_(p["b"])
    loss = table.full_softmax_loss(enc(p["x"]), p["indptr"], p["ids"], p["vals"], chunk_size=128,
                                   reduction="none")
    (loss.sum() / WORLD).backward()
    close = dict(rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(torch.cat([r["loss"] for r in res]), loss.detach(), **close)
    for r in res:
        torch.testing.assert_close(r["gW"], table.weight.grad[r["lo"]:r["hi"]], **close)
        torch.testing.assert_close(r["gb"], table.bias.grad[r["lo"]:r["hi"]], **close)
        for g, q in zip(r["genc"], enc.parameters()):
            torch.testing.assert_close(g, q.grad, **close)

    table.zero_grad(set_to_none=True)
    enc.zero_grad(set_to_none=True)
    loss = table.full_softmax_loss(enc(p["x"]), p["indptr"], p["ids"], 0.5 * p["vals"],
                                   chunk_size=128, reduction="none", normalized=False,
                                   positives=(p["indptr"], p["ids"], p["vals"]))
    (loss.sum() / WORLD).backward()
    torch.testing.assert_close(torch.cat([r["dloss"] for r in res]), loss.detach(), **close)
    for r in res:
        torch.testing.assert_close(r["dgW"], table.weight.grad[r["lo"]:r["hi"]], **close)
        torch.testing.assert_close(r["dgb"], table.bias.grad[r["lo"]:r["hi"]], **close)
        for g, q in zip(r["dgenc"], enc.parameters()):
            torch.testing.assert_close(g, q.grad, **close)

    for key in ("n", "o"):
        table.zero_grad(set_to_none=True)
        enc.zero_grad(set_to_none=True)
        if key == "n":
            (pp, pi, pw), (rp, ri, rv) = _first_and_rest(p["indptr"], p["ids"], p["vals"])
            loss = table.full_softmax_loss(enc(p["x"]), rp, ri, rv, chunk_size=128,
                                           reduction="none", normalized=False,
                                           positives=(pp, pi, pw), soft_on_neg=True)
        else:
            loss = table.full_ova_loss(enc(p["x"]), p["indptr"], p["ids"], p["vals"],
                                       chunk_size=128, reduction="none")
        (loss.sum() / WORLD).backward()
        # OvA sums ~L sigmoids per row: its gradients are ~L/2 larger, so is their fp32 rounding
        tol = close if key == "n" else dict(rtol=1e-4, atol=1e-4)
        torch.testing.assert_close(torch.cat([r[key + "loss"] for r in res]), loss.detach(), **tol)
        for r in res:
            torch.testing.assert_close(r[key + "gW"], table.weight.grad[r["lo"]:r["hi"]], **tol)
            torch.testing.assert_close(r[key + "gb"], table.bias.grad[r["lo"]:r["hi"]], **tol)
            for g, q in zip(r[key + "genc"], enc.parameters()):
                torch.testing.assert_close(g, q.grad, **tol)

    table.zero_grad(set_to_none=True)
    enc.zero_grad(set_to_none=True)
    total = 0
    for rank in range(WORLD):
        a, b = _rows(rank)
        z = table.candidate_logits(enc(p["x"][a:b]), p["cands"][rank], logit_bias=p["lbias"][rank])
        torch.testing.assert_close(res[rank]["z"], z.detach(), **close)
        total = total + (z * p["wgts"][rank]).sum()
    (total / WORLD).backward()
    gW, gb = table.weight.grad.to_dense(), table.bias.grad.to_dense()
    for r in res:
        torch.testing.assert_close(r["cgW"], gW[r["lo"]:r["hi"]], **close)
        torch.testing.assert_close(r["cgb"], gb[r["lo"]:r["hi"]], **close)
        for g, q in zip(r["cgenc"], enc.parameters()):
            torch.testing.assert_close(g, q.grad, **close)

    s, i = table.topk(p["q"], 7)
    np.testing.assert_array_equal(np.concatenate([r["topk"][1] for r in res]), i)
    np.testing.assert_allclose(np.concatenate([r["topk"][0] for r in res]), s, rtol=1e-6, atol=1e-6)

    assert res[1]["error"] == "t_ids: expected label ids in [0, 1003), got 1003 (row 0)"
    assert res[0]["error"] == ("full_softmax_loss: rank(s) [1] rejected their input (see the "
                               "error raised there); nothing was computed")
