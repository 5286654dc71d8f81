"""xmr: extreme multiclass retrieval.

A sharded softmax over millions of labels, trained under one objective that unifies
distillation and negative mining (Menon et al., *Why distillation helps: a statistical
perspective*, 2020).

Importing :mod:`xmr` is cheap on purpose: it imports no torch, no faiss, and compiles no Numba
kernel. The public API (:mod:`xmr.api`: ``load_dataset``, ``train``, ``export_teacher``,
``evaluate``, ``load_model``, ``load_predictor``, ``build_index``, ``embed``, and
``TrainConfig``) is reached as top-level attributes, imported on first use; subpackages are
imported on demand (``import xmr.data``, ``from xmr.eval import ...``).
"""

__version__ = "0.1.0"

_LAZY = {
    "load_dataset": "xmr.api",
    "train": None,  # the subpackage xmr.train, callable as xmr.api.train (see xmr/train/__init__.py)
    "export_teacher": "xmr.api",
    "evaluate": "xmr.api",
    "load_model": "xmr.api",
    "load_predictor": "xmr.api",
    "build_index": "xmr.api",
    "embed": "xmr.api",
    "make_config": "xmr.api",
    "TrainConfig": "xmr.train.config",
    "XMCDataset": "xmr.data.dataset",
}

__all__ = ["__version__", *_LAZY]


def __getattr__(name):
    if name not in _LAZY:
        raise AttributeError(f"module 'xmr' has no attribute {name!r}")
    import importlib

    if name == "train":
        return importlib.import_module("xmr.train")
    mod = _LAZY[name]
    value = getattr(importlib.import_module(mod), name)
    globals()[name] = value
    return value


def __dir__():
    return sorted(set(globals()) | set(_LAZY))
