"""xmr.models: encoders and the sharded softmax label table (DESIGN.md §4).

Public API:

* :class:`ShardedLabelTable` — W ∈ R^{L×d} split over shards (and ranks): exact full softmax with
  soft targets, candidate logits with sparse row gradients, exact top-k.
* :class:`SparseEncoder`, :class:`DenseEncoder`, :func:`csr_to_bag` — φ(x).
* :class:`RowAdagrad` — row-wise Adagrad for the table (sparse or dense gradients).
* :func:`exact_softmax_reference` — the dense reference of the full softmax loss.

Importing this package imports torch but compiles no Numba kernel and imports no faiss.
"""

from xmr.models.encoders import DenseEncoder, SparseEncoder, csr_to_bag
from xmr.models.exact_softmax import ExactSoftmaxFunction, exact_softmax_reference
from xmr.models.label_table import ShardedLabelTable
from xmr.models.optim import RowAdagrad

__all__ = [
    "DenseEncoder",
    "ExactSoftmaxFunction",
    "RowAdagrad",
    "ShardedLabelTable",
    "SparseEncoder",
    "csr_to_bag",
    "exact_softmax_reference",
]
