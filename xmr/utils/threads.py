"""Process-global thread counts (torch's, FAISS's OpenMP), changed only inside context managers
that restore them.

``torch.set_num_threads`` changes the whole process; a library function that sets it for its
own work and leaves it set changes every later torch call of its caller (pynndescent's global
thread changes are the cautionary example, see STYLE.md). :func:`torch_threads` and
:func:`omp_threads` scope them.
"""

from __future__ import annotations

import contextlib
from typing import Iterator, Optional

from xmr.utils.validation import check_int

__all__ = ["omp_threads", "torch_threads"]


@contextlib.contextmanager
def torch_threads(n: Optional[int]) -> Iterator[int]:
    """Run the block with ``n`` torch intra-op threads and restore the previous count after it
    (also when the block raises, and also when the block itself changed the count).

    ``n`` is an integer ≥ 0; ``0`` or ``None`` leaves the count as it is (``TrainConfig.threads``'
    convention). Yields the count in effect inside the block.
    """
    import torch

    before = torch.get_num_threads()
    if n is not None:
        n = check_int("threads", n, 0)
    try:
        if n:
            torch.set_num_threads(n)
        yield torch.get_num_threads()
    finally:
        if torch.get_num_threads() != before:
            torch.set_num_threads(before)

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
