"""Process-global thread counts, changed only inside a context manager that restores them.

``torch.set_num_threads`` changes the whole process; a library function that sets it for its
own work and leaves it set changes every later torch call of its caller (pynndescent's global
thread changes are the cautionary example, see STYLE.md). :func:`torch_threads` scopes it.
"""

from __future__ import annotations

import contextlib
from typing import Iterator, Optional

from xmr.utils.validation import check_int

__all__ = ["torch_threads"]


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
