"""Collectives for the model-parallel label table (DESIGN.md §4).

Each rank of a ``torch.distributed`` process group owns a contiguous range ``[lo, hi)`` of the
labels; the encoder is data-parallel. The label table combines ranks with a few collectives:

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
