"""argparse value types that refuse bad values with argparse's own one-line usage error."""

from __future__ import annotations

import argparse


def positive_int(text: str) -> int:
    """An integer >= 1 (``-k``, sizes)."""
    try:
        v = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer >= 1, got {text!r}") from None
    if v < 1:
        raise argparse.ArgumentTypeError(f"expected an integer >= 1, got {text!r}")
    return v


def positive_int_list(text: str) -> tuple:
    """A comma-separated list of integers >= 1 (``--ks 1,3,5``)."""
    parts = [p.strip() for p in text.split(",")]
    out = []
    for p in parts:
        try:
            v = int(p)
        except ValueError:
            v = 0
        if v < 1:
            raise argparse.ArgumentTypeError(
                f"expected comma-separated integers >= 1 such as 1,3,5, got {text!r} "
                f"({p!r} is not one)")
        out.append(v)
    return tuple(out)
