"""xmr.index: top-k labels of query embeddings, exact and approximate.

* :mod:`xmr.index.exact` — the one top-k result contract (``scores f32[n, k]``, ``ids i64[n, k]``,
  decreasing score, equal scores by lower label id, padding id -1 / score ``PAD_SCORE`` =
  -FLT_MAX), the merge of sorted per-chunk lists shared with the torch path
  (:mod:`xmr.models.topk`), and :func:`exact_search`, the numpy reference;
* :mod:`xmr.index.label_index` — :class:`LabelIndex`, a FAISS index over a label table (shards,
  GPU, save/load), used by ``xmr index``, :meth:`XMRModel.predict` with ``index=`` and the
  hard-negative miner;
* :mod:`xmr.index.mips` — the MIPS→L2 reduction (``LabelIndex(..., mips=True)``).

Importing this package imports numpy only: FAISS on first use of an index, the Numba merge
kernel on first use of the exact search.
"""

from xmr.index.exact import PAD_ID, PAD_SCORE, RunningTopK, exact_search, merge_topk, sort_rows
from xmr.index.label_index import LabelIndex

__all__ = ["PAD_ID", "PAD_SCORE", "RunningTopK", "exact_search", "merge_topk", "sort_rows",
           "LabelIndex"]
