"""One-versus-all and the decoupled teacher term against dense float64 references written from
their definitions, on the exact path (chunks and shards) and the candidate path, values and
gradients, with duplicated positives, rows without positives and teacher mass on positives; and
sampled OvA (importance-weighted random negatives) converging to the exact OvA loss."""

import numpy as np
import pytest
import torch

from xmr.models import ShardedLabelTable
from xmr.objectives.config import LossConfig
from xmr.objectives.loss import UnifiedObjective
from xmr.objectives.targets import ova_targets

L, D, B = 23, 5, 6
ALPHA, TAU = 0.3, 1.7
# row 0: positives across chunks; row 1: a duplicated positive (4 twice) the teacher also
# lists; row 3: no positive (teacher only); row 4: four positives
POS = [[0, 11, 22], [4, 4, 5], [7], [], [1, 2, 3, 19], [13]]


def _pos_csr(P=POS):
    return (np.r_[0, np.cumsum([len(p) for p in P])].astype(np.int64),
            np.array([j for p in P for j in p], dtype=np.int64))


def _teacher(rng):
    ids = [rng.choice(L, 4, replace=False) for _ in range(B)]
    ids[1] = np.array([4, 9, 10, 5])  # mass on both of row 1's positives
    ids[4] = np.array([1, 19, 8, 6])
    ptr = np.arange(0, 4 * B + 1, 4, dtype=np.int64)
    lg = rng.normal(size=4 * B) - 1.0  # log-probabilities of a tree teacher are < 0 mostly
    lg[5] = 0.4  # one above 0: min(1, exp(t)) clips it
    return ptr, np.concatenate(ids).astype(np.int64), lg.astype(np.float32)


def _teacher_q(teacher, i, tau, probabilities):
    q = torch.zeros(L, dtype=torch.float64)
    if teacher is None:
        return q
    ptr, ids, lg = teacher
    z = torch.tensor(lg[ptr[i]:ptr[i + 1]], dtype=torch.float64)
    idx = torch.as_tensor(ids[ptr[i]:ptr[i + 1]])
    q[idx] += torch.exp(z / tau).clamp(max=1.0) if probabilities else torch.softmax(z / tau, 0)
    return q.clamp(max=1.0) if probabilities else q


def ova_reference(S, teacher, alpha, tau, probabilities, weights=None):
    out = []
    for i in range(S.shape[0]):
        y = torch.zeros(L, dtype=torch.float64)
        y[list(set(POS[i]))] = 1.0
        q = _teacher_q(teacher if alpha > 0 else None, i, tau, probabilities)
        has_t = bool(q.sum() > 0)
        a = (alpha if POS[i] else 1.0) if has_t else 0.0
        t = (1 - a) * y + a * q
        w = torch.ones(L, dtype=torch.float64) if weights is None else weights[i]
        out.append((w * (torch.nn.functional.softplus(S[i]) - t * S[i])).sum())
    return torch.stack(out)


def decoupled_teacher_reference(S, teacher, alpha, tau, visible=None):
    """(1 − a)/|P| Σ_p [log(e^{s_p} + Σ_N e^{s_j}) − s_p] + a·(Σ_{j∈P} q_j [log(e^{s_j} + Σ_N) − s_j]
    + Σ_{j∉P} q_j [log Σ_N e^{s} − s_j]), N the row's visible non-positives."""
    out = []
    for i in range(S.shape[0]):
        s = S[i]
        vis = torch.ones(L, dtype=torch.bool) if visible is None else visible[i]
        P = POS[i]
        negs = vis.clone()
        negs[P] = False
        neg = torch.logsumexp(s[negs], 0)
        q = _teacher_q(teacher, i, tau, False)
        has_t = bool(q.sum() > 0)
        a = (alpha if P else 1.0) if has_t else 0.0
        ypart = sum(torch.logaddexp(s[p], neg) - s[p] for p in P) / max(len(P), 1)
        qpart = sum(q[j] * (torch.logaddexp(s[j], neg) - s[j]) for j in set(P))
        off = q.clone()
        off[P] = 0.0
        qpart = qpart + (off * (neg - s)).sum()
        out.append((1 - a) * ypart + a * qpart if P else qpart)
    return torch.stack([torch.as_tensor(o, dtype=torch.float64) for o in out])


def _table(seed, shards=2, bias=False):
    torch.manual_seed(seed)
    t = ShardedLabelTable(L, D, num_shards=shards, bias=bias)
    if bias:
        with torch.no_grad():
            t.bias.normal_()
    emb = torch.randn(B, D, requires_grad=True)
    return t, emb


def _scores(table, emb):
    S = emb.double() @ table.weight.double().T
    return S + table.bias.double() if table.bias is not None else S


def _check_grads(got, want, params, w=None):
    w = torch.linspace(0.5, 1.5, got.shape[0], dtype=torch.float64) if w is None else w
    g_got = torch.autograd.grad((got.double() * w).sum(), params)
    g_want = torch.autograd.grad((want * w).sum(), params)
    for a, b in zip(g_got, g_want):
        a = a.to_dense() if a.is_sparse else a
        torch.testing.assert_close(a.double(), b.double(), rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("probabilities", [False, True])
@pytest.mark.parametrize("alpha", [0.0, ALPHA, 1.0])
def test_exact_ova_matches_the_definition(alpha, probabilities):
    teacher = _teacher(np.random.default_rng(1))
    table, emb = _table(0, bias=True)
    cfg = LossConfig(preset="distill", reduction="ova", alpha=alpha, tau_t=TAU, teacher_k=4)
    obj = UnifiedObjective(cfg, L, full_softmax_chunk=4, teacher_probabilities=probabilities)
    if alpha == 0.0:
        cfg.preset = "softmax"
        obj = UnifiedObjective(cfg, L, full_softmax_chunk=4)
    ptr, ids, vals = ova_targets(_pos_csr(), L, teacher if alpha else None, alpha, TAU, probabilities)
    got = table.full_ova_loss(emb, ptr, ids, vals, chunk_size=4, reduction="none")
    want = ova_reference(_scores(table, emb), teacher, alpha, TAU, probabilities)
    torch.testing.assert_close(got.double(), want, rtol=1e-5, atol=1e-5)
    _check_grads(got, want, [emb, table.weight, table.bias])
    mean, info = obj(emb, table, _pos_csr(), teacher, step=0)  # the objective's exact path
    assert info["num_candidates"] == L
    torch.testing.assert_close(mean.double(), want.mean(), rtol=1e-5, atol=1e-5)


def test_ova_targets_count_a_duplicated_positive_once_and_stay_in_unit_range():
    teacher = _teacher(np.random.default_rng(1))
    ptr, ids, vals = ova_targets(_pos_csr(), L, teacher, 0.5, 1.0, teacher_probabilities=True)
    row1 = dict(zip(ids[ptr[1]:ptr[2]].tolist(), vals[ptr[1]:ptr[2]].tolist()))
    p4 = min(1.0, float(np.exp(teacher[2][4])))
    assert row1[4] == pytest.approx(0.5 + 0.5 * p4, rel=1e-6)  # not 2 × 0.5 from the duplicate
    assert vals.max() <= 1.0 and vals.min() > 0.0
    with pytest.raises(ValueError, match=r"t_vals: expected per-label targets in \[0, 1\], got 1.5"):
        table, emb = _table(0)
        table.full_ova_loss(emb, np.array([0, 1, 1, 1, 1, 1, 1]), np.array([3]), np.array([1.5]))


def test_exact_decoupled_teacher_term_matches_the_definition():
    teacher = _teacher(np.random.default_rng(2))
    table, emb = _table(3)
    cfg = LossConfig(preset="distill", reduction="decoupled", teacher_term="decoupled",
                     alpha=ALPHA, tau_t=TAU, teacher_k=4)
    obj = UnifiedObjective(cfg, L, full_softmax_chunk=4)
    got, _ = obj(emb, table, _pos_csr(), teacher, step=0)
    want = decoupled_teacher_reference(_scores(table, emb), teacher, ALPHA, TAU)
    torch.testing.assert_close(got.double(), want.mean(), rtol=1e-5, atol=1e-6)
    _check_grads(got.reshape(1), want.mean().reshape(1), [emb, table.weight])
    # and it differs from the shared form: the teacher's labels no longer push the positives down
    shared = UnifiedObjective(LossConfig(preset="distill", reduction="decoupled", alpha=ALPHA,
                                         tau_t=TAU, teacher_k=4, teacher_term="shared"), L)(emb, table, _pos_csr(), teacher)[0]
    assert abs(float(shared.detach()) - float(got.detach())) > 1e-3


def _candidate_inputs(rng):
    teacher = _teacher(rng)
    mined = (np.arange(0, 3 * B + 1, 3, dtype=np.int64),
             np.concatenate([rng.choice(L, 3, replace=False) for _ in range(B)]).astype(np.int64))
    return teacher, mined


def _union_visible(teacher, mined):
    union = set(_pos_csr()[1].tolist()) | set(teacher[1].tolist()) | set(mined[1].tolist())
    vis = torch.zeros(B, L, dtype=torch.bool)
    vis[:, sorted(union)] = True
    return vis, union


@pytest.mark.parametrize("alpha", [0.0, ALPHA])
def test_candidate_decoupled_teacher_term_matches_the_definition(alpha):
    teacher, mined = _candidate_inputs(np.random.default_rng(3))
    table, emb = _table(4)
    cfg = LossConfig(preset="double-distill", alpha=alpha, tau_t=TAU, num_random=0,
                     reduction="decoupled", teacher_term="decoupled", teacher_k=4)
    P = [p if p else [8] for p in POS] if alpha == 0.0 else POS
    saved = list(POS)
    POS[:] = P
    try:
        got, info = UnifiedObjective(cfg, L)(emb, table, _pos_csr(), teacher, mined, step=0)
        vis, union = _union_visible(teacher, mined)
        want = decoupled_teacher_reference(_scores(table, emb), teacher, alpha, TAU, visible=vis)
    finally:
        POS[:] = saved
    assert info["num_candidates"] == len(union)
    torch.testing.assert_close(got.double(), want.mean(), rtol=1e-5, atol=1e-6)
    _check_grads(got.reshape(1), want.mean().reshape(1), [emb, table.weight])


@pytest.mark.parametrize("probabilities", [False, True])
def test_candidate_ova_matches_the_definition(probabilities):
    """No random draws, shared columns: each row's terms run over the union of the batch's
    P ∪ T ∪ H ids with weight 1 (the labels outside the candidates are not in the loss)."""
    teacher, mined = _candidate_inputs(np.random.default_rng(5))
    table, emb = _table(6)
    cfg = LossConfig(preset="double-distill", alpha=ALPHA, tau_t=TAU, num_random=0,
                     reduction="ova", teacher_k=4)
    got, _ = UnifiedObjective(cfg, L, teacher_probabilities=probabilities)(
        emb, table, _pos_csr(), teacher, mined, step=0)
    vis, _ = _union_visible(teacher, mined)
    want = ova_reference(_scores(table, emb), teacher, ALPHA, TAU, probabilities,
                         weights=vis.double())
    torch.testing.assert_close(got.double(), want.mean(), rtol=1e-5, atol=1e-5)
    _check_grads(got.reshape(1), want.mean().reshape(1), [emb, table.weight])


def test_sampled_ova_estimates_the_exact_ova_loss():
    """Random negatives weighted by 1/E[count] (unique draws, uniform proposal, one row so no
    in-batch columns): the mean of many steps' losses approaches the exact OvA loss over all
    labels, and unweighted draws would not."""
    Lb, Db = 400, 6
    torch.manual_seed(0)
    table = ShardedLabelTable(Lb, Db, num_shards=1)
    with torch.no_grad():
        table.weight.mul_(3.0)
    emb = torch.randn(1, Db)
    pos = (np.array([0, 2], np.int64), np.array([5, 77], np.int64))
    exact = float(table.full_ova_loss(emb, pos[0], pos[1], np.ones(2, np.float32)).detach())
    cfg = LossConfig(preset="sampled", reduction="ova", num_random=40, proposal="uniform",
                     share_columns=True)
    obj = UnifiedObjective(cfg, Lb, seed=1)
    vals = [float(obj(emb, table, pos, step=t)[0].detach()) for t in range(600)]
    est, se = np.mean(vals), np.std(vals) / np.sqrt(len(vals))
    assert abs(est - exact) < 4 * se + 1e-3 * abs(exact), (est, exact, se)
