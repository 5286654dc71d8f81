"""The multilabel reductions (pal-n, pal, decoupled) against dense float64 references written
from their definitions (DESIGN.md §5), on the exact path over all labels and on the candidate
path, values and gradients, with teacher mass, rows without positives and positives that
straddle chunk and shard boundaries."""

import numpy as np
import pytest
import torch

from xmr.models import ShardedLabelTable
from xmr.objectives.config import LossConfig
from xmr.objectives.loss import UnifiedObjective
from xmr.objectives.targets import REDUCTIONS, reduction_targets

L, D, B = 23, 5, 6
ALPHA, TAU = 0.3, 1.7
# row 0: three positives spread over chunks; row 3: no positive (teacher only); row 5: one
POS = [[0, 11, 22], [4, 5], [7], [], [1, 2, 3, 19], [13]]


def _pos_csr():
    return (np.r_[0, np.cumsum([len(p) for p in POS])].astype(np.int64),
            np.array([j for p in POS for j in p], dtype=np.int64))


def _teacher(rng):
    ids = [rng.choice(L, 4, replace=False) for _ in range(B)]
    ids[1] = np.array([4, 9, 10, 12])  # overlaps a positive
    ptr = np.arange(0, 4 * B + 1, 4, dtype=np.int64)
    return ptr, np.concatenate(ids).astype(np.int64), (rng.normal(size=4 * B) * 2).astype(np.float32)


def reference(S, teacher, alpha, tau, reduction, visible=None):
    """Per-row loss f64[B] from the definitions; ``visible`` bool[B, L] restricts every
    partition to a row's candidate cells (None: all labels)."""
    out = []
    for i in range(S.shape[0]):
        s = S[i]
        vis = torch.ones(L, dtype=torch.bool) if visible is None else visible[i]
        lse = torch.logsumexp(s[vis], 0)
        P = POS[i]
        q = torch.zeros(L, dtype=torch.float64)
        if teacher is not None and alpha > 0:
            ptr, ids, lg = teacher
            z = torch.tensor(lg[ptr[i]:ptr[i + 1]], dtype=torch.float64) / tau
            q[torch.as_tensor(ids[ptr[i]:ptr[i + 1]])] += torch.softmax(z, 0)
        has_t = bool(q.sum() > 0)
        a = (alpha if P else 1.0) if has_t else 0.0
        if reduction == "pal-n":
            ypart = sum(lse - s[p] for p in P) / max(len(P), 1)
        elif reduction == "pal":
            ypart = sum(lse - s[p] for p in P)
        else:
            negs = vis.clone()
            negs[P] = False
            neg = torch.logsumexp(s[negs], 0)
            ypart = sum(torch.logaddexp(s[p], neg) - s[p] for p in P) / max(len(P), 1)
        qpart = lse * q.sum() - (q * s).sum()
        out.append((1 - a) * ypart + a * qpart if P else qpart)
    return torch.stack([torch.as_tensor(o, dtype=torch.float64) for o in out])


def _table(seed, shards=2):
    torch.manual_seed(seed)
    t = ShardedLabelTable(L, D, num_shards=shards)
    emb = torch.randn(B, D, requires_grad=True)
    return t, emb


@pytest.mark.parametrize("reduction", [r for r in REDUCTIONS if r != "ova"])
@pytest.mark.parametrize("with_teacher", [False, True])
def test_exact_path_matches_the_definition(reduction, with_teacher):
    rng = np.random.default_rng(1)
    teacher = _teacher(rng) if with_teacher else None
    table, emb = _table(0)
    pos = _pos_csr()
    if not with_teacher:  # a row without positives needs a teacher
        POS_ = [p if p else [8] for p in POS]
        pos = (np.r_[0, np.cumsum([len(p) for p in POS_])].astype(np.int64),
               np.array([j for p in POS_ for j in p], dtype=np.int64))
        saved = POS[3]
        POS[3] = [8]
    try:
        (ptr, ids, vals), positives, normalized = reduction_targets(pos, L, teacher, ALPHA, TAU,
                                                                    reduction)
        got = table.full_softmax_loss(emb, ptr, ids, vals, chunk_size=4, reduction="none",
                                      normalized=normalized, positives=positives,
                                      cache_bytes=0 if reduction == "decoupled" else 10 ** 6)
        S = emb.double() @ table.weight.double().T
        want = reference(S, teacher, ALPHA, TAU, reduction)
    finally:
        if not with_teacher:
            POS[3] = saved
    torch.testing.assert_close(got.double(), want, rtol=1e-5, atol=1e-6)
    w = torch.linspace(0.5, 1.5, B, dtype=torch.float64)  # unequal upstream gradients
    g_got = torch.autograd.grad((got.double() * w).sum(), [emb, table.weight])
    g_want = torch.autograd.grad((want * w).sum(), [emb, table.weight])
    for a, b in zip(g_got, g_want):
        torch.testing.assert_close(a.double(), b.double(), rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("reduction", ["pal", "decoupled"])
@pytest.mark.parametrize("alpha", [0.0, ALPHA])
def test_candidate_path_matches_the_definition(reduction, alpha):
    """share_columns and no random draws: every row sees the union of the batch's P ∪ T ∪ H
    ids, no offsets — a candidate set the reference builds by itself."""
    rng = np.random.default_rng(3)
    teacher = _teacher(rng)
    table, emb = _table(4)
    pos = _pos_csr()
    mined_lists = [rng.choice(L, 3, replace=False) for _ in range(B)]
    mined = (np.arange(0, 3 * B + 1, 3, dtype=np.int64), np.concatenate(mined_lists).astype(np.int64))
    cfg = LossConfig(preset="double-distill", alpha=alpha, tau_t=TAU, num_random=0,
                     reduction=reduction, teacher_k=4, teacher_term="shared")
    obj = UnifiedObjective(cfg, L)
    saved = POS[3]
    if alpha == 0.0:  # teacher ids still enter A (teacher_negatives) but carry no target mass,
        POS[3] = [8]  # so every row needs a positive
    try:
        pos = _pos_csr()
        got, info = obj(emb, table, pos, teacher, mined, step=0)
        S = emb.double() @ table.weight.double().T
        union = set(pos[1].tolist()) | set(teacher[1].tolist()) | set(mined[1].tolist())
        vis = torch.zeros(B, L, dtype=torch.bool)
        vis[:, sorted(union)] = True
        want = reference(S, teacher, alpha, TAU, reduction, visible=vis)
    finally:
        POS[3] = saved
    assert info["num_candidates"] == len(union)
    torch.testing.assert_close(got.double(), want.mean(), rtol=1e-5, atol=1e-6)
    g_got = torch.autograd.grad(got, [emb, table.weight])
    g_want = torch.autograd.grad(want.mean(), [emb, table.weight])
    torch.testing.assert_close(g_got[0].double(), g_want[0].double(), rtol=1e-4, atol=1e-6)
    gw = g_got[1].to_dense() if g_got[1].is_sparse else g_got[1]
    torch.testing.assert_close(gw.double(), g_want[1].double(), rtol=1e-4, atol=1e-6)


def test_unknown_reduction_is_a_config_error():
    from xmr.errors import ConfigError

    with pytest.raises(ConfigError, match="loss.reduction: expected one of pal-n, pal, decoupled, "
                                          "ova, got 'bce'"):
        LossConfig(preset="softmax", reduction="bce").resolved()
    with pytest.raises(ConfigError, match="loss.teacher_term: expected one of shared, decoupled, "
                                          "got 'mixed'"):
        LossConfig(preset="distill", teacher_term="mixed").resolved()
    with pytest.raises(ConfigError, match="loss.glas: expected a weight >= 0, got -1.0"):
        LossConfig(preset="softmax", glas=-1.0).resolved()
