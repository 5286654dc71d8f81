"""One training step, written once: the trainer and the step benchmarks run this object.

    rows ─► φ(x) = model.embed(X, rows)                                      embed
         ─► CandidateSources(rows, pos, φ(x).detach(), step):
              teacher rows, miner refresh + search (mining), random draws, assembly  mining, candidates
         ─► UnifiedObjective.score(φ(x), W, candidates) (+ GLaS on W)        loss
         ─► zero_grad ─► backward (─► gradient averaging over ranks)         backward
         ─► optimizer steps (in the order given)                             optimizer

:class:`TrainStep` holds no schedule and no counters: the caller passes the step number (which
seeds the random negatives and times the miner's refreshes) and sets learning rates before the
call. Every call returns a :class:`StepResult` with the loss and the seconds of each phase
(:data:`PHASES`, disjoint: their sum is the step's timed wall time), read with ``clock`` —
``time.perf_counter`` by default; a benchmark on a GPU passes a clock that synchronises the
device first.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Callable, Dict, Optional, Sequence, Tuple

import numpy as np
import torch

Csr = Tuple[np.ndarray, np.ndarray]

#: the phases of a step, as keys of :attr:`StepResult.timings` (seconds, disjoint):
#: ``embed`` φ(x) forward; ``mining`` the miner's index refresh and search; ``candidates`` the
#: rest of the candidate sources (teacher rows, random draws, assembly); ``loss`` the loss
#: forward (logits, loss, GLaS, the finiteness check); ``backward`` zero_grad, backward and the
#: gradient averaging; ``encoder_backward`` the encoder's part of backward when
#: ``split_backward`` (else 0); ``optimizer`` the optimizer steps.
PHASES = ("embed", "mining", "candidates", "loss", "backward", "encoder_backward", "optimizer")


@dataclass
class StepResult:
    """What one :class:`TrainStep` call returns: the loss value (before the update), |A| (the
    candidates scored), the seconds of each phase of :data:`PHASES`, and the candidates."""

    loss: float
    num_candidates: int
    timings: Dict[str, float] = field(default_factory=dict)
    candidates: object = None


class TrainStep:
    """embed → candidates → loss (+ GLaS) → zero_grad → backward → (averaging) → optimizer steps.

    Parameters
    ----------
    model : an :class:`~xmr.models.XMRModel` (its ``embed`` reads the batch's rows of ``X``;
        its ``label_table`` scores).
    sources : the run's :class:`~xmr.negatives.sources.CandidateSources`.
    objective : the run's :class:`~xmr.objectives.loss.UnifiedObjective` (same loss config).
    optimizers : zeroed (``set_to_none=True``) and stepped in this order (the trainer: the
        encoder's, then the label table's).
    glas : a :class:`~xmr.objectives.glas.GlasRegularizer` added to the loss, or None.
    process_group : a distributed run's group: the encoder's gradients are averaged over its
        ranks after backward (data parallelism; the label table is model-parallel).
    clock : ``() -> seconds`` read at the phase boundaries.
    split_backward : run backward in two parts, the loss down to φ(x) (``backward``) and then
        the encoder (``encoder_backward``), to time them apart (benchmarks). The gradients are
        the same sums, but their accumulation order may differ in the last bit: the trainer
        leaves it off.
    """

    def __init__(self, model, sources, objective, optimizers: Sequence, *, glas=None,
                 process_group=None, clock: Callable[[], float] = time.perf_counter,
                 split_backward: bool = False):
        from xmr.distributed import world_of

        if objective.cfg != sources.cfg:
            raise ValueError("objective and sources: expected the same loss config, got "
                             f"{objective.cfg} and {sources.cfg}")
        self.model = model
        self.sources = sources
        self.objective = objective
        self.optimizers = list(optimizers)
        self.glas = glas
        self.group = process_group
        self.world = world_of(process_group)
        self.clock = clock
        self.split_backward = bool(split_backward)

    def __call__(self, X, rows: np.ndarray, pos: Csr, step: int) -> StepResult:
        """One step on training rows ``rows i64[B]`` of ``X`` (what ``model.embed`` reads: a CSR
        matrix, or a dense array / tensor for the dense encoder) with positives ``pos`` (CSR
        over the batch, ``(indptr i64[B+1], ids i64[nnz])``) at step number ``step``.

        Raises FloatingPointError (before any update) on a non-finite loss.
        """
        clock, src = self.clock, self.sources
        table = self.model.label_table
        t0 = clock()
        emb = self.model.embed(X, rows)  # f32[B, d]
        t1 = clock()
        mining0 = src.timings["mining"]
        cands = src(rows, pos, emb.detach(), step)
        t2 = clock()
        mining = src.timings["mining"] - mining0
        e = emb.detach().requires_grad_() if self.split_backward else emb
        loss, info = self.objective.score(e, table, cands)
        if self.glas is not None:
            loss = loss + self.glas(table, pos[1])
        if not torch.isfinite(loss):
            raise FloatingPointError(f"non-finite loss {loss.item()} at step {step}; "
                                     "lower the learning rates or check the inputs")
        t3 = clock()
        for opt in self.optimizers:
            opt.zero_grad(set_to_none=True)
        loss.backward()
        t4 = t5 = clock()
        if self.split_backward:
            emb.backward(e.grad)
            t5 = clock()
        if self.world > 1:
            from xmr.distributed import average_gradients

            average_gradients(self.model.encoder, self.group)  # data-parallel encoder
        t6 = clock()
        for opt in self.optimizers:
            opt.step()
        t7 = clock()
        timings = {"embed": t1 - t0, "mining": mining, "candidates": (t2 - t1) - mining,
                   "loss": t3 - t2, "backward": (t4 - t3) + (t6 - t5),
                   "encoder_backward": t5 - t4, "optimizer": t7 - t6}
        return StepResult(loss=float(loss.item()), num_candidates=info["num_candidates"],
                          timings=timings, candidates=cands)
