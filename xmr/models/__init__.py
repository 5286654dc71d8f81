"""xmr.models: the deployable model, its encoders and the sharded softmax label table (DESIGN.md §4).

Public API:

* :class:`XMRModel` — φ(x) + label table, saved and loaded as a self-describing folder
  (:mod:`xmr.models.xmr_model`); :class:`ModelConfig` — its architecture settings.
* :class:`ShardedLabelTable` — W ∈ R^{L×d} split over shards (and ranks): exact full softmax with
  soft targets, candidate logits with sparse row gradients, exact top-k.
* :class:`SparseEncoder`, :class:`DenseEncoder`, :func:`csr_to_bag` — φ(x).
* :class:`RowAdagrad` — row-wise Adagrad for the table (sparse or dense gradients).
* :func:`exact_softmax_reference` — the dense reference of the full softmax loss.

The names are imported on first use (PEP 562), so ``import xmr.models.config`` (which
:mod:`xmr.train.config` does) imports no torch; any of the torch-backed names imports torch but
compiles no Numba kernel and imports no faiss.
"""

import importlib as _importlib

_LAZY = {
    "DenseEncoder": "xmr.models.encoders",
    "SparseEncoder": "xmr.models.encoders",
    "csr_to_bag": "xmr.models.encoders",
    "ExactSoftmaxFunction": "xmr.models.exact_softmax",
    "exact_softmax_reference": "xmr.models.exact_softmax",
    "ShardedLabelTable": "xmr.models.label_table",
    "RowAdagrad": "xmr.models.optim",
    "ModelConfig": "xmr.models.config",
    "XMRModel": "xmr.models.xmr_model",
}

__all__ = sorted(_LAZY)


def __getattr__(name):
    if name not in _LAZY:
        raise AttributeError(f"module 'xmr.models' has no attribute {name!r}")
    value = getattr(_importlib.import_module(_LAZY[name]), name)
    globals()[name] = value
    return value


def __dir__():
    return sorted(set(globals()) | set(_LAZY))
