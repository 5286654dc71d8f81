"""The unified distillation / negative-mining loss (DESIGN.md §5).

For an input x with positives P(x), candidates A(x) and logit offsets b_j(x)::

    s'_j = s_j / τ_s − b_j(x)                                   j ∈ A(x)
    L(x) = Σ_{j∈A(x)} a_j(x) · [ logsumexp_{i∈A(x)} s'_i − s'_j ],   Σ_j a_j(x) = 1
    a(x) = (1 − α)·y(x) + α·q^t(x)

with A(x) = P ∪ T ∪ H ∪ R (teacher top-K, FAISS-mined hard negatives, random negatives with
their log expected counts as offsets) or A(x) = all labels (the exact sharded softmax). This is
Menon et al. (2020), *Why distillation helps: a statistical perspective*, §5: the teacher acts
on both sides — its probabilities as soft targets, its top labels as negatives.

There is one code path; the named presets (:mod:`xmr.objectives.config`) only choose which
parts are on. Which labels form A(x) and with which targets is decided by
:class:`~xmr.negatives.sources.CandidateSources` (teacher rows and their truncation, mined and
random negatives, their union); :meth:`UnifiedObjective.score` only scores what it returns. The gradient w.r.t. s'_j is softmax_A(s')_j − a_j and is zero on masked cells
(their bias is a large negative finite value and their target is 0).
"""

from __future__ import annotations

from typing import Optional, Tuple

import numpy as np
import torch

from xmr.negatives.candidates import MASK_VALUE
from xmr.objectives.config import LossConfig

Csr = Tuple[np.ndarray, np.ndarray]


def candidate_loss(logits: torch.Tensor, targets: torch.Tensor, reduction: str = "mean") -> torch.Tensor:
    """Σ_j a_j [LSE(s') − s'_j] over a candidate set, with corrected logits ``s' f32[B, C]``.

    ``targets f32[B, C]`` rows sum to 1 (masked cells 0). Rows of ``targets`` that sum to 1 make
    this equal to ``LSE(s') − Σ_j a_j s'_j``, computed stably in float32.
    """
    lse = torch.logsumexp(logits.float(), dim=1)
    loss = lse * targets.sum(1) - (targets * logits.float()).sum(1)
    if reduction == "none":
        return loss
    if reduction == "sum":
        return loss.sum()
    return loss.mean()


def unified_loss_reference(
    scores: torch.Tensor,
    targets: torch.Tensor,
    offsets: Optional[torch.Tensor] = None,
    in_A: Optional[torch.Tensor] = None,
    tau_s: float = 1.0,
) -> torch.Tensor:
    """Dense slow reference of the family over all L labels (tests only).

    ``scores f32[B, L]``; ``targets f32[B, L]`` = a(x) (zero outside A); ``offsets f32[B, L]``
    = b (0 for deterministic candidates); ``in_A bool[B, L]`` the candidate mask (all True =
    exact softmax). Returns the per-row loss ``f32[B]``.
    """
    s = scores / tau_s
    if offsets is not None:
        s = s - offsets
    if in_A is not None:
        s = s.masked_fill(~in_A, float("-inf"))
    logp = torch.log_softmax(s, dim=1)
    return -(targets * torch.where(targets > 0, logp, torch.zeros_like(logp))).sum(1)


class UnifiedObjective:
    """The loss family as a callable over one training batch: it **scores** candidates.

    Which labels a batch is scored on (teacher rows and their truncation, mined and random
    negatives, their union, the targets) is decided by a
    :class:`~xmr.negatives.sources.CandidateSources`; :meth:`score` turns its
    :class:`~xmr.negatives.sources.Candidates` and the embeddings into the loss.
    ``objective(emb, table, pos, teacher, mined, step=...)`` is both in one call, for parts the
    caller already has.

    Parameters
    ----------
    cfg : a :class:`LossConfig` (resolved here if it is not yet).
    num_labels : L.
    label_counts : training frequency of each label (``unigram`` proposal), ``i64[L]``.
    seed : base seed; the random negatives of step ``t`` are drawn from ``rng(seed, t)`` so that
        a resumed run draws the same negatives as an uninterrupted one.
    full_softmax_chunk : labels per chunk of the exact path.
    teacher_probabilities : the teacher's logits are log-probabilities (``ova`` reads them as
        per-label probabilities).
    sources : the run's :class:`~xmr.negatives.sources.CandidateSources` (its config must equal
        ``cfg``); None builds one from ``cfg``, ``label_counts``, ``seed`` and
        ``teacher_probabilities`` (which are then the only use of those three arguments).
    """

    def __init__(self, cfg: LossConfig, num_labels: int, label_counts: Optional[np.ndarray] = None,
                 seed: int = 0, full_softmax_chunk: int = 65536, teacher_probabilities: bool = False,
                 sources=None):
        from xmr.negatives.sources import CandidateSources

        self.cfg = cfg.resolved()
        self.num_labels = int(num_labels)
        self.chunk = int(full_softmax_chunk)
        if sources is None:
            sources = CandidateSources(self.cfg, self.num_labels, label_counts=label_counts,
                                       seed=seed, teacher_probabilities=teacher_probabilities)
        elif sources.cfg != self.cfg or sources.num_labels != self.num_labels:
            raise ValueError("sources: expected CandidateSources built from the same loss config "
                             f"and label count, got {sources.cfg} over {sources.num_labels} labels")
        self.sources = sources

    # read-only views of the sources (the sampler is theirs)
    @property
    def sampler(self):
        return self.sources.sampler

    @property
    def num_random(self) -> int:
        return self.sources.num_random

    @property
    def timings(self) -> dict:
        return self.sources.timings

    def __call__(
        self,
        emb: torch.Tensor,
        table,
        pos: Csr,
        teacher: Optional[Tuple[np.ndarray, np.ndarray, np.ndarray]] = None,
        mined: Optional[Csr] = None,
        step: int = 0,
    ) -> Tuple[torch.Tensor, dict]:
        """Loss (mean over the batch) for embeddings ``emb f32[B, d]`` scored by ``table``.

        ``pos``: positives (CSR over the batch); ``teacher``: teacher top-K rows
        ``(indptr, ids, raw logits)``; ``mined``: hard negatives (CSR). The candidates are
        :meth:`CandidateSources.assemble(pos, teacher, mined, step)
        <xmr.negatives.sources.CandidateSources.assemble>`.
        """
        return self.score(emb, table, self.sources.assemble(pos, teacher, mined, step=step))

    def score(self, emb: torch.Tensor, table, cands) -> Tuple[torch.Tensor, dict]:
        """The loss (mean over the batch, a differentiable scalar) of embeddings ``emb f32[B, d]``
        scored by ``table`` (a :class:`~xmr.models.ShardedLabelTable`) on ``cands`` (a
        :class:`~xmr.negatives.sources.Candidates` of the same B rows), and ``{"num_candidates":
        |A|}``. Decides nothing about the candidates."""
        cfg = self.cfg
        x = emb / cfg.tau_s if cfg.tau_s != 1.0 else emb
        dev = emb.device
        info = {"num_candidates": int(cands.num_candidates)}

        def t(a):
            return torch.from_numpy(a).to(dev)

        if cfg.all_labels:
            ptr, ids, vals = cands.targets
            if cfg.reduction == "ova":
                loss = table.full_ova_loss(x, t(ptr), t(ids), t(vals), chunk_size=self.chunk)
                return loss, info
            positives = cands.positives
            if positives is not None:
                positives = tuple(t(a) for a in positives)
            loss = table.full_softmax_loss(x, t(ptr), t(ids), t(vals), chunk_size=self.chunk,
                                           normalized=cands.normalized, positives=positives,
                                           soft_on_neg=cfg.teacher_term == "decoupled")
            return loss, info

        batch, pos, teacher = cands.batch, cands.pos, cands.teacher
        cand = t(batch.cand_ids)
        s = table.candidate_logits(x, cand, logit_bias=None)  # [B, C] scores s / tau_s
        if cfg.reduction == "pal-n":
            loss = sparse_candidate_loss(s, batch, dev)
        elif cfg.reduction == "ova":
            loss = ova_candidate_loss(s, batch, pos[0], cands.targets)
        else:
            t_len = None if teacher is None else np.diff(np.asarray(teacher[0], dtype=np.int64))
            loss = reduction_candidate_loss(s, batch, pos[0], t_len, cfg.alpha, cfg.reduction,
                                            teacher_term=cfg.teacher_term)
        return loss, info


def ova_candidate_loss(s: torch.Tensor, batch, pos_indptr: np.ndarray, targets,
                       reduction_mean: str = "mean") -> torch.Tensor:
    """The one-versus-all reduction on a candidate batch (dense ``B x C`` autograd).

    ``s f32[B, C]``: uncorrected logits of the columns; ``batch``: a
    :class:`~xmr.negatives.candidates.SparseCandidateBatch`; ``pos_indptr``: the rows' positives
    (their columns are ``batch.pos_cols``); ``targets``: CSR ``(indptr, ids,
    vals)`` over global label ids from :func:`~xmr.objectives.targets.ova_targets`. Each visible
    cell (r, c) weighs ``ω_rc = exp(bias_rc)``: 1 on deterministic cells (P, T, H and
    shared columns), 1/E[count_c] on a sampled column (its bias is −log E[count]; the
    Horvitz–Thompson weight that makes Σ_R ω softplus(s) estimate the sum over the labels the
    proposal covers), 0 on masked cells; the row's own positives weigh 1 always. The row's loss
    is ``Σ_c ω_rc [softplus(s_rc) − t_rc s_rc]``, with t_rc the target of the column's label
    (0 for labels without one; a target on a label outside the candidates is dropped).
    """
    dev = s.device
    B, C = s.shape
    dense = batch.to_dense()
    bias = torch.from_numpy(dense.logit_bias).to(dev)
    w = torch.exp(bias)  # 1 (deterministic), 1/E[count] (sampled), 0 (masked: bias −1e9)
    t_ptr, t_ids, t_vals = targets
    t_rows = np.repeat(np.arange(B), np.diff(t_ptr))
    order = np.argsort(batch.cand_ids, kind="stable")
    sorted_ids = batch.cand_ids[order]
    at = np.searchsorted(sorted_ids, t_ids)
    at = np.minimum(at, max(C - 1, 0))
    found = (sorted_ids[at] == t_ids) if C else np.zeros(t_ids.shape, bool)
    T = torch.zeros(B, C, dtype=torch.float32, device=dev)
    if found.any():
        T[torch.from_numpy(t_rows[found]).to(dev), torch.from_numpy(order[at[found]]).to(dev)] = \
            torch.from_numpy(t_vals[found]).to(dev)
    pos_rows = np.repeat(np.arange(B), np.diff(np.asarray(pos_indptr, dtype=np.int64)))
    w[torch.from_numpy(pos_rows).to(dev), torch.from_numpy(batch.pos_cols).to(dev)] = 1.0
    z = s.float()
    loss = (w * (torch.nn.functional.softplus(z) - T * z)).sum(1)
    if reduction_mean == "none":
        return loss
    if reduction_mean == "sum":
        return loss.sum()
    return loss.mean()


def reduction_candidate_loss(s: torch.Tensor, batch, pos_indptr: np.ndarray,
                             teacher_len: Optional[np.ndarray], alpha: float, reduction: str,
                             reduction_mean: str = "mean", teacher_term: str = "shared") -> torch.Tensor:
    """The ``pal`` and ``decoupled`` reductions on a candidate batch (dense ``B x C`` autograd).

    ``s f32[B, C]``: uncorrected logits of the columns; ``batch``: a
    :class:`~xmr.negatives.candidates.SparseCandidateBatch` assembled with the teacher's part
    alone (``alpha = 1``, or 0 without a teacher), so its targets are q^t on rows with teacher
    entries; ``pos_indptr``: the rows' positives (their columns are ``batch.pos_cols``);
    ``teacher_len i64[B]``: teacher entries per row (None: no teacher). With z = s + logit_bias
    (offsets and masks of §5) and LSE_r over the row's visible cells, the row's loss is

    * pal: (1 − α)·Σ_p [LSE_r − z_p] + α·[LSE_r − Σ_j q_j z_j];
    * decoupled: (1 − α)/|P|·Σ_p softplus(neg_r − z_p) + α·[LSE_r − Σ_j q_j z_j], neg_r the LSE
      over the row's visible cells other than its positives;

    with α = 0 on rows without teacher entries and α = 1 on rows without positives. With
    ``teacher_term="decoupled"`` (decoupled only) the teacher part is α·Σ_{j∉P} q_j [neg_r − z_j]
    and its mass on a positive joins that positive's weight (split between duplicated copies).
    The values equal dense references (tests pin values and gradients).
    """
    dev = s.device
    B, C = s.shape
    dense = batch.to_dense()
    z = s.float() + torch.from_numpy(dense.logit_bias).to(dev)
    p_len = np.diff(np.asarray(pos_indptr, dtype=np.int64))
    p_rows = np.repeat(np.arange(B), p_len)
    has_t = teacher_len is not None and alpha > 0
    t_len = teacher_len if has_t else np.zeros(B, dtype=np.int64)
    w_pos = np.where(t_len > 0, 1.0 - alpha, 1.0)
    w_q = np.where(t_len > 0, np.where(p_len > 0, alpha, 1.0), 0.0)
    Q = torch.from_numpy((dense.targets * w_q[:, None]).astype(np.float32)).to(dev)
    pr, pc = torch.from_numpy(p_rows).to(dev), torch.from_numpy(batch.pos_cols).to(dev)
    w = w_pos[p_rows] if reduction == "pal" else (w_pos / np.maximum(p_len, 1))[p_rows]
    w = torch.from_numpy(w.astype(np.float32)).to(dev)
    lse = torch.logsumexp(z, dim=1)
    q_sum = Q.sum(1)
    loss = lse * q_sum - (Q * z).sum(1)
    zp = z[pr, pc]
    if reduction == "pal":
        loss = loss.index_add(0, pr, w * (lse[pr] - zp))
    else:
        mask = torch.zeros(B, C, dtype=torch.bool, device=dev)
        mask[pr, pc] = True
        neg = torch.logsumexp(z.masked_fill(mask, float(MASK_VALUE)), dim=1)
        if teacher_term == "decoupled":
            # the teacher's mass on a positive joins its decoupled term; the rest competes
            # with the negatives only
            copies = torch.zeros(B, C, device=dev).index_put_((pr, pc), torch.ones_like(w),
                                                             accumulate=True)
            w = w + Q[pr, pc] / copies[pr, pc]
            Qn = Q.masked_fill(mask, 0.0)
            loss = neg * Qn.sum(1) - (Qn * z).sum(1)
        loss = loss.index_add(0, pr, w * torch.nn.functional.softplus(neg[pr] - zp))
    if reduction_mean == "none":
        return loss
    if reduction_mean == "sum":
        return loss.sum()
    return loss.mean()


def sparse_candidate_loss(s: torch.Tensor, batch, device=None,
                          reduction: str = "mean") -> torch.Tensor:
    """:func:`candidate_loss` on the sparse layout of a candidate batch, without any dense
    ``B x C`` bias or target tensor.

    ``s f32[B, C]`` (or bf16/f16; computed in f32): the uncorrected logits ``s / tau_s`` of the
    batch's candidate columns; ``batch``: a :class:`~xmr.negatives.candidates.SparseCandidateBatch`.
    The corrected logits are ``z = s + col_bias[None, :]`` with the exception cells **set** to
    ``s + ex_vals`` (an ``index_put`` of the gathered scores: adding ``ex_vals - col_bias``
    instead would cancel catastrophically on masked columns, where ``col_bias`` is -1e9). Then,
    per row, ``loss_r = LSE(z_r) · Σ_j t_rj − Σ_j t_rj z_rj`` with the target sum and the dot
    product over the CSR entries only (a gather and an ``index_add``); a row without targets
    gives 0. ``reduction``: ``"mean"`` over rows (as the dense path), ``"sum"`` or ``"none"``.

    Two savings over autograd through that recipe, both exact:

    * masked cells (``share_columns=False``: every deterministic column is hidden by default)
      contribute ``exp(-1e9) = 0`` to the LSE and get zero gradient, so they are never formed:
      the LSE runs over the visible columns ``[B, C_vis]`` plus each row's visible exceptions on
      hidden columns (its own P/T/H cells), merged with a per-row max. This also skips torch's
      exp on huge negative inputs, several times slower per element than on normal ones.
    * every visible cell of z is s plus a constant, so the gradient is the one of DESIGN.md
      §5, ``∂loss_r/∂s_rj = softmax(z_r)_j · Σ t_r − t_rj`` (0 on masked cells), returned
      directly by a small autograd function: one ``B x C`` buffer in backward instead of the
      half-dozen that autograd through ``index_put``, two gathers and ``logsumexp`` allocates.

    Values equal the dense path's up to float32 summation order (tests pin values and gradients).
    """
    dev = s.device if device is None else device

    def t(a):
        return torch.from_numpy(np.ascontiguousarray(a)).to(dev)

    hidden = batch.col_bias <= 0.5 * MASK_VALUE  # columns masked unless a row owns the cell
    ex_hidden = hidden[batch.ex_cols]
    vis_cols = np.flatnonzero(~hidden) if hidden.any() else None
    pos = np.cumsum(~hidden) - 1  # column -> its position among the visible columns
    ev = ~ex_hidden
    loss = _SparseCandidateLoss.apply(
        s, t(batch.col_bias if vis_cols is None else batch.col_bias[vis_cols]),
        None if vis_cols is None else t(vis_cols),
        t(batch.ex_rows[ev]), t(batch.ex_cols[ev]), t(pos[batch.ex_cols[ev]]),
        t(batch.ex_vals[ev]),
        t(batch.ex_rows[ex_hidden]), t(batch.ex_cols[ex_hidden]), t(batch.ex_vals[ex_hidden]),
        t(batch.target_rows()), t(batch.t_cols), t(batch.t_vals), t(batch.target_bias()))
    if reduction == "none":
        return loss
    if reduction == "sum":
        return loss.sum()
    return loss.mean()


class _SparseCandidateLoss(torch.autograd.Function):
    """Per-row loss f32[B] on the sparse layout (see :func:`sparse_candidate_loss`).

    Inputs: ``s [B, C]``; ``vis_bias f32[C_vis]`` the bias of the visible columns
    ``vis_cols i64[C_vis]`` (None: all C columns, in order); exceptions on visible columns
    (rows, cols, their positions among the visible columns, values); exceptions on hidden
    columns (rows, cols, values); targets as COO (rows, cols, values, the cell's bias).
    """

    @staticmethod
    def forward(ctx, s, vis_bias, vis_cols, er, ec, ep, ev, hr, hc, hv, tr, tc, tv, tb):
        B, C = s.shape
        sd = s.detach().float()
        zv = (sd if vis_cols is None else sd.index_select(1, vis_cols)) + vis_bias[None, :]
        if er.numel():
            zv.index_put_((er, ep), sd[er, ec] + ev)  # set, not add (see the docstring)
        zh = sd[hr, hc] + hv  # visible own cells on hidden columns [n_h]
        m = zv.amax(1) if zv.shape[1] else torch.full((B,), -torch.inf, device=sd.device)
        if zh.numel():
            m = m.scatter_reduce(0, hr, zh, "amax", include_self=True)
        m = torch.where(torch.isfinite(m), m, torch.zeros_like(m))  # rows seeing nothing
        sum_exp = torch.sub(zv, m[:, None]).exp_().sum(1)
        if zh.numel():
            sum_exp = sum_exp.index_add(0, hr, torch.exp(zh - m[hr]))
        lse = m + torch.log(sum_exp)  # [B]; -inf for a row that sees no column
        t_sum = torch.zeros(B, dtype=sd.dtype, device=sd.device).index_add_(0, tr, tv)
        dot = torch.zeros(B, dtype=sd.dtype, device=sd.device).index_add_(
            0, tr, tv * (sd[tr, tc] + tb))
        loss = torch.where(t_sum > 0, lse * t_sum - dot, torch.zeros_like(lse))
        ctx.save_for_backward(zv, zh, torch.where(torch.isfinite(lse), lse, m), t_sum,
                              vis_cols, hr, hc, tr, tc, tv)
        ctx.shape, ctx.s_dtype = (B, C), s.dtype
        return loss

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, g):
        zv, zh, lse, t_sum, vis_cols, hr, hc, tr, tc, tv = ctx.saved_tensors
        g = g.float()
        coef = g * t_sum  # [B]
        gv = torch.sub(zv, lse[:, None]).exp_().mul_(coef[:, None])  # softmax · Σt · g
        if vis_cols is None:
            grad = gv
        else:
            grad = gv.new_zeros(ctx.shape).index_copy_(1, vis_cols, gv)
        if zh.numel():
            grad.index_put_((hr, hc), torch.exp(zh - lse[hr]) * coef[hr])
        grad.index_put_((tr, tc), -(g[tr] * tv), accumulate=True)
        return (grad.to(ctx.s_dtype),) + (None,) * 13
