"""Exact full softmax with soft targets over a sharded label table, without a B × L matrix.

For embeddings φ_i ∈ R^d, a label table W ∈ R^{L×d} (optional bias b) and sparse targets t_i (a
distribution over labels: uniform over the positives, or a teacher's), the loss of row i is

    s_ij   = ⟨φ_i, w_j⟩ + b_j
    loss_i = logsumexp_j s_ij − Σ_j t_ij s_ij                 (Σ_j t_ij = 1)

i.e. the cross-entropy of softmax(s_i) against t_i (DESIGN.md §4.1 and §5 with A = all labels;
the soft-target form is the distillation risk of Menon et al. 2020, §3). Its gradient is
∂loss_i/∂s_ij = softmax(s_i)_j − t_ij.

:class:`ExactSoftmaxFunction` computes it chunk by chunk over the label range of this process
(shards are visited one after another, chunks never straddle a shard boundary):

* forward keeps only a running log-sum-exp per row (running max, then the sum of exp(s − max),
  rescaled when the max grows; fp32 even for bf16 weights) and the target term, read off the
  chunk's logits at the target positions; across ranks the maxima are combined with
  all-reduce(max) and the sums and target terms with all-reduce(sum);
* backward recomputes each chunk's logits and forms G = g ⊙ (softmax − t) for that chunk only;
  dW_chunk = Gᵀφ, dφ += G W_chunk, db_chunk = Σ_rows G.

Peak extra memory is O(N × chunk) (N rows, all ranks' rows in a distributed run), never O(N × L),
plus an optional cache: forward may keep exp(z − m_c) of its first chunks (m_c the running max
when the chunk was seen, so exp(z − m_c)·exp(m_c − lse) = softmax) up to ``cache_bytes``, and
backward then skips recomputing them — 3 instead of 4 matmul passes over W for the chunks kept.
:func:`exact_softmax_reference` is the dense reference used by the tests.
"""

from __future__ import annotations

import math
from typing import List, Optional, Sequence, Tuple

import torch


def exact_softmax_reference(emb: torch.Tensor, W: torch.Tensor, bias: Optional[torch.Tensor],
                            targets_dense: torch.Tensor) -> torch.Tensor:
    """Dense reference: per-row loss ``[B]`` = logsumexp(φWᵀ + b) − ⟨t, φWᵀ + b⟩.

    emb [B, d], W [L, d], bias [L] or None, targets_dense [B, L] (rows sum to 1). Materialises
    the B × L logits: for tests and small sizes only. Works in the inputs' dtype (use float64 for
    a tight reference).
    """
    logits = emb @ W.T
    if bias is not None:
        logits = logits + bias
    return torch.logsumexp(logits, dim=1) - (targets_dense * logits).sum(dim=1)


def chunk_bounds(shard_bounds: Sequence[Tuple[int, int]], chunk_size: int) -> List[Tuple[int, int]]:
    """Split each shard ``[a, b)`` into chunks of at most ``chunk_size`` labels (local offsets)."""
    out = []
    for a, b in shard_bounds:
        for c in range(a, b, chunk_size):
            out.append((c, min(c + chunk_size, b)))
    return out


def _chunk_logits(E: torch.Tensor, W: torch.Tensor, bias: Optional[torch.Tensor],
                  c0: int, c1: int) -> torch.Tensor:
    """fp32 logits ``[N, c1 − c0]`` of one chunk (matmul in the weights' dtype)."""
    z = E @ W[c0:c1].T
    if z.dtype != torch.float32:
        z = z.float()
    if bias is not None:
        z += bias[c0:c1].float()
    return z


class ExactSoftmaxFunction(torch.autograd.Function):
    """Per-row exact soft-target softmax loss of this rank's rows (see the module docstring).

    Inputs: ``E`` [N, d] the embeddings of all rows (gathered over ranks; this rank's rows are
    ``row0:row1``), ``weight`` [L_local, d], ``bias`` [L_local] or None, the targets restricted to
    this rank's label range as coordinate lists sorted by column: ``t_rows`` i64[nnz] (row in
    ``E``), ``t_cols`` i64[nnz] (local label), ``t_vals`` f32[nnz]; ``chunks`` (local label
    ranges), ``comm`` (:class:`~xmr.distributed.Comm`), ``cache_bytes``: forward keeps
    exp(z − m) of its first chunks, up to this many bytes, for backward, which then skips their
    recomputation. Output: f32[row1 − row0].

    Targets need not sum to 1: the shared-softmax part of a row is ``LSE_i · Σ_j t_ij − Σ_j t_ij
    s_ij`` (unnormalised pick-all-labels gives each positive weight 1). Optional **decoupled**
    terms (``p_rows, p_cols, p_w``: the positives, sorted by column like the targets) add, per
    positive p of row i with weight w_p,

        w_p · [log(e^{s_ip} + Σ_{j ∉ P_i} e^{s_ij}) − s_ip] = w_p · softplus(neg_i − s_ip)

    (DEXML's decoupled softmax: a row's positives do not compete with each other). ``neg_i`` is
    accumulated over the chunks with the positives masked out, never as a difference of
    exponentials (which cancels when the positives hold most of the mass). Gradients:
    ∂/∂s_ij = c_i e^{s_ij − neg_i} for j ∉ P_i with c_i = Σ_p w_p σ(neg_i − s_ip), and
    −w_p σ(neg_i − s_ip) at the positives.

    ``soft_on_neg`` (decoupled terms only): the soft targets compete with the negatives alone,
    ``neg_i · Σ_j t_ij − Σ_j t_ij s_ij`` (the *decoupled teacher term*: a teacher's label does not
    push the row's positives down). The targets must then lie off the positives (their mass on
    positives belongs in ``p_w``); c_i gains Σ_j t_ij.
    """

    @staticmethod
    def forward(ctx, E, weight, bias, t_rows, t_cols, t_vals, chunks, comm, row0, row1,
                cache_bytes=0, p_rows=None, p_cols=None, p_w=None, soft_on_neg=False):
        N = E.shape[0]
        dev = E.device
        Ec = E.to(weight.dtype)
        dec = p_rows is not None  # the decoupled terms (the same on every rank)
        m = torch.full((N,), -math.inf, dtype=torch.float32, device=dev)
        s = torch.zeros(N, dtype=torch.float32, device=dev)
        tdot = torch.zeros(N, dtype=torch.float32, device=dev)
        tsum = torch.zeros(N, dtype=torch.float32, device=dev).index_add_(0, t_rows, t_vals)
        bounds = torch.tensor([c[0] for c in chunks] + [weight.shape[0]], dtype=t_cols.dtype,
                              device=t_cols.device)
        starts = torch.searchsorted(t_cols, bounds).tolist()
        if dec:
            pstarts = torch.searchsorted(p_cols, bounds.to(p_cols.dtype)).tolist()
            s_pos = torch.zeros(p_rows.shape[0], dtype=torch.float32, device=dev)
            cache_bytes = 0  # the cached exp(z - m) would hold masked cells
        keep, kept = {}, 0
        with torch.no_grad():
            for ci, (c0, c1) in enumerate(chunks):
                z = _chunk_logits(Ec, weight, bias, c0, c1)  # [N, c]
                a, b = starts[ci], starts[ci + 1]
                if b > a:
                    r, c = t_rows[a:b], t_cols[a:b] - c0
                    tdot.index_add_(0, r, t_vals[a:b] * z[r, c])
                if dec:
                    pa, pb = pstarts[ci], pstarts[ci + 1]
                    if pb > pa:  # the positives leave the partition of the decoupled terms
                        pr, pc = p_rows[pa:pb], p_cols[pa:pb] - c0
                        s_pos[pa:pb] = z[pr, pc]
                        z[pr, pc] = -math.inf
                m_new = torch.maximum(m, z.amax(dim=1))
                m_safe = torch.where(torch.isfinite(m_new), m_new, torch.zeros_like(m_new))
                s.mul_(torch.exp(m - m_safe))
                s.add_(z.sub_(m_safe[:, None]).exp_().sum(dim=1))
                m = m_new
                if kept + z.numel() * 4 <= cache_bytes:
                    # keep exp(z − m_c) for backward instead of recomputing the chunk's logits
                    keep[ci] = (z, m_safe)
                    kept += z.numel() * 4
            if dec:
                # (m, s): the negatives' statistics; fold the positives back in for the total
                mn, sn = m, s
                mp = torch.full((N,), -math.inf, dtype=torch.float32, device=dev)
                mp = mp.scatter_reduce(0, p_rows, s_pos, "amax", include_self=True)
                m = torch.maximum(mn, mp)
                m_safe = torch.where(torch.isfinite(m), m, torch.zeros_like(m))
                s = sn * torch.exp(mn - m_safe)
                s = s.index_add(0, p_rows, torch.exp(s_pos - m_safe[p_rows]))
                mn, sn = _combine_lse_stats(mn, sn, comm)
                neg = mn + torch.log(sn)  # [N] log Σ_{j ∉ P} e^{s_j}, identical on every rank
            m, s = _combine_lse_stats(m, s, comm)
            if comm.distributed:
                st = comm.all_reduce_(torch.stack([tsum, tdot]), "sum")
                tsum, tdot = st[0], st[1]
            lse = m + torch.log(s)  # [N], identical on every rank
            soft_on_neg = bool(soft_on_neg) and dec
            loss = torch.where(tsum > 0, (neg if soft_on_neg else lse) * tsum - tdot,
                               torch.zeros_like(lse))
            if dec:
                # Σ_p w_p · [log(e^{s_p} + Σ_{j∉P} e^{s_j}) − s_p] = Σ_p w_p softplus(neg − s_p)
                dterm = torch.zeros(N, dtype=torch.float32, device=dev).index_add_(
                    0, p_rows, p_w * torch.nn.functional.softplus(neg[p_rows] - s_pos))
                if comm.distributed:
                    dterm = comm.all_reduce_(dterm, "sum")
                loss = loss + dterm
            bad = ~torch.isfinite(loss)
            if bool(bad.any()):  # same decision on every rank: loss is all-reduced
                rows = torch.nonzero(bad).flatten()
                raise FloatingPointError(
                    f"full_softmax_loss: expected a finite loss, got non-finite values in "
                    f"{rows.numel()} of {N} rows (first: row {int(rows[0])}); the weights or "
                    f"embeddings hold huge or non-finite values (is the learning rate too high?)")
        if dec:
            sig = torch.sigmoid(neg[p_rows] - s_pos)  # −∂(term)/∂s_p per unit weight
            coef = torch.zeros(N, dtype=torch.float32, device=dev).index_add_(0, p_rows, p_w * sig)
            if comm.distributed:
                coef = comm.all_reduce_(coef, "sum")
            if soft_on_neg:  # the soft targets' softmax runs over the negatives too
                coef = coef + tsum
            ctx.save_for_backward(E, weight, bias, t_rows, t_cols, t_vals, lse, tsum,
                                  p_rows, p_cols, p_w, neg, sig, coef)
            ctx.pstarts = pstarts
        else:
            ctx.save_for_backward(E, weight, bias, t_rows, t_cols, t_vals, lse, tsum)
        ctx.dec = dec
        ctx.soft_on_neg = soft_on_neg
        ctx.chunks, ctx.comm, ctx.row0, ctx.row1, ctx.starts = chunks, comm, row0, row1, starts
        ctx.keep = keep
        return loss[row0:row1].clone()

    @staticmethod
    def backward(ctx, grad_loss):
        saved = ctx.saved_tensors
        E, weight, bias, t_rows, t_cols, t_vals, lse, tsum = saved[:8]
        if ctx.dec:
            p_rows, p_cols, p_w, neg, sig, coef = saved[8:]
        comm, chunks, starts = ctx.comm, ctx.chunks, ctx.starts
        N = E.shape[0]
        # every rank needs every row's upstream gradient: its labels enter every row's loss
        g = torch.zeros(N, dtype=torch.float32, device=E.device)
        g[ctx.row0:ctx.row1] = grad_loss.float()
        comm.all_reduce_(g, "sum")
        need_e, need_w, need_b = ctx.needs_input_grad[0], ctx.needs_input_grad[1], (
            bias is not None and ctx.needs_input_grad[2])
        Ec = E.to(weight.dtype)
        dE = torch.zeros(N, E.shape[1], dtype=torch.float32, device=E.device) if need_e else None
        # the chunks tile [0, L_local): every row of dW and db is written exactly once
        dW = torch.empty_like(weight) if need_w else None
        db = torch.empty_like(bias) if need_b else None
        scale = 1.0 / comm.world  # DDP convention: gradient of the mean of the ranks' losses
        gs = g * tsum  # weight of the shared softmax: Σ_j t_ij (1 for normalised targets)
        soft = bool((gs != 0).any()) and not ctx.soft_on_neg
        with torch.no_grad():
            for ci, (c0, c1) in enumerate(chunks):
                if ci in ctx.keep:  # exp(z − m_c) kept by forward; freed once used
                    ez, m_c = ctx.keep.pop(ci)
                    G = ez.mul_((gs * torch.exp(m_c - lse))[:, None])  # g·Σt ⊙ softmax
                elif not ctx.dec:
                    z = _chunk_logits(Ec, weight, bias, c0, c1)
                    G = z.sub_(lse[:, None]).exp_().mul_(gs[:, None])  # g·Σt ⊙ softmax, [N, c]
                else:
                    z = _chunk_logits(Ec, weight, bias, c0, c1)
                    G = torch.sub(z, lse[:, None]).exp_().mul_(gs[:, None]) if soft else None
                    pa, pb = ctx.pstarts[ci], ctx.pstarts[ci + 1]
                    pr, pc = p_rows[pa:pb], p_cols[pa:pb] - c0
                    z[pr, pc] = -math.inf
                    Gd = z.sub_(neg[:, None]).exp_().mul_((g * coef)[:, None])  # negatives
                    if pb > pa:  # positives: −g·w_p·σ(neg − s_p)
                        Gd.index_put_((pr, pc), -(g[pr] * p_w[pa:pb] * sig[pa:pb]), accumulate=True)
                    G = Gd if G is None else G.add_(Gd)
                a, b = starts[ci], starts[ci + 1]
                if b > a:
                    r = t_rows[a:b]
                    G.index_put_((r, t_cols[a:b] - c0), -(g[r] * t_vals[a:b]), accumulate=True)
                _chunk_grads(G, Ec, weight, c0, c1, dW, dE, db)
            if scale != 1.0:
                if need_w:
                    dW.mul_(scale)
                if need_b:
                    db.mul_(scale)
        if need_e:
            dE = dE.to(E.dtype)
        return (dE, dW, db) + (None,) * 12


def _chunk_grads(G, Ec, weight, c0, c1, dW, dE, db) -> None:
    """Given ``G = ∂loss/∂z`` of one chunk ``[N, c1 − c0]``: dW[c0:c1] = Gᵀφ, dφ += G W_chunk,
    db[c0:c1] = Σ_rows G (each skipped when its buffer is None)."""
    Gc = G if weight.dtype == torch.float32 else G.to(weight.dtype)
    if dW is not None:
        torch.mm(Gc.T, Ec, out=dW[c0:c1])
    if dE is not None:
        if weight.dtype == torch.float32:
            dE.addmm_(Gc, weight[c0:c1])
        else:
            dE += (Gc @ weight[c0:c1]).float()
    if db is not None:
        db[c0:c1] = G.sum(dim=0).to(db.dtype)


class ExactOvAFunction(torch.autograd.Function):
    """Per-row exact one-versus-all (binary logistic) loss over all labels of the table.

    With per-label targets t_ij ∈ [0, 1] (1 on the positives; a teacher's per-label probability
    when distilling) the loss of row i is

        loss_i = Σ_j [softplus(s_ij) − t_ij s_ij] = Σ_j BCE(σ(s_ij), t_ij)

    summed over all L labels (the OvA reduction of Menon et al. 2019, precision@k-consistent;
    Renée and the one-vs-all tree/linear methods train this loss). Gradient ∂/∂s_ij = σ(s_ij) −
    t_ij. Same inputs and chunking as :class:`ExactSoftmaxFunction` (the targets need not sum to
    anything); across ranks the per-row sums are all-reduced.
    """

    @staticmethod
    def forward(ctx, E, weight, bias, t_rows, t_cols, t_vals, chunks, comm, row0, row1):
        N = E.shape[0]
        dev = E.device
        Ec = E.to(weight.dtype)
        acc = torch.zeros(N, dtype=torch.float32, device=dev)
        bounds = torch.tensor([c[0] for c in chunks] + [weight.shape[0]], dtype=t_cols.dtype,
                              device=t_cols.device)
        starts = torch.searchsorted(t_cols, bounds).tolist()
        with torch.no_grad():
            for ci, (c0, c1) in enumerate(chunks):
                z = _chunk_logits(Ec, weight, bias, c0, c1)
                a, b = starts[ci], starts[ci + 1]
                if b > a:
                    r, c = t_rows[a:b], t_cols[a:b] - c0
                    acc.index_add_(0, r, -t_vals[a:b] * z[r, c])
                acc.add_(torch.nn.functional.softplus(z).sum(dim=1))
            if comm.distributed:
                acc = comm.all_reduce_(acc, "sum")
            bad = ~torch.isfinite(acc)
            if bool(bad.any()):
                rows = torch.nonzero(bad).flatten()
                raise FloatingPointError(
                    f"full_ova_loss: expected a finite loss, got non-finite values in "
                    f"{rows.numel()} of {N} rows (first: row {int(rows[0])}); the weights or "
                    f"embeddings hold huge or non-finite values (is the learning rate too high?)")
        ctx.save_for_backward(E, weight, bias, t_rows, t_cols, t_vals)
        ctx.chunks, ctx.comm, ctx.row0, ctx.row1, ctx.starts = chunks, comm, row0, row1, starts
        return acc[row0:row1].clone()

    @staticmethod
    def backward(ctx, grad_loss):
        E, weight, bias, t_rows, t_cols, t_vals = ctx.saved_tensors
        comm, starts = ctx.comm, ctx.starts
        N = E.shape[0]
        g = torch.zeros(N, dtype=torch.float32, device=E.device)
        g[ctx.row0:ctx.row1] = grad_loss.float()
        comm.all_reduce_(g, "sum")
        need_e, need_w, need_b = ctx.needs_input_grad[0], ctx.needs_input_grad[1], (
            bias is not None and ctx.needs_input_grad[2])
        Ec = E.to(weight.dtype)
        dE = torch.zeros(N, E.shape[1], dtype=torch.float32, device=E.device) if need_e else None
        dW = torch.empty_like(weight) if need_w else None
        db = torch.empty_like(bias) if need_b else None
        with torch.no_grad():
            for ci, (c0, c1) in enumerate(ctx.chunks):
                G = _chunk_logits(Ec, weight, bias, c0, c1).sigmoid_().mul_(g[:, None])
                a, b = starts[ci], starts[ci + 1]
                if b > a:
                    r = t_rows[a:b]
                    G.index_put_((r, t_cols[a:b] - c0), -(g[r] * t_vals[a:b]), accumulate=True)
                _chunk_grads(G, Ec, weight, c0, c1, dW, dE, db)
            if comm.world != 1:
                for t in (dW, db):
                    if t is not None:
                        t.mul_(1.0 / comm.world)
        if need_e:
            dE = dE.to(E.dtype)
        return (dE, dW, db) + (None,) * 7


def _combine_lse_stats(m: torch.Tensor, s: torch.Tensor, comm):
    """Running (max, Σ exp(z − max)) of each row, combined over the ranks of ``comm``."""
    if not comm.distributed:
        return m, s
    m_glob = comm.all_reduce_(m.clone(), "max")
    safe = torch.where(torch.isfinite(m_glob), m_glob, torch.zeros_like(m_glob))
    s = comm.all_reduce_(s * torch.exp(m - safe), "sum")
    return safe, s


def validate_targets(t_indptr: torch.Tensor, t_ids: torch.Tensor, t_vals: torch.Tensor,
                     num_rows: int, num_labels: int, atol: float = 1e-4,
                     normalized: bool = True) -> Optional[str]:
    """Check CSR soft targets; return an error message (expected vs got) or None if valid.

    t_indptr i64[B + 1] (0 first, non-decreasing, last = nnz), t_ids i64[nnz] in [0, L),
    t_vals f32[nnz] finite and ≥ 0, each row summing to 1 within ``atol`` (``normalized``; any
    non-negative sum otherwise).
    """
    if t_indptr.dim() != 1 or t_indptr.shape[0] != num_rows + 1:
        return (f"t_indptr: expected shape [B + 1] = [{num_rows + 1}], "
                f"got {list(t_indptr.shape)}")
    if t_ids.dim() != 1 or t_vals.dim() != 1 or t_ids.shape[0] != t_vals.shape[0]:
        return (f"t_ids, t_vals: expected two 1-d arrays of equal length, got shapes "
                f"{list(t_ids.shape)} and {list(t_vals.shape)}")
    nnz = t_ids.shape[0]
    if int(t_indptr[0]) != 0 or int(t_indptr[-1]) != nnz:
        return (f"t_indptr: expected to start at 0 and end at nnz = {nnz}, got "
                f"{int(t_indptr[0])} and {int(t_indptr[-1])}")
    lens = t_indptr[1:] - t_indptr[:-1]
    if bool((lens < 0).any()):
        row = int(torch.nonzero(lens < 0)[0])
        return f"t_indptr: expected non-decreasing offsets, got a decrease at row {row}"
    row_of = torch.repeat_interleave(torch.arange(num_rows, device=lens.device), lens)
    out = (t_ids < 0) | (t_ids >= num_labels)
    if bool(out.any()):
        p = int(torch.nonzero(out)[0])
        return (f"t_ids: expected label ids in [0, {num_labels}), got {int(t_ids[p])} "
                f"(row {int(row_of[p])})")
    nonfinite = ~torch.isfinite(t_vals)
    if bool(nonfinite.any()):
        p = int(torch.nonzero(nonfinite)[0])
        return f"t_vals: expected finite values, got {float(t_vals[p])} (row {int(row_of[p])})"
    neg = t_vals < 0
    if bool(neg.any()):
        p = int(torch.nonzero(neg)[0])
        return (f"t_vals: expected non-negative target mass, got {float(t_vals[p]):g} "
                f"(row {int(row_of[p])})")
    if not normalized:
        return None
    sums = torch.zeros(num_rows, dtype=torch.float64, device=t_vals.device)
    sums.index_add_(0, row_of, t_vals.double())
    off = (sums - 1.0).abs() > atol
    if bool(off.any()):
        row = int(torch.nonzero(off)[0])
        return (f"targets: expected every row to sum to 1 (within {atol:g}), got "
                f"{float(sums[row]):.6g} in row {row} ({int(off.sum())} rows off)")
    return None


def validate_embeddings(emb: torch.Tensor, dim: int) -> Optional[str]:
    """Check ``emb`` is a finite float tensor ``[B, dim]``; return an error message or None."""
    if not isinstance(emb, torch.Tensor) or not emb.is_floating_point():
        return f"emb: expected a float tensor of shape [B, {dim}], got {type(emb).__name__}" + (
            f" of dtype {emb.dtype}" if isinstance(emb, torch.Tensor) else "")
    if emb.dim() != 2 or emb.shape[1] != dim:
        return f"emb: expected shape [B, {dim}], got {list(emb.shape)}"
    bad = ~torch.isfinite(emb.detach())
    if bool(bad.any()):
        i, j = (int(x) for x in torch.nonzero(bad)[0])
        return f"emb: expected finite values, got {float(emb.detach()[i, j])} at row {i}, column {j}"
    return None
