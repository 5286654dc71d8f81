"""The candidate loss against a reference that owes nothing to the code under test: the offsets
are computed by hand from the proposal (uniform: E[count_j] = m / L with replacement), the
batch contains an accidental hit on purpose, and the masking of other rows' positives follows
DESIGN.md §5. Plus the convergence of sampled to exact softmax with ``unique_sampling=True``,
the training default."""

import numpy as np
import torch

from xmr.models import ShardedLabelTable
from xmr.objectives.config import LossConfig
from xmr.objectives.loss import UnifiedObjective

L, D, B, M = 53, 6, 5, 30
SEED, STEP = 7, 2


def test_candidate_loss_equals_a_hand_built_reference_with_an_accidental_hit():
    torch.manual_seed(0)
    table = ShardedLabelTable(L, D, num_shards=2)
    emb = torch.randn(B, D, dtype=torch.float32, requires_grad=True)
    cfg = LossConfig(preset="sampled", num_random=M, share_columns=False, proposal="uniform",
                     unique_sampling=False, reduction="pal-n")
    obj = UnifiedObjective(cfg, L, seed=SEED)
    ids, lec = obj.sampler.sample(M, np.random.default_rng([SEED, STEP]), unique=False)
    np.testing.assert_allclose(lec, np.log(M / L))  # the proposal's E[count], by hand
    drawn = [int(j) for j in ids]
    # row 0's first positive is also a random draw: an accidental hit
    rng = np.random.default_rng(1)
    pos_lists = [[drawn[0], int((drawn[0] + 1) % L)]] + \
        [sorted(rng.choice(L, 2, replace=False).tolist()) for _ in range(B - 1)]
    pos = (np.r_[0, np.cumsum([len(p) for p in pos_lists])].astype(np.int64),
           np.concatenate(pos_lists).astype(np.int64))
    loss, _ = obj(emb, table, pos, step=STEP)

    S = emb.double() @ table.weight.double().T  # [B, L]
    counts = np.bincount(drawn, minlength=L)
    ref = []
    for i in range(B):
        P = set(pos_lists[i])
        cols, bias = [], []
        for j in sorted(P):  # deterministic: offset 0 (correct_positives is off)
            cols.append(j)
            bias.append(0.0)
        for j in sorted(set(drawn) - P):  # sampled, duplicates collapsed: log c - log E[count]
            cols.append(j)
            bias.append(np.log(counts[j]) - np.log(M / L))
        # other rows' positives are not visible (share_columns=False): simply absent here
        z = S[i, cols] + torch.tensor(bias, dtype=torch.float64)
        target = torch.tensor([1.0 / len(P) if j in P else 0.0 for j in cols], dtype=torch.float64)
        ref.append(torch.logsumexp(z, 0) - (target * z).sum())
    ref = torch.stack(ref).mean()
    torch.testing.assert_close(loss.double(), ref, rtol=1e-5, atol=1e-6)
    g, = torch.autograd.grad(loss, [emb])
    g_ref, = torch.autograd.grad(ref, [emb])
    torch.testing.assert_close(g.double(), g_ref.double(), rtol=1e-4, atol=1e-6)


def test_unique_sampling_approaches_softmax_with_many_corrected_samples():
    """The convergence test of test_loss.py uses unique_sampling=False; training defaults to
    True (sampling without replacement, E[count] = 1 - (1 - q)^T)."""
    torch.manual_seed(3)
    table = ShardedLabelTable(L, D, num_shards=3)
    emb = torch.randn(B, D)
    rng = np.random.default_rng(3)
    pos_lists = [rng.choice(L, 2, replace=False) for _ in range(B)]
    pos = (np.r_[0, np.cumsum([len(p) for p in pos_lists])].astype(np.int64),
           np.concatenate(pos_lists).astype(np.int64))
    counts = (1000 / np.arange(1, L + 1) ** 1.2).astype(np.int64) + 1
    exact = UnifiedObjective(LossConfig(preset="softmax"), L)(emb, table, pos)[0].item()

    def avg(m):
        cfg = LossConfig(preset="sampled", num_random=m, share_columns=False,
                         unique_sampling=True, proposal="unigram", proposal_beta=1.0)
        obj = UnifiedObjective(cfg, L, label_counts=counts, seed=0)
        return np.mean([obj(emb, table, pos, step=s)[0].item() for s in range(20)])

    err_small, err_big = abs(avg(4) - exact), abs(avg(L - 3) - exact)
    assert err_big < 0.03 * exact
    assert err_big < err_small / 3
