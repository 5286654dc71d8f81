"""Everything xmr does with ``torch.distributed``: the process group, the label table's
collectives and the data-parallel encoder's gradients (DESIGN.md §4).

Multi-process training is ``torchrun --nproc_per_node N -m xmr train ...``. Each rank of the
process group owns a contiguous range ``[lo, hi)`` of the labels (:func:`label_range`; the label
table is model-parallel) and a slice of every global batch (the encoder is data-parallel).

Process group (used by :func:`xmr.train.run.run_training` and the trainer):

* :func:`init_from_env` creates the default group from torchrun's environment (NCCL when the run
  uses CUDA, else gloo); :func:`world_from_env`, :func:`rank_of`, :func:`world_of`.
* :func:`average_gradients` averages a data-parallel module's gradients (dense and sparse).
* :func:`gather_label_rows`, :func:`gather_label_bias` the full label table on every rank (to
  save a model one process can load, or to index all labels).

Label-table collectives (used by :mod:`xmr.models.label_table`, :mod:`xmr.models.exact_softmax`
and :mod:`xmr.models.topk`):

* :func:`gather_rows` all-gathers the batch embeddings (ranks may hold different batch sizes),
  so that every rank scores all ``N = Σ_r B_r`` rows on its own label range; its backward sums the
  embedding gradient over ranks and hands each rank the slice of its own rows.
* :func:`all_reduce_sum` sums partial results (candidate logits) over ranks; its backward sums the
  incoming gradients the same way.
* :class:`Comm` wraps the group (rank, world size, varlen all-gather, in-place reductions) and
  degrades to no-ops for a single process, so one code path serves both cases.

Gradient convention (as DDP): every rank calls ``backward`` on its own loss; the gradient a rank
gets for its slice of the label table is that of the *average of the ranks' losses*, which is
also what DDP's gradient averaging gives the encoder. With equal batch sizes and
``reduction="mean"`` this equals the single-process gradient of the mean over all rows.

Works with gloo (CPU tensors) and NCCL (CUDA tensors); tensors stay on their device.
"""

from __future__ import annotations

import os
from typing import List, Optional, Tuple

import torch
import torch.distributed as dist


def label_range(num_labels: int, rank: int, world: int) -> Tuple[int, int]:
    """The contiguous label range ``[lo, hi)`` owned by ``rank`` (sizes differ by at most 1)."""
    return (num_labels * rank) // world, (num_labels * (rank + 1)) // world


class Comm:
    """A process group seen by the label table; ``group=None`` means a single process."""

    def __init__(self, group: Optional["dist.ProcessGroup"] = None):
        self.group = group
        if group is None:
            self.rank, self.world = 0, 1
        else:
            if not dist.is_initialized():
                raise RuntimeError("process_group was given but torch.distributed is not "
                                   "initialised (call torch.distributed.init_process_group first)")
            self.rank = dist.get_rank(group)
            self.world = dist.get_world_size(group)

    @property
    def distributed(self) -> bool:
        return self.world > 1

    def all_reduce_(self, t: torch.Tensor, op: str = "sum") -> torch.Tensor:
        """In-place all-reduce (``op`` in {"sum", "max"}); a no-op for one process."""
        if self.distributed:
            dist.all_reduce(t, op=dist.ReduceOp.SUM if op == "sum" else dist.ReduceOp.MAX,
                            group=self.group)
        return t

    def sizes(self, n: int, device) -> List[int]:
        """Every rank's ``n`` (one small all-gather)."""
        if not self.distributed:
            return [n]
        mine = torch.tensor([n], dtype=torch.int64, device=device)
        out = [torch.empty_like(mine) for _ in range(self.world)]
        dist.all_gather(out, mine, group=self.group)
        return [int(x.item()) for x in out]

    def all_gather_varlen(self, t: torch.Tensor, sizes: Optional[List[int]] = None
                          ) -> Tuple[torch.Tensor, List[int]]:
        """Concatenate every rank's ``t`` along dim 0 (lengths may differ): ``(cat, sizes)``."""
        if not self.distributed:
            return t, [t.shape[0]]
        if sizes is None:
            sizes = self.sizes(t.shape[0], t.device)
        cap = max(sizes)
        padded = t.new_zeros((cap,) + tuple(t.shape[1:]))
        padded[: t.shape[0]] = t
        out = [torch.empty_like(padded) for _ in range(self.world)]
        dist.all_gather(out, padded.contiguous(), group=self.group)
        return torch.cat([o[:s] for o, s in zip(out, sizes)], dim=0), sizes

    def agree_on_error(self, message, what: str) -> None:
        """Raise on every rank if any rank rejected its input.

        ``message`` is None (input valid), an error message (raised as ``ValueError``) or an
        exception to raise; the other ranks raise ``ValueError`` naming the rejecting ranks.

        Called after local validation and before the first data collective, so that one rank's
        bad input cannot leave the others waiting forever in a collective.
        """
        if isinstance(message, str):
            message = ValueError(message)
        if not self.distributed:
            if message is not None:
                raise message
            return
        bad = torch.zeros(self.world, dtype=torch.int64, device=self._device())
        bad[self.rank] = 0 if message is None else 1
        dist.all_reduce(bad, op=dist.ReduceOp.SUM, group=self.group)
        if message is not None:
            raise message
        if int(bad.sum()) > 0:
            ranks = [r for r in range(self.world) if int(bad[r]) > 0]
            raise ValueError(f"{what}: rank(s) {ranks} rejected their input (see the error "
                             f"raised there); nothing was computed")

    def _device(self):
        if self.group is not None and dist.get_backend(self.group) == "nccl":
            return torch.device("cuda", torch.cuda.current_device())
        return torch.device("cpu")


class _GatherRows(torch.autograd.Function):
    """``[B_r, d]`` on each rank → ``[Σ_r B_r, d]`` on every rank; backward: sum, own slice."""

    @staticmethod
    def forward(ctx, x, comm: Comm, sizes: List[int]):
        ctx.comm, ctx.sizes = comm, sizes
        out, _ = comm.all_gather_varlen(x.contiguous(), sizes)
        return out

    @staticmethod
    def backward(ctx, grad):
        comm, sizes = ctx.comm, ctx.sizes
        grad = comm.all_reduce_(grad.contiguous().clone(), "sum")
        row0 = sum(sizes[: comm.rank])
        return grad[row0: row0 + sizes[comm.rank]], None, None


class _AllReduceSum(torch.autograd.Function):
    """Sum over ranks; every rank's loss may use the sum, so backward sums gradients too."""

    @staticmethod
    def forward(ctx, x, comm: Comm):
        ctx.comm = comm
        return comm.all_reduce_(x.contiguous().clone(), "sum")

    @staticmethod
    def backward(ctx, grad):
        return ctx.comm.all_reduce_(grad.contiguous().clone(), "sum"), None


def gather_rows(x: torch.Tensor, comm: Comm, sizes: Optional[List[int]] = None) -> torch.Tensor:
    """Differentiable varlen all-gather of rows (identity for one process)."""
    if not comm.distributed:
        return x
    if sizes is None:
        sizes = comm.sizes(x.shape[0], x.device)
    return _GatherRows.apply(x, comm, sizes)


def all_reduce_sum(x: torch.Tensor, comm: Comm) -> torch.Tensor:
    """Differentiable all-reduce(sum) (identity for one process)."""
    if not comm.distributed:
        return x
    return _AllReduceSum.apply(x, comm)


# ------------------------------------------------------------------------------------------------
# the process group and the data-parallel encoder


def world_from_env() -> int:
    """The WORLD_SIZE that torchrun exported (1 without torchrun)."""
    return int(os.environ.get("WORLD_SIZE", "1"))


def init_from_env(device: str = "auto"):
    """Initialise the default process group from torchrun's environment; return it (or None
    for a single process). The backend is NCCL when the run uses CUDA, else gloo."""
    if world_from_env() <= 1:
        return None
    if not dist.is_initialized():
        use_cuda = torch.cuda.is_available() and device != "cpu"
        if use_cuda:
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
        dist.init_process_group("nccl" if use_cuda else "gloo")
    return dist.group.WORLD


def rank_of(group) -> int:
    """This process's rank in ``group`` (0 for ``None``, a single process)."""
    return dist.get_rank(group) if group is not None else 0


def world_of(group) -> int:
    """The number of ranks of ``group`` (1 for ``None``, a single process)."""
    return dist.get_world_size(group) if group is not None else 1


def average_gradients(module: torch.nn.Module, group) -> None:
    """Average the gradients of a data-parallel module over the ranks of ``group``.

    Dense gradients: one all-reduce each. Sparse gradients (the input bag's rows): every rank's
    (indices, values) are all-gathered and summed, so the result equals the gradient of the mean
    of the ranks' losses — what DDP computes for dense parameters.
    """
    world = world_of(group)
    if world == 1:
        return
    comm = Comm(group)
    for p in module.parameters():
        if p.grad is None:
            continue
        if p.grad.is_sparse:
            g = p.grad.coalesce()
            idx, _ = comm.all_gather_varlen(g.indices()[0].contiguous())
            val, _ = comm.all_gather_varlen(g.values().contiguous())
            p.grad = torch.sparse_coo_tensor(idx[None], val / world, g.shape).coalesce()
        else:
            dist.all_reduce(p.grad, op=dist.ReduceOp.SUM, group=group)
            p.grad /= world


def gather_label_rows(table, group) -> torch.Tensor:
    """The full label table ``[L, d]`` (every rank gets it): to save a model that a single process
    can load, or to build a label index over all labels."""
    if world_of(group) == 1:
        return table.weight.detach()
    full, _ = Comm(group).all_gather_varlen(table.weight.detach().contiguous())
    return full


def gather_label_bias(table, group) -> Optional[torch.Tensor]:
    """The full label bias ``[L]`` on every rank, as :func:`gather_label_rows` (None without
    a bias)."""
    if table.bias is None:
        return None
    if world_of(group) == 1:
        return table.bias.detach()
    full, _ = Comm(group).all_gather_varlen(table.bias.detach().contiguous())
    return full
