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
parts are on. The gradient w.r.t. s'_j is softmax_A(s')_j − a_j and is zero on masked cells
(their bias is a large negative finite value and their target is 0).
"""

from __future__ import annotations

import logging
import time
from typing import Optional, Tuple

import numpy as np
import torch

from xmr.objectives.config import LossConfig
from xmr.objectives.targets import soft_targets, truncate_rows

Csr = Tuple[np.ndarray, np.ndarray]
log = logging.getLogger(__name__)


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
    """The loss family as a callable over one training batch.

    Parameters
    ----------
    cfg : a :class:`LossConfig` (resolved here).
    num_labels : L.
    label_counts : training frequency of each label (``unigram`` proposal), ``i64[L]``.
    seed : base seed; the random negatives of step ``t`` are drawn from ``rng(seed, t)`` so that
        a resumed run draws the same negatives as an uninterrupted one.
    """

    def __init__(self, cfg: LossConfig, num_labels: int, label_counts: Optional[np.ndarray] = None,
                 seed: int = 0, full_softmax_chunk: int = 65536):
        self.cfg = cfg.resolved()
        self.num_labels = int(num_labels)
        self.seed = int(seed)
        self.chunk = int(full_softmax_chunk)
        self.sampler = None
        if not self.cfg.all_labels and self.cfg.num_random > 0:
            from xmr.negatives.samplers import make_sampler

            self.sampler = make_sampler(self.cfg.proposal, self.num_labels, counts=label_counts,
                                        beta=self.cfg.proposal_beta)
            self.num_random = self.cfg.num_random
            if self.cfg.unique_sampling and self.num_random > self.sampler.support_size():
                # e.g. a unigram proposal over a small training set: fewer labels have q > 0
                log.warning("loss.num_random=%d exceeds the %d labels the %s proposal can draw "
                            "without replacement; drawing %d", self.num_random,
                            self.sampler.support_size(), self.cfg.proposal, self.sampler.support_size())
                self.num_random = self.sampler.support_size()
        self.timings = {"assemble": 0.0, "sample": 0.0}

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
        ``(indptr, ids, raw logits)``; ``mined``: hard negatives (CSR).
        """
        cfg = self.cfg
        if cfg.needs_teacher and teacher is None:
            raise ValueError(f"loss preset {cfg.preset!r} (alpha={cfg.alpha}, "
                             f"teacher_negatives={cfg.teacher_negatives}) needs a teacher store")
        if teacher is not None and cfg.teacher_k:
            teacher = truncate_rows(teacher[0], cfg.teacher_k, teacher[1], teacher[2])
        if not cfg.needs_teacher:
            teacher = None
        x = emb / cfg.tau_s if cfg.tau_s != 1.0 else emb
        if cfg.all_labels:
            t0 = time.perf_counter()
            ptr, ids, vals = soft_targets(pos, self.num_labels, teacher, cfg.alpha, cfg.tau_t)
            self.timings["assemble"] += time.perf_counter() - t0
            dev = emb.device
            loss = table.full_softmax_loss(x, torch.from_numpy(ptr).to(dev), torch.from_numpy(ids).to(dev),
                                           torch.from_numpy(vals).to(dev), chunk_size=self.chunk)
            return loss, {"num_candidates": self.num_labels}

        from xmr.negatives.candidates import assemble_batch

        sampled = None
        if self.sampler is not None:
            t0 = time.perf_counter()
            rng = np.random.default_rng([self.seed, int(step)])
            sampled = self.sampler.sample(self.num_random, rng, unique=cfg.unique_sampling)
            self.timings["sample"] += time.perf_counter() - t0
        t0 = time.perf_counter()
        batch = assemble_batch(
            pos[0], pos[1],
            teacher=teacher,
            mined=mined if cfg.mined else None,
            sampled=sampled,
            alpha=cfg.alpha, tau_t=cfg.tau_t,
            correct_positives=cfg.correct_positives, share_columns=cfg.share_columns,
            num_labels=self.num_labels,
            teacher_candidates=bool(cfg.teacher_negatives),
        )
        self.timings["assemble"] += time.perf_counter() - t0
        dev = emb.device
        cand = torch.from_numpy(batch.cand_ids).to(dev)
        bias = torch.from_numpy(batch.logit_bias).to(dev, non_blocking=True)
        logits = table.candidate_logits(x, cand, logit_bias=bias)
        loss = candidate_loss(logits, torch.from_numpy(batch.targets).to(dev, non_blocking=True))
        return loss, {"num_candidates": int(cand.shape[0])}
