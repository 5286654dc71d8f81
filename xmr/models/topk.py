"""Exact top-k prediction over a sharded label table (DESIGN.md §4.3), in torch.

For each chunk of queries, every label chunk (inside every shard, on every rank) yields a sorted
top-k list per query (:func:`_sorted_topk`, on the table's device); the lists are merged into
the global top-k by :class:`xmr.index.exact.RunningTopK` — the merge the numpy reference
:func:`xmr.index.exact_search` uses too. Memory stays at O(query_chunk × label_chunk) however
many labels and queries there are.

Results follow xmr's one top-k contract (:mod:`xmr.index.exact`): ``scores f32[n, k]`` sorted
descending, equal scores by lower label id, ``ids i64[n, k]`` global label ids, padded with
id -1 and score ``PAD_SCORE`` (-FLT_MAX) when k exceeds the number of labels. Of several labels
tied exactly at the k-th place, the lower ids are kept: the result is the first k of a stable
sort by descending score.
"""

from __future__ import annotations

from typing import Tuple

import numpy as np
import torch

from xmr.index.exact import PAD_ID, PAD_SCORE, RunningTopK, merge_topk
from xmr.models.exact_softmax import chunk_bounds
from xmr.utils.validation import check_int


def _sorted_topk(z: torch.Tensor, k: int, id0: int) -> Tuple[torch.Tensor, torch.Tensor]:
    """Top-``k`` of each row of ``z`` [n, c] sorted by (score desc, id asc); ids offset by id0."""
    vals, idx = torch.topk(z, k, dim=1, sorted=True)
    # torch.topk leaves ties unspecified, both their order and which of the labels tied at the
    # k-th place it keeps. Rows where more labels tie at the k-th value than were kept are
    # redone with a stable full sort (rare with real scores); the others are sorted by id, then
    # stably by score.
    kth = vals[:, -1:]
    ambiguous = (z == kth).sum(dim=1) > (vals == kth).sum(dim=1)
    if bool(ambiguous.any()):
        rows = torch.nonzero(ambiguous).flatten()
        sv, si = z[rows].sort(dim=1, descending=True, stable=True)
        vals[rows], idx[rows] = sv[:, :k], si[:, :k]
    idx, perm = idx.sort(dim=1)
    vals = vals.gather(1, perm)
    vals, perm = vals.sort(dim=1, descending=True, stable=True)
    return vals, idx.gather(1, perm) + id0


def exact_topk(table, emb, k: int, query_chunk: int = 4096, label_chunk: int = 8192
               ) -> Tuple[np.ndarray, np.ndarray]:
    """Exact top-``k`` of ``emb`` [n, d] over all labels of ``table`` (a ShardedLabelTable).

    See :meth:`xmr.models.ShardedLabelTable.topk`. Collective in a distributed run: the queries
    are all-gathered, each rank scores them on its own labels, the per-rank lists are
    all-gathered and merged, and each rank keeps the rows of its own queries.
    """
    for name, v in (("k", k), ("query_chunk", query_chunk), ("label_chunk", label_chunk)):
        check_int(name, v, 1)
    W, bias, comm = table.weight, table.bias, table.comm
    if isinstance(emb, np.ndarray):
        emb = torch.from_numpy(emb)
    msg = None
    if not isinstance(emb, torch.Tensor) or emb.dim() != 2 or emb.shape[1] != table.dim:
        got = list(emb.shape) if isinstance(emb, torch.Tensor) else type(emb).__name__
        msg = f"emb: expected shape [n, {table.dim}], got {got}"
    comm.agree_on_error(msg, "topk")
    emb = emb.detach().to(device=W.device, dtype=W.dtype)
    n = emb.shape[0]
    if comm.distributed:
        sizes = comm.sizes(n, emb.device)
        Q, _ = comm.all_gather_varlen(emb, sizes)
        row0 = sum(sizes[: comm.rank])
    else:
        Q, row0 = emb, 0
    N = Q.shape[0]
    chunks = chunk_bounds(table.shard_bounds, int(label_chunk))
    out_s = np.full((N, k), PAD_SCORE, dtype=np.float32)
    out_i = np.full((N, k), PAD_ID, dtype=np.int64)
    for q0 in range(0, N, query_chunk):
        Qc = Q[q0:q0 + query_chunk]
        nq = Qc.shape[0]
        top = RunningTopK(nq, k)
        for c0, c1 in chunks:
            z = (Qc @ W[c0:c1].T).float()
            if bias is not None:
                z += bias[c0:c1].float()
            v, i = _sorted_topk(z, min(k, c1 - c0), table.lo + c0)
            top.add(v.cpu().numpy(), i.cpu().numpy())
        out_s[q0:q0 + nq], out_i[q0:q0 + nq] = top.result()
    if comm.distributed:
        # every rank's lists for all N queries → merge the world lists
        dev = emb.device
        ts = torch.from_numpy(out_s).to(dev)
        ti = torch.from_numpy(out_i).to(dev)
        gs = [torch.empty_like(ts) for _ in range(comm.world)]
        gi = [torch.empty_like(ti) for _ in range(comm.world)]
        torch.distributed.all_gather(gs, ts, group=comm.group)
        torch.distributed.all_gather(gi, ti, group=comm.group)
        sl = slice(row0, row0 + n)
        s_all = np.stack([g[sl].cpu().numpy() for g in gs])
        i_all = np.stack([g[sl].cpu().numpy() for g in gi])
        return merge_topk(s_all, i_all, k)
    return out_s, out_i
