"""Multi-process training: ``torchrun --nproc_per_node N -m xmr train ...``.

Each rank owns a contiguous range of labels (the label table is model-parallel, see
:mod:`xmr.models.distributed`) and a slice of every global batch (the encoder is
data-parallel: its gradients are averaged over ranks after backward, dense or sparse).
Gloo on CPU, NCCL on GPU.
"""

from __future__ import annotations

import os
from typing import Optional

import torch
import torch.distributed as dist


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
    return dist.get_rank(group) if group is not None else 0


def world_of(group) -> int:
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
    from xmr.models.distributed import Comm

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
    from xmr.models.distributed import Comm

    full, _ = Comm(group).all_gather_varlen(table.weight.detach().contiguous())
    return full


def gather_label_bias(table, group) -> Optional[torch.Tensor]:
    if table.bias is None:
        return None
    if world_of(group) == 1:
        return table.bias.detach()
    from xmr.models.distributed import Comm

    full, _ = Comm(group).all_gather_varlen(table.bias.detach().contiguous())
    return full
