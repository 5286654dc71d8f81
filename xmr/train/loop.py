"""The training loop: epochs of batches, each one :class:`~xmr.train.step.TrainStep`.

    rows ─► φ(x) (encoder) ─► candidates (:class:`~xmr.negatives.sources.CandidateSources`:
    teacher top-K from the store, hard negatives from the FAISS miner, random negatives from
    the sampler; kernels: offsets, masks, targets) ─► logits ─► unified loss
    ─► backward ─► Adam on the encoder, row-wise Adagrad on the touched rows of W

The :class:`Trainer` owns what lasts across steps: the data, the model and its optimizers, the
learning-rate schedule, the step counter, checkpoints and held-out evaluation. The loss config
is resolved once here and shared by the sources, the objective and the step.

Reproducibility: the epoch order comes from ``rng(seed, epoch)``, the random negatives of step
``t`` from ``rng(seed, t)``, torch's RNG state (dropout) and the miner's index (with a pending
background build of ``miner.async_refresh``, whose swap step is a function of its snapshot step)
are saved in every checkpoint, so ``resume`` continues the same run and reaches the same weights.
"""

from __future__ import annotations

import json
import logging
import math
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional

import numpy as np
import scipy.sparse as sp
import torch

from xmr.errors import ConfigError
from xmr.train.config import TrainConfig
from xmr.models.xmr_model import XMRModel
from xmr.utils.atomic import atomic_dir, load_torch

log = logging.getLogger(__name__)

CHECKPOINT = "checkpoint"
MODEL = "model"


@dataclass
class TrainResult:
    model: XMRModel
    model_dir: Optional[Path]
    history: List[Dict] = field(default_factory=list)
    train_seconds: float = 0.0
    steps: int = 0
    samples_per_second: float = 0.0
    mining_share: float = 0.0


def split_valid(n: int, fraction: float, seed: int):
    """Seeded split of training rows into (train_rows, valid_rows)."""
    perm = np.random.default_rng([seed, 7919]).permutation(n)
    n_valid = int(round(n * fraction))
    return np.sort(perm[n_valid:]), np.sort(perm[:n_valid])


def _csr_rows(Y: sp.csr_matrix, rows: np.ndarray):
    sub = Y[rows]
    return sub.indptr.astype(np.int64), sub.indices.astype(np.int64)


def evaluate_model(model: XMRModel, X, Y, inv_prop=None, k: int = 5) -> Dict[str, float]:
    from xmr.eval import evaluate

    _, ids = model.predict(X, k=k)
    return evaluate(Y, ids, ks=(1, 3, 5), inv_prop=inv_prop)


class _Optimizers:
    """Several optimizers stepped, zeroed and checkpointed as one."""

    def __init__(self, **opts):
        self.opts = opts

    def zero_grad(self, set_to_none: bool = True):
        for o in self.opts.values():
            o.zero_grad(set_to_none=set_to_none)

    def step(self):
        for o in self.opts.values():
            o.step()

    def state_dict(self):
        return {k: o.state_dict() for k, o in self.opts.items()}

    def load_state_dict(self, state):
        for k, o in self.opts.items():
            o.load_state_dict(state[k])


class _SparseAdamW(torch.optim.SparseAdam):
    """SparseAdam with decoupled weight decay of the rows a step touches (``p_r ← p_r (1 −
    lr·wd)`` before the Adam update): AdamW's rule restricted to the features of the batch."""

    def __init__(self, params, lr: float, weight_decay: float):
        super().__init__(params, lr=lr)
        for g in self.param_groups:
            g["weight_decay"] = float(weight_decay)

    @torch.no_grad()
    def step(self, closure=None):
        for group in self.param_groups:
            decay = 1.0 - group["lr"] * group.get("weight_decay", 0.0)
            if decay == 1.0:
                continue
            for p in group["params"]:
                if p.grad is not None:
                    rows = p.grad.coalesce().indices()[0]
                    p.index_copy_(0, rows, p.index_select(0, rows) * decay)
        return super().step(closure)


def _encoder_optimizer(encoder, cfg: TrainConfig):
    """Adam on the encoder; with a sparse input bag, SparseAdam on the bag's rows (a step
    then touches only the features present in the batch) and Adam on the rest. With
    ``optim.weight_decay`` > 0, the decoupled-decay variants (AdamW; touched rows of the bag)."""
    lr, wd = cfg.optim.lr_encoder, cfg.optim.weight_decay

    def dense(params):
        if wd > 0:
            return torch.optim.AdamW(params, lr=lr, weight_decay=wd)
        return torch.optim.Adam(params, lr=lr)

    bag = getattr(encoder, "bag", None)
    if bag is None or not bag.sparse:
        return dense(encoder.parameters())
    rest = [p for n, p in encoder.named_parameters() if not n.startswith("bag.")]
    sparse = _SparseAdamW([bag.weight], lr=lr, weight_decay=wd) if wd > 0 else \
        torch.optim.SparseAdam([bag.weight], lr=lr)
    return _Optimizers(bag=sparse, rest=dense(rest))


SCHEDULES = ("constant", "linear", "cosine")


def lr_factor(step: int, total: int, schedule: str, warmup_fraction: float,
              final_ratio: float) -> float:
    """Learning-rate multiplier of step ``step`` (0-based) out of ``total``: a linear warm-up
    over the first ``warmup_fraction·total`` steps, then constant, linear or cosine decay to
    ``final_ratio`` at the last step. A pure function of the step, so a resumed run follows the
    same schedule without any scheduler state."""
    total = max(int(total), 1)
    warm = int(round(warmup_fraction * total))
    if step < warm:
        return (step + 1) / warm
    if schedule == "constant":
        return 1.0
    span = max(total - warm - 1, 1)
    t = min(max((step - warm) / span, 0.0), 1.0)
    if schedule == "linear":
        return 1.0 - (1.0 - final_ratio) * t
    return final_ratio + (1.0 - final_ratio) * 0.5 * (1.0 + math.cos(math.pi * t))


def _save_miner(miner, path: Path) -> None:
    """The miner's index (and a pending background build, waited for), refresh steps and
    sampling RNG state, so a resumed run mines exactly what the uninterrupted one would have
    (:meth:`~xmr.negatives.miner.HardNegativeMiner.save`)."""
    miner.save(path)


def _load_miner(miner, path: Path) -> None:
    miner.load(path)


class Trainer:
    """Trains an :class:`XMRModel` under the unified loss; see the module docstring.

    Parameters
    ----------
    cfg : the resolved training configuration.
    X_trn, Y_trn : CSR inputs and labels of the training set (all of it; the held-out part for
        periodic evaluation is split off here with ``cfg.data.valid_fraction``).
    out_dir : folder for ``checkpoint/`` and the final ``model/`` (None: keep in memory).
    teacher : a :class:`xmr.teachers.TeacherStore` aligned with the rows of ``X_trn``.
    inv_prop : inverse propensities (PSP@k in the periodic evaluation).
    """

    def __init__(self, cfg: TrainConfig, X_trn: sp.csr_matrix, Y_trn: sp.csr_matrix,
                 out_dir=None, teacher=None, inv_prop=None, progress: bool = True,
                 process_group=None):
        cfg.validate()
        self.cfg = cfg
        self.loss_cfg = cfg.loss.resolved()
        self.X = sp.csr_matrix(X_trn, dtype=np.float32)
        self.Y = sp.csr_matrix(Y_trn, dtype=np.float32)
        if self.X.shape[0] != self.Y.shape[0]:
            raise ValueError(f"X has {self.X.shape[0]} rows but Y has {self.Y.shape[0]}")
        self.out_dir = Path(out_dir) if out_dir is not None else None
        self.teacher = teacher
        self.inv_prop = inv_prop
        from xmr.distributed import rank_of, world_of

        self.group = process_group
        self.rank, self.world = rank_of(process_group), world_of(process_group)
        self.progress = progress and self.rank == 0
        self.num_labels = self.Y.shape[1]
        if self.loss_cfg.needs_teacher:
            if teacher is None:
                raise ValueError(f"loss preset {self.loss_cfg.preset!r} needs a teacher store "
                                 "(set `teacher` to a folder written by `xmr teacher export`)")
            teacher.check_matches(self.X.shape[0], self.num_labels, "the training set")
        self.train_rows, self.valid_rows = split_valid(self.X.shape[0], cfg.data.valid_fraction, cfg.seed)

        if cfg.threads:
            torch.set_num_threads(cfg.threads)
        torch.manual_seed(cfg.seed)
        from xmr.models.xmr_model import resolve_device

        self.device = resolve_device(cfg.device)
        self.model = XMRModel(self.X.shape[1], self.num_labels, cfg.model,
                              process_group=process_group).to(self.device)
        from xmr.models import RowAdagrad
        from xmr.objectives.loss import UnifiedObjective

        self.opt_enc = _encoder_optimizer(self.model.encoder, cfg)
        self.opt_tab = RowAdagrad(self.model.label_table.parameters(), lr=cfg.optim.lr_table,
                                  weight_decay=cfg.optim.table_weight_decay,
                                  master_weights=cfg.optim.table_master_weights)
        self._base_lrs = [[g["lr"] for g in o.param_groups] for o in self._all_optimizers()]
        self.total_steps = 0  # set by fit (the schedule's horizon)
        counts = np.asarray(self.Y[self.train_rows].sum(0)).ravel().astype(np.int64)
        table = self.model.label_table
        if self.loss_cfg.reduction == "ova" and table.bias is not None:
            # prior initialisation (Lin et al. 2017, *Focal loss*, §4.1): each label's sigmoid
            # starts at its training frequency instead of 0.5, so the first steps do not spend
            # themselves pushing L − |P| labels down
            prior = (counts + 0.5) / (len(self.train_rows) + 1.0)
            with torch.no_grad():
                table.bias.copy_(torch.from_numpy(np.log(prior / (1 - prior))[table.lo:table.hi]))
        self.glas = None
        if self.loss_cfg.glas > 0:
            if self.world > 1:
                raise ConfigError("loss.glas: the GLaS regulariser runs in a single process only "
                                  f"(this run has {self.world} ranks); set loss.glas=0")
            from xmr.objectives.glas import GlasRegularizer

            self.glas = GlasRegularizer(self.Y[self.train_rows], self.loss_cfg.glas)
        self.miner = None
        if self.loss_cfg.needs_miner:
            from xmr.negatives.miner import HardNegativeMiner

            m = cfg.miner
            # world > 1: each rank indexes its own label range (sharded mining, collective)
            self.miner = HardNegativeMiner(self.num_labels, k=m.k, refresh_every=m.refresh_every,
                                           skip_top=m.skip_top, num_negatives=m.num_negatives or None,
                                           factory=m.factory, seed=cfg.seed,
                                           async_refresh=m.async_refresh, swap_lag=m.swap_lag,
                                           build_threads=m.build_threads or None,
                                           index_params=m.index_params(),
                                           dedup_queries=m.dedup_queries,
                                           process_group=process_group)
        from xmr.negatives.sources import CandidateSources
        from xmr.train.step import TrainStep

        self.sources = CandidateSources(self.loss_cfg, self.num_labels, label_counts=counts,
                                        seed=cfg.seed, teacher=teacher, miner=self.miner,
                                        label_rows=self._miner_label_rows)
        self.objective = UnifiedObjective(self.loss_cfg, self.num_labels,
                                          full_softmax_chunk=cfg.optim.full_softmax_chunk,
                                          sources=self.sources)
        self.step_fn = TrainStep(self.model, self.sources, self.objective,
                                 [self.opt_enc, self.opt_tab], glas=self.glas,
                                 process_group=process_group)
        self.step = 0
        self.epoch = 0
        self.batch_in_epoch = 0
        self.history: List[Dict] = []
        self.best: Optional[Dict] = None  # {"score", "epoch", "step", "model"} of the best evaluation
        self.bad_evals = 0  # evaluations since the best one (early stopping)
        self.time_total = 0.0
        self.time_mining = 0.0

    # ------------------------------------------------------------------ checkpoints
    def _state(self) -> dict:
        return {
            "model": self.model.state_dict(),
            "opt_enc": self.opt_enc.state_dict(),
            "opt_tab": self.opt_tab.state_dict(),
            "torch_rng": torch.get_rng_state(),
            "counters": torch.tensor([self.step, self.epoch, self.batch_in_epoch, self.bad_evals],
                                     dtype=torch.int64),
            **({"best_model": self.best["model"],
                "best": torch.tensor([self.best["score"], self.best["epoch"], self.best["step"]],
                                     dtype=torch.float64)} if self.best is not None else {}),
        }

    @property
    def checkpoint_dir(self) -> Optional[Path]:
        """``OUT/checkpoint`` (``OUT/checkpoint-rank{r}`` for each rank of a distributed run)."""
        if self.out_dir is None:
            return None
        return self.out_dir / (CHECKPOINT if self.world == 1 else f"{CHECKPOINT}-rank{self.rank}")

    def save_checkpoint(self) -> Optional[Path]:
        if self.out_dir is None:
            return None
        path = self.checkpoint_dir
        with atomic_dir(path) as tmp:
            torch.save(self._state(), tmp / "state.pt")
            (tmp / "config.json").write_text(self.cfg.to_json())
            (tmp / "history.json").write_text(json.dumps(self.history, indent=2) + "\n")
            if self.miner is not None and (self.miner.index_ is not None
                                           or self.miner.pending_step_ is not None):
                _save_miner(self.miner, tmp / "miner")
        log.info("checkpoint at step %d written to %s", self.step, path)
        return path

    def load_checkpoint(self) -> bool:
        """Restore the state of ``out_dir/checkpoint``.

        Raises :class:`~xmr.errors.CheckpointError` when there is no usable checkpoint (no
        folder, no ``state.pt``): ``--resume`` never silently starts from scratch. A checkpoint
        whose swap was interrupted (only the ``.checkpoint.*.old`` folder is left) is restored.
        """
        from xmr.errors import CheckpointError
        from xmr.utils.atomic import leftovers

        path = self.checkpoint_dir
        if path is None:
            raise CheckpointError("cannot resume: the trainer has no output folder")
        if not path.exists():
            old = [p for p in leftovers(path) if p.suffix == ".old" and (p / "state.pt").is_file()]
            if old:
                log.warning("restoring %s from %s (a checkpoint swap was interrupted)", path,
                            old[-1])
                os.replace(old[-1], path)
        if not (path / "state.pt").is_file():
            what = "no checkpoint folder" if not path.is_dir() else "no state.pt in it"
            raise CheckpointError(f"cannot resume from {path}: {what}; run without --resume to "
                                  f"start from scratch")
        saved = TrainConfig.from_json(path / "config.json")
        if saved.to_dict() != self.cfg.to_dict():
            raise ValueError(f"cannot resume from {path}: it was written with a different config "
                             "(see its config.json); use a new output folder or the same config")
        state = load_torch(path / "state.pt", map_location=self.device)
        self.model.load_state_dict(state["model"])
        self.opt_enc.load_state_dict(state["opt_enc"])
        self.opt_tab.load_state_dict(state["opt_tab"])
        torch.set_rng_state(state["torch_rng"].cpu())
        counters = [int(v) for v in state["counters"]]
        self.step, self.epoch, self.batch_in_epoch = counters[:3]
        self.bad_evals = counters[3] if len(counters) > 3 else 0
        if "best_model" in state:
            score, epoch, step = (float(v) for v in state["best"])
            self.best = {"score": score, "epoch": int(epoch), "step": int(step),
                         "model": state["best_model"]}
        from xmr.utils.validation import read_json

        self.history = read_json(path / "history.json", "the JSON list of a checkpoint's history")
        if self.miner is not None and (path / "miner").exists():
            _load_miner(self.miner, path / "miner")
        log.info("resumed from %s at step %d (epoch %d, batch %d)", path, self.step, self.epoch,
                 self.batch_in_epoch)
        return True

    def _miner_label_rows(self) -> np.ndarray:
        """The rows the miner indexes: all L in one process; this rank's ``[lo, hi)`` in a
        distributed run (sharded mining: no gather of the table)."""
        if self.world == 1:
            return self._full_label_rows()
        return self.model.label_table.weight.detach().float().cpu().numpy()

    def _full_label_rows(self) -> np.ndarray:
        """All L label rows as float32 numpy (gathered over ranks in a distributed run)."""
        from xmr.distributed import gather_label_rows

        return gather_label_rows(self.model.label_table, self.group).float().cpu().numpy()

    def _full_state(self) -> dict:
        state = dict(self.model.state_dict())
        if self.world > 1:
            from xmr.distributed import gather_label_bias, gather_label_rows

            state["label_table.weight"] = gather_label_rows(self.model.label_table, self.group)
            bias = gather_label_bias(self.model.label_table, self.group)
            if bias is not None:
                state["label_table.bias"] = bias
        return state

    def _local_rows(self, rows: np.ndarray) -> np.ndarray:
        """This rank's part of a global batch (contiguous, sizes differ by at most one)."""
        if self.world == 1:
            return rows
        return np.array_split(rows, self.world)[self.rank]

    def _all_optimizers(self):
        for o in (self.opt_enc, self.opt_tab):
            yield from (o.opts.values() if isinstance(o, _Optimizers) else (o,))

    def _set_learning_rates(self) -> float:
        o = self.cfg.optim
        f = lr_factor(self.step, self.total_steps, o.schedule, o.warmup_fraction, o.lr_final_ratio)
        for opt, base in zip(self._all_optimizers(), self._base_lrs):
            for g, lr in zip(opt.param_groups, base):
                g["lr"] = lr * f
        return f

    def _evaluate_held_out(self, bar) -> Optional[Dict]:
        """Score the held-out rows, keep the best state, count evaluations without progress."""
        metrics = evaluate_model(self.model, self.X[self.valid_rows], self.Y[self.valid_rows],
                                 self.inv_prop)
        metrics.update(epoch=self.epoch, step=self.step)
        self.history.append(metrics)
        log.info("epoch %d: %s", self.epoch,
                 ", ".join(f"{k}={v:.4f}" for k, v in metrics.items() if k.startswith("P")))
        if self.progress:
            bar.write(f"epoch {self.epoch}: held-out P@1={metrics.get('P@1', 0):.4f} "
                      f"P@5={metrics.get('P@5', 0):.4f}")
        key = self.cfg.early_stopping_metric
        if key not in metrics:
            raise ValueError(f"early_stopping_metric: expected one of "
                             f"{sorted(k for k in metrics if '@' in k)}, got {key!r}")
        score = float(metrics[key])
        if self.best is None or score > self.best["score"]:
            self.best = {"score": score, "epoch": self.epoch, "step": self.step,
                         "model": {k: v.detach().clone() for k, v in self.model.state_dict().items()}}
            self.bad_evals = 0
        else:
            self.bad_evals += 1
        return metrics

    # ------------------------------------------------------------------ one step
    def train_step(self, rows: np.ndarray) -> float:
        """One step on training rows ``rows`` (this rank's slice of the global batch): the
        learning rates of this step, then :class:`~xmr.train.step.TrainStep`. Returns the loss."""
        pos = _csr_rows(self.Y, rows)
        self._set_learning_rates()
        res = self.step_fn(self.X, rows, pos, self.step)
        self.time_mining += res.timings["mining"]
        self.step += 1
        return res.loss

    # ------------------------------------------------------------------ the loop
    def fit(self, resume: bool = False, stop_after_steps: Optional[int] = None) -> TrainResult:
        from tqdm.auto import tqdm

        cfg = self.cfg
        if resume:
            self.load_checkpoint()
        bs = cfg.optim.batch_size * self.world  # the global batch; each rank takes its slice
        n_batches = (len(self.train_rows) + bs - 1) // bs
        total = n_batches * cfg.optim.epochs
        self.total_steps = total
        patience = cfg.early_stopping_patience
        stopped_early = bool(patience) and self.bad_evals >= patience  # a resumed stopped run
        bar = tqdm(total=total, initial=self.step, disable=not self.progress,
                   desc=f"train {self.loss_cfg.preset}", unit="step", dynamic_ncols=True,
                   mininterval=0.5 if sys.stderr.isatty() else 30.0)
        t_start = time.perf_counter()
        samples = 0
        interrupted = False
        while self.epoch < cfg.optim.epochs and not stopped_early:
            perm = self.train_rows[np.random.default_rng([cfg.seed, self.epoch]).permutation(len(self.train_rows))]
            self.model.train()
            while self.batch_in_epoch < n_batches:
                rows = self._local_rows(perm[self.batch_in_epoch * bs:(self.batch_in_epoch + 1) * bs])
                loss = self.train_step(rows)
                self.batch_in_epoch += 1
                samples += len(rows)
                bar.update(1)
                elapsed = time.perf_counter() - t_start
                bar.set_postfix(loss=f"{loss:.3f}", sps=f"{samples / max(elapsed, 1e-9):.0f}",
                                mine=f"{self.time_mining / max(elapsed, 1e-9):.0%}", refresh=False)
                if cfg.checkpoint_every and self.step % cfg.checkpoint_every == 0:
                    self.save_checkpoint()
                if stop_after_steps is not None and self.step >= stop_after_steps:
                    interrupted = True
                    break
            if interrupted:
                break
            self.epoch += 1
            self.batch_in_epoch = 0
            if cfg.eval_every and self.epoch % cfg.eval_every == 0 and len(self.valid_rows):
                self._evaluate_held_out(bar)
                if patience and self.bad_evals >= patience:
                    stopped_early = True
                    log.info("early stopping after epoch %d: no better held-out %s for %d "
                             "evaluations (best %.4f at epoch %d)", self.epoch,
                             cfg.early_stopping_metric, self.bad_evals, self.best["score"],
                             self.best["epoch"])
            self.save_checkpoint()
        bar.close()
        if not interrupted and cfg.restore_best and self.best is not None \
                and self.best["step"] != self.step:
            self.model.load_state_dict(self.best["model"])
            log.info("restored the weights of epoch %d (held-out %s %.4f)", self.best["epoch"],
                     cfg.early_stopping_metric, self.best["score"])
        elapsed = time.perf_counter() - t_start
        model_dir = None
        if not interrupted and self.out_dir is not None:
            state = self._full_state()  # collective in a distributed run: every rank calls it
            if self.rank == 0:
                model_dir = self.model.save(self.out_dir / MODEL, self.cfg,
                                            extra={"history": self.history, "world_size": self.world},
                                            state=state)
            if self.world > 1:
                import torch.distributed as dist

                dist.barrier(group=self.group)
                model_dir = self.out_dir / MODEL
        return TrainResult(model=self.model, model_dir=model_dir, history=self.history,
                           train_seconds=elapsed, steps=self.step,
                           samples_per_second=samples / max(elapsed, 1e-9),
                           mining_share=self.time_mining / max(elapsed, 1e-9))
