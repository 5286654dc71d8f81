"""Thread counts of native libraries, changed for a block of code and restored afterwards."""

from __future__ import annotations

import contextlib
from typing import Iterator, Optional


@contextlib.contextmanager
def omp_threads(n: Optional[int]) -> Iterator[None]:
    """Set FAISS's (process-global) OpenMP thread count inside the block and restore it
    afterwards; ``None`` is a no-op. FAISS is imported only when ``n`` is given."""
    if n is None:
        yield
        return
    from xmr.utils.optional import faiss

    fa = faiss()
    before = fa.omp_get_max_threads()
    fa.omp_set_num_threads(int(n))
    try:
        yield
    finally:
        fa.omp_set_num_threads(before)
