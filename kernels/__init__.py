"""Numba kernels of xmr, installed as ``xmr.kernels``.

Leaf functions over primitive arrays (CSR as data/indices/indptr triplets), compiled with
``@njit(cache=True)`` on first use — importing this package compiles nothing. Each kernel has a
numpy/torch reference in the same module (suffix ``_ref``) and an equivalence test.
"""
