"""Row-wise Adagrad for the label table: a step touches only the rows a batch used.

Row-wise Adagrad (the embedding-table optimizer of large recommendation models, e.g. DLRM's
"rowwise adagrad") keeps one accumulator per row instead of one per entry, so its state is
L floats, not L × d:

    a_r ← a_r + mean_k g_rk²            w_r ← w_r − lr · g_r / (√a_r + eps)

With a sparse COO gradient (from :meth:`ShardedLabelTable.candidate_logits`) only the rows
present in the gradient are read or written — weights and accumulators of every other row stay
bit-identical, and the cost of a step is O(rows used × d), independent of L. Dense gradients
(e.g. from the full softmax) update every row. A 1-d parameter (the bias) has rows of size 1,
which is plain Adagrad.

Other sparse-capable optimizers for the table: ``torch.optim.SparseAdam`` (all its parameters'
gradients must be sparse) and ``torch.optim.SGD`` without momentum. Use a dense optimizer (Adam,
AdamW) for the encoder.

bf16 tables (``ModelConfig.dtype="bfloat16"``): the accumulators are always fp32, and by default
(``master_weights=True``: for every parameter that is not fp32) the optimizer keeps an fp32
**master copy** of the parameter in its state (``state["master"]``, created on the first step
from the parameter). The update is applied to the master rows in fp32 and the bf16 rows are their
rounding, so an update smaller than half a bf16 ulp of the weight (≈ |w|·2⁻⁹, e.g. late Adagrad
steps) accumulates instead of being rounded away: what bf16 then costs against fp32 is the
rounding of the weights the matmuls read, not lost updates. Cost: 4 more bytes per table entry (a bf16 table with its master copy
takes 6 bytes per entry, fp32 takes 4: bf16 buys matmul speed here, not memory) and the
master in every checkpoint. A row whose parameter was written from outside (its bf16 value is no
longer the master's rounding, e.g. after ``load_state_dict`` of the model alone) is re-read from
the parameter when a step next touches it. ``master_weights=False`` updates the bf16 rows in
place (round to nearest: 2 bytes per entry, small updates lost).
"""

from __future__ import annotations

import torch


class RowAdagrad(torch.optim.Optimizer):
    """Row-wise Adagrad accepting sparse or dense gradients (see module docstring).

    Args:
        params: parameters (or parameter groups); row r of a parameter is ``p[r]``.
        lr: learning rate.
        eps: added to √a_r in the denominator.
        initial_accumulator: starting value of every a_r.
        weight_decay: decoupled weight decay (Loshchilov & Hutter, *Decoupled Weight Decay
            Regularization*, ICLR 2019) of the rows a step touches: ``p_r ← p_r (1 − lr·wd)``
            before the update. Rows without gradient are not decayed (a step's cost stays
            independent of L), so a label decays in proportion to how often it is scored.
        master_weights: keep an fp32 master copy of every parameter that is not fp32 and apply
            the updates to it (see the module docstring); fp32 parameters never have one.
    """

    def __init__(self, params, lr: float = 0.01, eps: float = 1e-10,
                 initial_accumulator: float = 0.0, weight_decay: float = 0.0,
                 master_weights: bool = True):
        if not lr > 0.0:
            raise ValueError(f"lr: expected a positive learning rate, got {lr}")
        if not eps >= 0.0:
            raise ValueError(f"eps: expected a non-negative value, got {eps}")
        if not initial_accumulator >= 0.0:
            raise ValueError(f"initial_accumulator: expected a non-negative value, got "
                             f"{initial_accumulator}")
        if not weight_decay >= 0.0:
            raise ValueError(f"weight_decay: expected a non-negative value, got {weight_decay}")
        if not isinstance(master_weights, bool):
            raise ValueError(f"master_weights: expected True or False, got {master_weights!r}")
        super().__init__(params, dict(lr=lr, eps=eps, initial_accumulator=initial_accumulator,
                                      weight_decay=weight_decay, master_weights=master_weights))

    def load_state_dict(self, state_dict) -> None:
        """As :meth:`torch.optim.Optimizer.load_state_dict`, but the fp32 state (accumulators,
        master copies) stays fp32: torch casts floating-point state to each parameter's dtype,
        which for a bf16 table would round the accumulators (and the masters) to bf16."""
        super().load_state_dict(state_dict)
        saved = (i for g in state_dict["param_groups"] for i in g["params"])
        current = (p for g in self.param_groups for p in g["params"])
        for i, p in zip(saved, current):
            for k, v in state_dict["state"].get(i, {}).items():
                if isinstance(v, torch.Tensor) and v.dtype == torch.float32:
                    self.state[p][k] = v.to(device=p.device, copy=True)

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            lr, eps = group["lr"], group["eps"]
            decay = 1.0 - lr * group.get("weight_decay", 0.0)
            use_master = group.get("master_weights", True)
            for p in group["params"]:
                if p.grad is None:
                    continue
                state = self.state[p]
                if "sum" not in state:
                    # one fp32 accumulator per row, whatever the parameter's dtype
                    state["sum"] = torch.full((p.shape[0],), group["initial_accumulator"],
                                              dtype=torch.float32, device=p.device)
                master = None
                if use_master and p.dtype != torch.float32:
                    if "master" not in state:
                        state["master"] = p.detach().float()
                    master = state["master"]
                acc = state["sum"]
                g = p.grad
                if g.is_sparse:
                    g = g.coalesce()
                    rows = g.indices()[0]  # [R], unique after coalesce
                    vals = g.values().float()  # [R, ...]
                    if rows.numel() == 0:
                        continue
                    acc.index_add_(0, rows, vals.reshape(rows.numel(), -1).pow(2).mean(dim=1))
                    denom = acc.index_select(0, rows).sqrt_().add_(eps)
                    upd = vals / denom.view((-1,) + (1,) * (vals.dim() - 1))
                    if master is not None:
                        m = _sync_(master.index_select(0, rows), p.index_select(0, rows))
                        if decay != 1.0:
                            m.mul_(decay)
                        m.add_(upd.mul_(-lr))
                        master.index_copy_(0, rows, m)
                        p.index_copy_(0, rows, m.to(p.dtype))
                        continue
                    if decay != 1.0:
                        p.index_copy_(0, rows, p.index_select(0, rows) * decay)
                    p.index_add_(0, rows, upd.mul_(-lr).to(p.dtype))
                else:
                    gf = g.float()
                    acc.add_(gf.reshape(p.shape[0], -1).pow(2).mean(dim=1))
                    denom = acc.sqrt().add_(eps).view((-1,) + (1,) * (p.dim() - 1))
                    if master is not None:
                        _sync_(master, p)
                        if decay != 1.0:
                            master.mul_(decay)
                        master.add_((gf / denom).mul_(-lr))
                        p.copy_(master)
                        continue
                    if decay != 1.0:
                        p.mul_(decay)
                    p.add_((gf / denom).mul_(-lr).to(p.dtype))
        return loss


def _sync_(master: torch.Tensor, param: torch.Tensor) -> torch.Tensor:
    """Overwrite, in place, the entries of the fp32 ``master`` whose rounding to ``param``'s
    dtype is not ``param`` (written from outside the optimizer) with ``param``; returns it."""
    stale = master.to(param.dtype) != param
    if bool(stale.any()):
        master[stale] = param[stale].float()
    return master
