"""The sharded softmax label table W ∈ R^{L×d} (optionally a bias b ∈ R^L), DESIGN.md §4.

One :class:`ShardedLabelTable` per process holds this rank's contiguous label range
``[lo, hi)`` as one Parameter ``weight`` [hi − lo, d] (and ``bias`` [hi − lo]), split into
``num_shards`` contiguous shards that are processed one after another (views into the one
Parameter). Scores are s_j(x) = ⟨φ(x), w_j⟩ + b_j. It offers

1. :meth:`full_softmax_loss` — the exact soft-target softmax over all L labels, never
   materialising B × L (:mod:`xmr.models.exact_softmax`);
2. :meth:`candidate_logits` — logits for a shared candidate set, one dense matmul, with sparse
   row gradients so that a step's cost does not grow with L (use :class:`~xmr.models.optim.RowAdagrad`,
   ``torch.optim.SparseAdam`` or ``torch.optim.SGD`` for the table);
3. :meth:`topk` — exact top-k, per shard, merged by a Numba kernel (:mod:`xmr.models.topk`).

Model parallelism: pass ``process_group`` (e.g. ``torch.distributed.group.WORLD``) and every
rank owns ``[lo, hi)`` of the labels; all methods are then collective (every rank must call them
in the same order) and give each rank the results for its own rows. ``process_group=None`` means
a single process holding all labels, even if torch.distributed is initialised. Gradients follow
DDP's convention (see :mod:`xmr.distributed`). The table's collectives and DDP's may
share a group (both are issued in the same order on every rank); a group of its own
(``torch.distributed.new_group()``) keeps them apart.

Precision: ``dtype=torch.bfloat16`` stores W (and b) in bf16 and computes the logits' matmuls in
bf16, while log-sum-exp, softmax and the embedding gradient accumulate in fp32 (meant for GPUs).
Logits, losses and top-k scores are float32; W's gradient is bf16. :class:`~xmr.models.RowAdagrad`
updates fp32 master rows of a bf16 table by default (small updates are not rounded away).
"""

from __future__ import annotations

from typing import List, Optional, Tuple

import numpy as np
import torch
from torch import nn

from xmr.distributed import Comm, all_reduce_sum, gather_rows, label_range
from xmr.models.exact_softmax import (ExactOvAFunction, ExactSoftmaxFunction, chunk_bounds,
                                      validate_embeddings, validate_targets)
from xmr.utils.validation import check_int

_REDUCTIONS = ("mean", "sum", "none")


def _reduce(loss: torch.Tensor, reduction: str) -> torch.Tensor:
    if reduction == "mean":
        return loss.mean()
    if reduction == "sum":
        return loss.sum()
    return loss


_CHUNK_ELEMENTS = 1 << 24  # logits per chunk of the automatic chunk size (64 MiB in fp32)


def default_chunk_size(num_rows: int) -> int:
    """Labels per chunk so that a chunk holds about 2^24 logits, within [4096, 65536]."""
    return int(min(65536, max(4096, _CHUNK_ELEMENTS // max(num_rows, 1))))


class _RowGather(torch.autograd.Function):
    """``param[ids]`` with a sparse COO gradient (rows ``ids`` only), scaled by ``scale``.

    Like ``F.embedding(..., sparse=True)`` but also for 1-d parameters (the bias).
    """

    @staticmethod
    def forward(ctx, ids, param, scale: float):
        ctx.save_for_backward(ids)
        ctx.shape, ctx.scale = param.shape, scale
        return param.index_select(0, ids)

    @staticmethod
    def backward(ctx, grad):
        (ids,) = ctx.saved_tensors
        if ctx.scale != 1.0:
            grad = grad * ctx.scale
        g = torch.sparse_coo_tensor(ids[None], grad.contiguous(), ctx.shape,
                                    check_invariants=False)
        return None, g, None


def _as_tensor(x, dtype, device, name: str) -> torch.Tensor:
    if isinstance(x, np.ndarray):
        x = torch.from_numpy(x)
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name}: expected a torch tensor or numpy array, got {type(x).__name__}")
    if dtype is torch.int64 and x.is_floating_point():
        raise TypeError(f"{name}: expected an integer array, got dtype {x.dtype}")
    return x.to(device=device, dtype=dtype)


class ShardedLabelTable(nn.Module):
    """Label embeddings of this rank's label range, split into shards (see module docstring).

    Args:
        num_labels: L, the total number of labels (all ranks together).
        dim: d, the embedding dimension.
        num_shards: contiguous shards of this rank's range, processed one after another.
        bias: whether to learn a per-label bias.
        process_group: ``None`` (one process) or the group across which labels are split.
        dtype: storage and matmul dtype of W (``torch.float32`` or ``torch.bfloat16``).
        init_std: W ~ N(0, init_std²); default d^-1/2. The bias starts at 0.
        device: where W lives.
    """

    def __init__(self, num_labels: int, dim: int, num_shards: int = 1, bias: bool = False,
                 process_group=None, dtype: torch.dtype = torch.float32,
                 init_std: Optional[float] = None, device=None):
        super().__init__()
        for name, v in (("num_labels", num_labels), ("dim", dim), ("num_shards", num_shards)):
            check_int(name, v, 1)
        if dtype not in (torch.float32, torch.bfloat16):
            raise ValueError(f"dtype: expected torch.float32 or torch.bfloat16, got {dtype}")
        self.comm = Comm(process_group)
        self.num_labels, self.dim = int(num_labels), int(dim)
        self.lo, self.hi = label_range(self.num_labels, self.comm.rank, self.comm.world)
        n = self.hi - self.lo
        self.num_shards = int(num_shards)
        # local shard bounds; empty shards (more shards than labels) are dropped
        self.shard_bounds: List[Tuple[int, int]] = [
            b for b in ((n * s // num_shards, n * (s + 1) // num_shards) for s in range(num_shards))
            if b[1] > b[0]]
        std = dim ** -0.5 if init_std is None else float(init_std)
        self.weight = nn.Parameter(torch.empty(n, dim, dtype=dtype, device=device).normal_(0, std))
        if bias:
            self.bias = nn.Parameter(torch.zeros(n, dtype=dtype, device=device))
        else:
            self.register_parameter("bias", None)

    # ------------------------------------------------------------------ helpers
    @property
    def num_local(self) -> int:
        """Number of labels held by this rank (``hi − lo``)."""
        return self.hi - self.lo

    def shard(self, s: int) -> torch.Tensor:
        """The rows of shard ``s`` (a view of ``weight``), labels ``lo + a … lo + b − 1``."""
        a, b = self.shard_bounds[s]
        return self.weight[a:b]

    def weight_numpy(self) -> np.ndarray:
        """A float32 copy ``[hi − lo, d]`` of this rank's rows (e.g. to build an ANN index)."""
        return self.weight.detach().float().cpu().numpy().copy()

    def extra_repr(self) -> str:
        return (f"num_labels={self.num_labels}, dim={self.dim}, range=[{self.lo}, {self.hi}), "
                f"num_shards={self.num_shards}, bias={self.bias is not None}, "
                f"dtype={self.weight.dtype}, world={self.comm.world}")

    # ------------------------------------------------------------ full softmax
    def default_cache_bytes(self) -> int:
        """Default exp-cache budget of :meth:`full_softmax_loss`: min(1 GiB, the bytes of this
        rank's weights and bias, a quarter of the free memory of the table's CUDA device). The
        cache then never costs more than the table itself."""
        budget = min(1 << 30, self.weight.numel() * self.weight.element_size()
                     + (self.bias.numel() * self.bias.element_size() if self.bias is not None
                        else 0))
        if self.weight.device.type == "cuda":
            free, _ = torch.cuda.mem_get_info(self.weight.device)
            budget = min(budget, free // 4)
        return int(budget)

    def full_softmax_loss(self, emb: torch.Tensor, t_indptr, t_ids, t_vals,
                          chunk_size: Optional[int] = None, reduction: str = "mean",
                          cache_bytes: Optional[int] = None, normalized: bool = True,
                          positives=None, soft_on_neg: bool = False) -> torch.Tensor:
        """Exact soft-target softmax cross-entropy over all L labels.

        loss_i = logsumexp_j s_ij − Σ_j t_ij s_ij (DESIGN.md §4.1), computed chunk by chunk (at
        most ``chunk_size`` labels at a time) with peak extra memory O(B·world × chunk_size).
        The default chunk holds about 2^24 logits (64 MiB in fp32): 65,536 labels for 256 rows,
        clamped to [4,096, 65,536] labels (measured on CPU: smaller chunks run slower, larger
        ones gain nothing, see ``benchmarks/micro/bench_softmax.py``).

        Args:
            emb: f32[B, d] this rank's row embeddings (differentiable).
            t_indptr, t_ids, t_vals: CSR targets of this rank's rows — i64[B + 1], global label
                ids i64[nnz] in [0, L), f32[nnz] ≥ 0 with each row summing to 1 (within 1e-4).
            chunk_size: labels per chunk (a chunk never straddles a shard); None: automatic.
            reduction: "mean" (over this rank's rows), "sum", or "none" (f32[B]).
            cache_bytes: memory that forward may spend keeping exponentiated logits of its first
                chunks for backward, which then does not recompute them (three matmul passes
                over W instead of four for the chunks kept). None (default):
                :meth:`default_cache_bytes` — at most the bytes of this rank's label table, at
                most 1 GiB, at most a quarter of the free GPU memory; with B ≤ d (e.g. B = 256,
                d = 256, L = 1M) that keeps every chunk, i.e. the whole B×L exp matrix. Measured
                there on CPU (``benchmarks/results/bench_softmax.json``): 1.21× the plain
                PyTorch step's speed with the cache, 0.81× with ``cache_bytes=0``, which gives
                the minimum extra memory, O(B·world × chunk_size).

            normalized: require each target row to sum to 1 (False: any non-negative mass, as
                the unnormalised pick-all-labels reduction needs; the row's loss is then
                ``LSE · Σ_j t_ij − Σ_j t_ij s_ij``).
            positives: optional CSR ``(p_indptr i64[B + 1], p_ids i64[nnz_P], p_w f32[nnz_P])``
                adding the decoupled terms ``p_w · softplus(log Σ_{j∉P} e^{s_j} − s_p)`` of
                :class:`~xmr.models.exact_softmax.ExactSoftmaxFunction` (the decoupled
                reduction); ``None``: none.
            soft_on_neg: with ``positives``, the soft targets compete with the negatives only
                (the decoupled teacher term; the targets must lie off the positives).

        Raises ``ValueError`` on bad input before anything is computed (on every rank in a
        distributed run), ``FloatingPointError`` if the loss is not finite.
        """
        if reduction not in _REDUCTIONS:
            raise ValueError(f"reduction: expected one of {list(_REDUCTIONS)}, got {reduction!r}")
        if cache_bytes is None:
            cache_bytes = self.default_cache_bytes()
        check_int("cache_bytes", cache_bytes, 0)
        check_int("chunk_size", chunk_size, 1, allow_none=True)
        device = self.weight.device
        msg, t_indptr, t_ids, t_vals = self._checked_targets(emb, t_indptr, t_ids, t_vals,
                                                             normalized)
        if msg is None and positives is not None:
            try:
                p_indptr, p_ids, p_w = positives
                p_indptr = _as_tensor(p_indptr, torch.int64, device, "p_indptr")
                p_ids = _as_tensor(p_ids, torch.int64, device, "p_ids")
                p_w = _as_tensor(p_w, torch.float32, device, "p_w")
                msg = validate_targets(p_indptr, p_ids, p_w, emb.shape[0], self.num_labels,
                                       normalized=False)
            except (TypeError, ValueError) as e:
                msg = e
        self.comm.agree_on_error(msg, "full_softmax_loss")

        B = emb.shape[0]
        comm = self.comm
        row0, E, t_rows, t_cols, t_vals = self._gather_targets(emb, t_indptr, t_ids, t_vals)
        dec = (None, None, None)
        if positives is not None:
            p_rows = torch.repeat_interleave(torch.arange(B, device=device) + row0,
                                             p_indptr[1:] - p_indptr[:-1])
            if comm.distributed:
                p_rows, _ = comm.all_gather_varlen(p_rows)
                p_ids, _ = comm.all_gather_varlen(p_ids)
                p_w, _ = comm.all_gather_varlen(p_w)
            pm = (p_ids >= self.lo) & (p_ids < self.hi)
            p_cols = p_ids[pm] - self.lo
            po = torch.argsort(p_cols, stable=True)
            dec = (p_rows[pm][po], p_cols[po], p_w[pm][po])
        if chunk_size is None:
            chunk_size = default_chunk_size(E.shape[0])
        loss = ExactSoftmaxFunction.apply(
            E, self.weight, self.bias, t_rows, t_cols, t_vals,
            chunk_bounds(self.shard_bounds, int(chunk_size)), comm, row0, row0 + B,
            int(cache_bytes), *dec, bool(soft_on_neg))
        return _reduce(loss, reduction)

    def _checked_targets(self, emb, t_indptr, t_ids, t_vals, normalized: bool):
        """``(message or None, t_indptr, t_ids, t_vals)``: the embeddings and CSR targets
        checked (:func:`validate_embeddings`, :func:`validate_targets`) and as tensors on the
        table's device; nothing is raised here, so every rank can agree on the error."""
        device = self.weight.device
        msg = validate_embeddings(emb, self.dim)
        if msg is None:
            try:
                t_indptr = _as_tensor(t_indptr, torch.int64, device, "t_indptr")
                t_ids = _as_tensor(t_ids, torch.int64, device, "t_ids")
                t_vals = _as_tensor(t_vals, torch.float32, device, "t_vals")
            except TypeError as e:
                msg = e
        if msg is None:
            msg = validate_targets(t_indptr, t_ids, t_vals, emb.shape[0], self.num_labels,
                                   normalized=normalized)
        return msg, t_indptr, t_ids, t_vals

    def _gather_targets(self, emb, t_indptr, t_ids, t_vals):
        """All ranks' rows and this rank's share of the CSR targets, as coordinate lists sorted
        by local column: ``(row0, E [N, d], t_rows, t_cols, t_vals)``."""
        B = emb.shape[0]
        device = emb.device
        t_rows = torch.repeat_interleave(torch.arange(B, device=device),
                                         t_indptr[1:] - t_indptr[:-1])  # row of each target
        comm = self.comm
        if comm.distributed:
            sizes = comm.sizes(B, device)
            row0 = sum(sizes[: comm.rank])
            E = gather_rows(emb, comm, sizes)  # [N, d]
            t_rows, _ = comm.all_gather_varlen(t_rows + row0)
            t_ids, _ = comm.all_gather_varlen(t_ids)
            t_vals, _ = comm.all_gather_varlen(t_vals)
        else:
            row0, E = 0, emb
        mine = (t_ids >= self.lo) & (t_ids < self.hi)
        t_cols = t_ids[mine] - self.lo
        order = torch.argsort(t_cols, stable=True)
        return row0, E, t_rows[mine][order], t_cols[order], t_vals[mine][order]

    def full_ova_loss(self, emb: torch.Tensor, t_indptr, t_ids, t_vals,
                      chunk_size: Optional[int] = None, reduction: str = "mean") -> torch.Tensor:
        """Exact one-versus-all loss over all L labels: loss_i = Σ_j softplus(s_ij) − t_ij s_ij
        (:class:`~xmr.models.exact_softmax.ExactOvAFunction`), chunk by chunk as
        :meth:`full_softmax_loss`.

        ``t_indptr, t_ids, t_vals``: CSR per-label targets in [0, 1] of this rank's rows (1 on
        the positives, or a mix with a teacher's per-label probabilities); every other label's
        target is 0. Raises ``ValueError`` on bad input (on every rank), ``FloatingPointError``
        if the loss is not finite.
        """
        if reduction not in _REDUCTIONS:
            raise ValueError(f"reduction: expected one of {list(_REDUCTIONS)}, got {reduction!r}")
        msg, t_indptr, t_ids, t_vals = self._checked_targets(emb, t_indptr, t_ids, t_vals, False)
        if msg is None and t_vals.numel() and float(t_vals.max()) > 1.0 + 1e-6:
            p = int(torch.argmax(t_vals))
            msg = f"t_vals: expected per-label targets in [0, 1], got {float(t_vals[p]):g}"
        self.comm.agree_on_error(msg, "full_ova_loss")
        B = emb.shape[0]
        row0, E, t_rows, t_cols, t_vals = self._gather_targets(emb, t_indptr, t_ids, t_vals)
        if chunk_size is None:
            chunk_size = default_chunk_size(E.shape[0])
        loss = ExactOvAFunction.apply(E, self.weight, self.bias, t_rows, t_cols, t_vals,
                                      chunk_bounds(self.shard_bounds, int(chunk_size)),
                                      self.comm, row0, row0 + B)
        return _reduce(loss, reduction)

    # ------------------------------------------------------------ candidates
    def candidate_logits(self, emb: torch.Tensor, cand_ids,
                         logit_bias: Optional[torch.Tensor] = None) -> torch.Tensor:
        """Logits ``f32[B, C]`` of this rank's rows for a shared candidate set.

        logits = φ W[cand]ᵀ (+ b[cand]) (+ logit_bias): one gather and one dense matmul; W and b
        receive *sparse* gradients holding only the rows in ``cand_ids``, so that with a sparse
        optimizer the cost of a step does not grow with L (DESIGN.md §4.2).

        Args:
            emb: f32[B, d] (differentiable).
            cand_ids: i64[C] global label ids in [0, L) (duplicates allowed; in a distributed
                run each rank passes its own set, labels of other ranks are scored there).
            logit_bias: optional f32[B, C] added to the logits (offsets and masks, DESIGN.md §5).
        """
        device = self.weight.device
        msg = validate_embeddings(emb, self.dim)
        if msg is None:
            try:
                cand_ids = _as_tensor(cand_ids, torch.int64, device, "cand_ids")
            except TypeError as e:
                msg = e
        if msg is None:
            if cand_ids.dim() != 1:
                msg = f"cand_ids: expected a 1-d array, got shape {list(cand_ids.shape)}"
            elif bool(((cand_ids < 0) | (cand_ids >= self.num_labels)).any()):
                p = int(torch.nonzero((cand_ids < 0) | (cand_ids >= self.num_labels))[0])
                msg = (f"cand_ids: expected label ids in [0, {self.num_labels}), got "
                       f"{int(cand_ids[p])} (position {p})")
            elif logit_bias is not None and (
                    not isinstance(logit_bias, torch.Tensor)
                    or tuple(logit_bias.shape) != (emb.shape[0], cand_ids.shape[0])):
                got = (list(logit_bias.shape) if isinstance(logit_bias, torch.Tensor)
                       else type(logit_bias).__name__)
                msg = (f"logit_bias: expected a tensor of shape [B, C] = "
                       f"[{emb.shape[0]}, {cand_ids.shape[0]}], got {got}")
        self.comm.agree_on_error(msg, "candidate_logits")

        comm = self.comm
        scale = 1.0 / comm.world
        if not comm.distributed:
            logits = self._score_rows(emb, cand_ids, scale)
        else:
            B = emb.shape[0]
            sizes = comm.sizes(B, device)
            E = gather_rows(emb, comm, sizes)  # [N, d]
            cands, csizes = comm.all_gather_varlen(cand_ids)
            # every rank scores all ranks' (rows × candidates) blocks on its own labels, zeros
            # elsewhere; one all-reduce(sum) of the flattened blocks completes them
            blocks, r0, c0 = [], 0, 0
            for bs, cs in zip(sizes, csizes):
                ids = cands[c0:c0 + cs]
                mine = torch.nonzero((ids >= self.lo) & (ids < self.hi)).flatten()
                block = E.new_zeros((bs, cs), dtype=torch.float32)
                if mine.numel() and bs:
                    part = self._score_rows(E[r0:r0 + bs], ids[mine], scale)
                    block = block.index_copy(1, mine, part)
                blocks.append(block.reshape(-1))
                r0, c0 = r0 + bs, c0 + cs
            flat = all_reduce_sum(torch.cat(blocks), comm)
            off = sum(s * c for s, c in zip(sizes[: comm.rank], csizes[: comm.rank]))
            logits = flat[off: off + B * cand_ids.shape[0]].reshape(B, cand_ids.shape[0])
        if logit_bias is not None:
            logits = logits + logit_bias.to(logits.dtype)
        return logits

    def _score_rows(self, E: torch.Tensor, ids: torch.Tensor, scale: float) -> torch.Tensor:
        """fp32 ``E @ W[ids]ᵀ + b[ids]`` for global ``ids`` owned here (sparse gradients)."""
        local = ids - self.lo
        Wc = _RowGather.apply(local, self.weight, scale)  # [C, d]
        z = (E.to(Wc.dtype) @ Wc.T).float()
        if self.bias is not None:
            z = z + _RowGather.apply(local, self.bias, scale).float()
        return z

    # ------------------------------------------------------------------ top-k
    @torch.no_grad()
    def topk(self, emb, k: int, query_chunk: int = 4096, label_chunk: int = 8192
             ) -> Tuple[np.ndarray, np.ndarray]:
        """Exact top-``k`` labels of each row: ``(scores f32[n, k], ids i64[n, k])``.

        xmr's top-k contract (:mod:`xmr.index.exact`): rows sorted by score (descending, ties
        by lower id); ids are global, padded with -1 (score ``PAD_SCORE`` = -FLT_MAX) when
        k > L. Queries are processed ``query_chunk`` at a time and labels ``label_chunk`` at a
        time (peak extra memory ≈ 4 · query_chunk · label_chunk bytes); the per-chunk lists are
        merged by :func:`xmr.index.exact.merge_topk` (Numba kernel). In a
        distributed run every rank returns the results of its own rows over all L labels.
        """
        from xmr.models.topk import exact_topk  # imports the Numba kernel lazily

        return exact_topk(self, emb, k, query_chunk=query_chunk, label_chunk=label_chunk)
