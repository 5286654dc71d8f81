"""xmr: extreme multiclass retrieval.

A sharded softmax over millions of labels, trained under one objective that unifies
distillation and negative mining (Menon et al., *Why distillation helps: a statistical
perspective*, 2020).

Importing :mod:`xmr` is cheap on purpose: it imports no torch, no faiss, and compiles no Numba
kernel. Subpackages are imported on demand (``import xmr.data``, ``from xmr.eval import ...``).
"""

__version__ = "0.1.0"

__all__ = ["__version__"]
