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
    """

    def __init__(self, params, lr: float = 0.01, eps: float = 1e-10,
                 initial_accumulator: float = 0.0, weight_decay: float = 0.0):
        if not lr > 0.0:
            raise ValueError(f"lr: expected a positive learning rate, got {lr}")
        if not eps >= 0.0:
            raise ValueError(f"eps: expected a non-negative value, got {eps}")
        if not initial_accumulator >= 0.0:
            raise ValueError(f"initial_accumulator: expected a non-negative value, got "
                             f"{initial_accumulator}")
        if not weight_decay >= 0.0:
            raise ValueError(f"weight_decay: expected a non-negative value, got {weight_decay}")
        super().__init__(params, dict(lr=lr, eps=eps, initial_accumulator=initial_accumulator,
                                      weight_decay=weight_decay))

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            lr, eps = group["lr"], group["eps"]
            decay = 1.0 - lr * group.get("weight_decay", 0.0)
            for p in group["params"]:
                if p.grad is None:
                    continue
                state = self.state[p]
                if "sum" not in state:
                    # one fp32 accumulator per row, whatever the parameter's dtype
                    state["sum"] = torch.full((p.shape[0],), group["initial_accumulator"],
                                              dtype=torch.float32, device=p.device)
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
                    if decay != 1.0:
                        p.index_copy_(0, rows, p.index_select(0, rows) * decay)
                    p.index_add_(0, rows, upd.mul_(-lr).to(p.dtype))
                else:
                    gf = g.float()
                    acc.add_(gf.reshape(p.shape[0], -1).pow(2).mean(dim=1))
                    denom = acc.sqrt().add_(eps).view((-1,) + (1,) * (p.dim() - 1))
                    if decay != 1.0:
                        p.mul_(decay)
                    p.add_((gf / denom).mul_(-lr).to(p.dtype))
        return loss
