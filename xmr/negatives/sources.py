"""The candidate set of a training batch, from one owner (DESIGN.md §5).

For a batch of rows the loss scores the candidates

    A(x) = P(x) ∪ T(x) ∪ H(x) ∪ R        (the candidate path)
    A(x) = all labels                    (the exact path: ``loss.all_labels``)

with P the rows' positives, T the teacher's top-K (truncated to ``loss.teacher_k``), H the hard
negatives a FAISS miner returns for the rows' embeddings, and R the random negatives the batch
shares, drawn at step ``t`` from ``np.random.default_rng([seed, t])`` (so a resumed run draws
exactly the negatives of the uninterrupted one). :class:`CandidateSources` is that one owner:
built once per run from the *resolved* loss config, the teacher store, the miner and the label
counts, it

* fetches the teacher rows of the batch (only when :attr:`LossConfig.needs_teacher`),
* refreshes the miner's index when due and mines H (only when :attr:`LossConfig.needs_miner`),
* draws R (only when :attr:`LossConfig.needs_sampler`), and
* returns a :class:`Candidates`: the teacher part, and either the assembled candidate batch
  (:func:`~xmr.negatives.candidates.assemble_batch`, sparse layout) or, on the exact path, the
  target CSR over all labels — exactly what :meth:`xmr.objectives.loss.UnifiedObjective.score`
  scores, nothing decided there.

``sources(rows, pos, emb, step)`` fetches everything itself (the trainer's
:class:`~xmr.train.step.TrainStep`); ``sources.assemble(pos, teacher, mined, step)`` takes teacher
rows and mined negatives that the caller already has (what ``UnifiedObjective(...)(emb, table,
pos, teacher, mined, step=...)`` does). Both go through :meth:`CandidateSources.assemble`, the
one place that decides the candidates.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Callable, Optional, Tuple

import numpy as np

from xmr.negatives import candidates as _candidates
from xmr.negatives.candidates import SparseCandidateBatch

Csr = Tuple[np.ndarray, np.ndarray]  # (indptr i64[B+1], ids i64[nnz])
TeacherRows = Tuple[np.ndarray, np.ndarray, np.ndarray]  # (indptr i64[B+1], ids i64[k], logits f32[k])
log = logging.getLogger(__name__)

__all__ = ["CandidateSources", "Candidates", "missing_teacher_error"]


def missing_teacher_error(cfg, hint: str = "") -> ValueError:
    """The error of a loss config that needs a teacher (``cfg.needs_teacher``) and got none."""
    return ValueError(f"loss preset {cfg.preset!r} (alpha={cfg.alpha}, "
                      f"teacher_negatives={cfg.teacher_negatives}) needs a teacher store{hint}")


@dataclass
class Candidates:
    """What the loss scores for one batch of B rows (see the module docstring).

    pos         ``(indptr i64[B+1], ids i64[nnz_P])``: the batch's positives P.
    teacher     ``(indptr i64[B+1], ids i64[k], logits f32[k])``: the teacher part (its top
                labels per row, truncated to ``teacher_k``; raw logits, q^t = softmax(t/τ_t)),
                or None when the config needs no teacher.
    mined       ``(indptr i64[B+1], ids i64[h])``: hard negatives H, or None (exact path, or
                ``mined`` off).
    sampled     ``(ids i64[m], log_expected_count f64[m])``: random negatives R shared by the
                batch, or None.
    batch       candidate path: the union P ∪ T ∪ H ∪ R as a
                :class:`~xmr.negatives.candidates.SparseCandidateBatch` (assembled with the
                teacher part alone, α = 1, for the ``pal``/``decoupled``/``ova`` reductions);
                None on the exact path.
    targets     CSR ``(indptr i64[B+1], ids i64[nnz], vals f32[nnz])`` over global label ids:
                the exact path's targets (:func:`~xmr.objectives.targets.reduction_targets` or,
                for ``ova``, :func:`~xmr.objectives.targets.ova_targets`) and the candidate
                path's ``ova`` targets; None otherwise.
    positives   exact path, ``decoupled`` reduction: the positives' CSR ``(indptr, ids,
                weights f32)`` of :func:`~xmr.objectives.targets.reduction_targets`; else None.
    normalized  exact path: whether the target rows sum to 1.
    num_candidates  |A|: L on the exact path, the batch's column count otherwise.
    """

    pos: Csr
    teacher: Optional[TeacherRows]
    mined: Optional[Csr]
    sampled: Optional[Tuple[np.ndarray, np.ndarray]]
    batch: Optional[SparseCandidateBatch]
    targets: Optional[Tuple[np.ndarray, np.ndarray, np.ndarray]]
    positives: Optional[Tuple[np.ndarray, np.ndarray, np.ndarray]]
    normalized: bool
    num_candidates: int


class CandidateSources:
    """The candidates of every training batch (see the module docstring).

    Parameters
    ----------
    cfg : a :class:`~xmr.objectives.config.LossConfig` (resolved here if it is not yet).
    num_labels : L.
    label_counts : training frequency of each label, ``i64[L]`` (the ``unigram`` proposal).
    seed : base seed of the random negatives (step ``t`` draws from ``rng([seed, t])``).
    teacher : anything with ``rows(rows) -> (indptr, ids, logits)`` aligned with the training
        rows (a :class:`~xmr.teachers.store.TeacherStore`); needed by :meth:`__call__` when
        ``cfg.needs_teacher``.
    miner : a :class:`~xmr.negatives.miner.HardNegativeMiner`; needed by :meth:`__call__` when
        ``cfg.needs_miner``.
    label_rows : ``() -> f32[L, d]``, the current label table (called only when the miner's
        index is due for a rebuild; in a distributed run this rank's rows ``[lo, hi)``, which
        its sharded miner indexes).
    teacher_probabilities : the teacher's logits are log-probabilities (tree teachers,
        ensembles): the ``ova`` reduction reads them as per-label probabilities. None: the
        teacher store's ``meta["probabilities"]`` (False without a store).

    ``timings`` accumulates seconds per part: ``teacher`` (reading the rows), ``mining`` (index
    refresh + search), ``sample`` (drawing R) and ``assemble`` (the union, its offsets, masks
    and targets).
    """

    def __init__(self, cfg, num_labels: int, *, label_counts: Optional[np.ndarray] = None,
                 seed: int = 0, teacher=None, miner=None,
                 label_rows: Optional[Callable[[], np.ndarray]] = None,
                 teacher_probabilities: Optional[bool] = None):
        self.cfg = cfg.resolved()
        self.num_labels = int(num_labels)
        self.seed = int(seed)
        self.teacher = teacher
        self.miner = miner
        self.label_rows = label_rows
        if teacher_probabilities is None:
            meta = getattr(teacher, "meta", None) or {}
            teacher_probabilities = bool(meta.get("probabilities"))
        self.teacher_probabilities = bool(teacher_probabilities)
        self.sampler = None
        self.num_random = 0
        if self.cfg.needs_sampler:
            from xmr.negatives.samplers import make_sampler

            self.sampler = make_sampler(self.cfg.proposal, self.num_labels, counts=label_counts,
                                        beta=self.cfg.proposal_beta)
            self.num_random = self.cfg.num_random
            if self.cfg.unique_sampling and self.num_random > self.sampler.support_size():
                # e.g. a unigram proposal over a small training set: fewer labels have q > 0
                log.warning("loss.num_random=%d exceeds the %d labels the %s proposal can draw "
                            "without replacement; drawing %d", self.num_random,
                            self.sampler.support_size(), self.cfg.proposal,
                            self.sampler.support_size())
                self.num_random = self.sampler.support_size()
        self.timings = {"teacher": 0.0, "mining": 0.0, "sample": 0.0, "assemble": 0.0}

    # ------------------------------------------------------------------ the parts
    def teacher_rows(self, rows: np.ndarray) -> Optional[TeacherRows]:
        """The teacher's full rows for the batch's training rows ``rows i64[B]`` (None when the
        config needs no teacher); :meth:`assemble` truncates them to ``teacher_k``."""
        if not self.cfg.needs_teacher:
            return None
        if self.teacher is None:
            raise missing_teacher_error(self.cfg, " (CandidateSources got teacher=None)")
        t0 = time.perf_counter()
        out = self.teacher.rows(rows)
        self.timings["teacher"] += time.perf_counter() - t0
        return out

    def mine(self, emb, pos: Csr, step: int) -> Optional[Csr]:
        """Hard negatives of the batch from the detached embeddings ``emb f32[B, d]`` (a torch
        tensor or numpy array): the miner's index is rebuilt first when due at ``step``. None
        when the config mines nothing."""
        if not self.cfg.needs_miner:
            return None
        if self.miner is None:
            raise ValueError(f"loss preset {self.cfg.preset!r} mines hard negatives "
                             "(loss.mined) but CandidateSources got miner=None")
        t0 = time.perf_counter()
        if self.label_rows is not None:
            self.miner.maybe_refresh(int(step), self.label_rows)
        if hasattr(emb, "detach"):
            emb = emb.detach().float().cpu().numpy()
        mined = self.miner.mine(emb, pos[0], pos[1])
        self.timings["mining"] += time.perf_counter() - t0
        return mined

    def sample(self, step: int) -> Optional[Tuple[np.ndarray, np.ndarray]]:
        """The random negatives of step ``step``: ``(ids i64[m], log_expected_count f64[m])``
        from ``rng([seed, step])`` (None without a sampler). The same step draws the same ids."""
        if self.sampler is None:
            return None
        t0 = time.perf_counter()
        rng = np.random.default_rng([self.seed, int(step)])
        out = self.sampler.sample(self.num_random, rng, unique=self.cfg.unique_sampling)
        self.timings["sample"] += time.perf_counter() - t0
        return out

    # ------------------------------------------------------------------ the candidates
    def __call__(self, rows: np.ndarray, pos: Csr, emb, step: int) -> Candidates:
        """Everything for training rows ``rows i64[B]`` with positives ``pos`` (CSR over the
        batch), their detached embeddings ``emb f32[B, d]`` (the miner's queries) at step
        ``step``: teacher rows, mined negatives, random negatives, assembled."""
        teacher = self.teacher_rows(rows)
        mined = self.mine(emb, pos, step)
        return self.assemble(pos, teacher, mined, step=step)

    def assemble(self, pos: Csr, teacher: Optional[TeacherRows] = None,
                 mined: Optional[Csr] = None, step: int = 0) -> Candidates:
        """The candidates of a batch from parts the caller has: ``pos`` the positives (CSR),
        ``teacher`` the teacher's rows ``(indptr, ids, raw logits)`` (required when the config
        needs a teacher, ignored otherwise; truncated here to ``teacher_k``, 0 = keep all),
        ``mined`` hard negatives (CSR; used only when the config mines). The random negatives
        of ``step`` are drawn here. Raises ValueError when a needed teacher is missing."""
        from xmr.objectives.targets import ova_targets, reduction_targets, truncate_rows

        cfg = self.cfg
        if not cfg.needs_teacher:
            teacher = None
        elif teacher is None:
            raise missing_teacher_error(cfg)
        elif cfg.teacher_k:
            teacher = truncate_rows(teacher[0], cfg.teacher_k, teacher[1], teacher[2])
        if cfg.all_labels:
            t0 = time.perf_counter()
            positives, normalized = None, True
            if cfg.reduction == "ova":
                targets = ova_targets(pos, self.num_labels, teacher, cfg.alpha, cfg.tau_t,
                                      self.teacher_probabilities)
            else:
                targets, positives, normalized = reduction_targets(
                    pos, self.num_labels, teacher, cfg.alpha, cfg.tau_t, cfg.reduction,
                    cfg.teacher_term)
            self.timings["assemble"] += time.perf_counter() - t0
            return Candidates(pos=pos, teacher=teacher, mined=None, sampled=None, batch=None,
                              targets=targets, positives=positives, normalized=normalized,
                              num_candidates=self.num_labels)

        mined = mined if cfg.needs_miner else None
        sampled = self.sample(step)
        t0 = time.perf_counter()
        # pal / decoupled / ova: assemble the teacher part alone (alpha = 1); the positives'
        # weights are set by the reduction's loss
        alpha = cfg.alpha if cfg.reduction == "pal-n" else (1.0 if teacher is not None else 0.0)
        batch = _candidates.assemble_batch(  # looked up here: tests spy on the module function
            pos[0], pos[1],
            teacher=teacher,
            mined=mined,
            sampled=sampled,
            alpha=alpha, tau_t=cfg.tau_t,
            correct_positives=cfg.correct_positives, share_columns=cfg.share_columns,
            num_labels=self.num_labels,
            teacher_candidates=bool(cfg.teacher_negatives),
        )
        targets = None
        if cfg.reduction == "ova":
            targets = ova_targets(pos, self.num_labels, teacher, cfg.alpha, cfg.tau_t,
                                  self.teacher_probabilities)
        self.timings["assemble"] += time.perf_counter() - t0
        return Candidates(pos=pos, teacher=teacher, mined=mined, sampled=sampled, batch=batch,
                          targets=targets, positives=None, normalized=True,
                          num_candidates=int(batch.cand_ids.shape[0]))
