"""bf16 weights and logits with fp32 log-sum-exp on a GPU agree with fp32 (marker ``gpu``)."""

import numpy as np
import pytest
import torch

from xmr.models import ShardedLabelTable

pytestmark = pytest.mark.gpu


@pytest.fixture(autouse=True)
def _need_cuda():
    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA device")


def _pair(L=50_000, d=128, B=64, seed=0):
    torch.manual_seed(seed)
    t32 = ShardedLabelTable(L, d, num_shards=3, bias=True, device="cuda")
    t16 = ShardedLabelTable(L, d, num_shards=3, bias=True, device="cuda", dtype=torch.bfloat16)
    with torch.no_grad():
        t32.bias.normal_(0, 0.1)
        t16.weight.copy_(t32.weight)
        t16.bias.copy_(t32.bias)
        t32.weight.copy_(t16.weight.float())  # compare on the same (bf16-representable) values
        t32.bias.copy_(t16.bias.float())
    emb = torch.nn.functional.normalize(torch.randn(B, d, device="cuda"), dim=1) * 4
    gen = np.random.default_rng(seed)
    ids = torch.from_numpy(gen.choice(L, size=(B, 3))).reshape(-1).cuda()
    indptr = torch.arange(0, 3 * B + 1, 3, device="cuda")
    vals = torch.full((3 * B,), 1 / 3, device="cuda")
    return t32, t16, emb, indptr, ids, vals


def test_bf16_full_softmax_close_to_fp32():
    t32, t16, emb, indptr, ids, vals = _pair()
    out = []
    for t in (t32, t16):
        e = emb.clone().requires_grad_()
        loss = t.full_softmax_loss(e, indptr, ids, vals, chunk_size=8192)
        loss.backward()
        out.append((loss.item(), e.grad.float(), t.weight.grad.float()))
    (l32, e32, w32), (l16, e16, w16) = out
    assert abs(l16 - l32) / abs(l32) < 1e-2
    assert torch.nn.functional.cosine_similarity(e16.flatten(), e32.flatten(), dim=0) > 0.99
    assert torch.nn.functional.cosine_similarity(w16.flatten(), w32.flatten(), dim=0) > 0.99


def test_bf16_topk_and_candidates_close_to_fp32():
    t32, t16, emb, *_ = _pair()
    s32, i32 = t32.topk(emb, 10)
    s16, i16 = t16.topk(emb, 10)
    overlap = np.mean([len(set(a) & set(b)) / 10 for a, b in zip(i32, i16)])
    assert overlap > 0.8
    cand = torch.arange(0, 50_000, 25, device="cuda")
    z32, z16 = t32.candidate_logits(emb, cand), t16.candidate_logits(emb, cand)
    assert z16.dtype == torch.float32
    torch.testing.assert_close(z16, z32, rtol=0.05, atol=0.05)
