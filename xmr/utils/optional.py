"""Lazy imports of optional dependencies, with an error that names the install command."""

from __future__ import annotations

import importlib

from xmr.errors import MissingDependencyError

_HINTS = {
    "faiss": (
        "faiss is not installed. Install the CPU build with `pip install 'xmr[cpu]'` "
        "(faiss-cpu) or the GPU build with `pip install 'xmr[gpu]'` (faiss-gpu); "
        "the two builds provide the same module and must not be installed together."
    ),
    "matplotlib": "matplotlib is not installed: `pip install 'xmr[plot]'`.",
    "napkinxc": "napkinxc is not installed: `pip install napkinxc`.",
    "omikuji": "omikuji is not installed: `pip install omikuji`.",
}


def require(module: str):
    """Import ``module`` or raise :class:`MissingDependencyError` with the install command."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        hint = _HINTS.get(module, f"{module} is not installed: `pip install {module}`.")
        raise MissingDependencyError(hint) from exc


def faiss():
    """The ``faiss`` module (CPU or GPU build), imported on first use."""
    return require("faiss")
