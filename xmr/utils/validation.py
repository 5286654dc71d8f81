"""Shared validation at xmr's boundaries: config values, JSON files, sparse matrices, ids, paths.

One message style everywhere — ``KEY: expected X, got Y`` — raised as the project's error
classes (:class:`~xmr.errors.ConfigError`, a ``ValueError``, for configuration values and
function arguments alike; :class:`~xmr.errors.FormatError` for files), so the CLI prints each as
one line. :func:`check_int` and :func:`check_number` are the one copy of "an integer in range,
not a bool" and "a finite number in range": library functions validate their arguments with
them instead of re-writing the test and its message; :func:`check_choice` is "one of a fixed
set of names". Reading a config (unknown keys, types) is :mod:`xmr.utils.config`'s.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any, Optional, Sequence, Union

import numpy as np

from xmr.errors import ConfigError, FormatError

PathLike = Union[str, os.PathLike]

FLOAT32_MAX = float(np.finfo(np.float32).max)
FLOAT16_MAX = float(np.finfo(np.float16).max)

__all__ = [
    "check_int", "check_number", "check_device_name", "check_choice", "read_json", "confined",
    "check_csr", "check_float32", "check_binary", "npy_load",
]


# ------------------------------------------------------------------------------------------------
# configuration values


def _fail(key: str, expected: str, got: Any):
    raise ConfigError(f"{key}: expected {expected}, got {got!r}")


def check_int(key: str, value: Any, lo: Optional[int] = None, hi: Optional[int] = None, *,
              allow_none: bool = False) -> Optional[int]:
    """``value`` as an int in ``[lo, hi]`` (either bound optional) or :class:`ConfigError`
    ``KEY: expected an integer >= lo, got value`` (``in [lo, hi]``, ``<= hi``). A bool is not an
    integer here; numpy integers are. With ``allow_none``, ``None`` is returned as is (the
    message then says ``... or None``)."""
    want = "an integer" + _bounds(lo, hi, False, False) + (" or None" if allow_none else "")
    if value is None and allow_none:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        _fail(key, want, value)
    if (lo is not None and value < lo) or (hi is not None and value > hi):
        _fail(key, want, value)
    return int(value)


def check_number(key: str, value: Any, lo: Optional[float] = None, hi: Optional[float] = None,
                 lo_open: bool = False, hi_open: bool = False) -> float:
    """``value`` as a finite float within the bounds (open or closed) or :class:`ConfigError`
    ``KEY: expected a finite number >= lo, got value`` (``> lo`` when ``lo_open``, ``in [lo,
    hi)``, ...). A bool is not a number here."""
    want = "a finite number" + _bounds(lo, hi, lo_open, hi_open)
    if isinstance(value, bool) or not isinstance(value, (int, float, np.number)):
        _fail(key, want, value)
    v = float(value)
    if not np.isfinite(v):
        _fail(key, want, value)
    if lo is not None and (v < lo or (lo_open and v == lo)):
        _fail(key, want, value)
    if hi is not None and (v > hi or (hi_open and v == hi)):
        _fail(key, want, value)
    return v


def _bounds(lo, hi, lo_open, hi_open) -> str:
    if lo is not None and hi is not None:
        return f" in {'(' if lo_open else '['}{lo}, {hi}{')' if hi_open else ']'}"
    if lo is not None:
        return f" {'>' if lo_open else '>='} {lo}"
    if hi is not None:
        return f" {'<' if hi_open else '<='} {hi}"
    return ""


_DEVICE = re.compile(r"^(auto|cpu|mps|cuda(:\d+)?)$")


def check_device_name(key: str, value: Any) -> str:
    """A torch device name xmr can use: ``auto``, ``cpu``, ``cuda``, ``cuda:N`` or ``mps``."""
    if not isinstance(value, str) or not _DEVICE.match(value):
        _fail(key, "'auto', 'cpu', 'cuda', 'cuda:N' or 'mps'", value)
    return value


def check_choice(key: str, value: Any, choices: Sequence[Any]) -> Any:
    """``value`` if it is one of ``choices``, else :class:`ConfigError`
    ``KEY: expected one of a, b, c, got 'x'``."""
    # a bool matches only itself (True == 1 would otherwise let it pass for 1)
    ok = any(c is value for c in choices) if isinstance(value, bool) else value in choices
    if not ok:
        _fail(key, "one of " + ", ".join(str(c) for c in choices), value)
    return value


# ------------------------------------------------------------------------------------------------
# files


def read_json(path: PathLike, what: str = "a JSON object") -> Any:
    """Parse a JSON file; a syntax error, bad encoding or non-object becomes a
    :class:`FormatError` naming the file and line."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise FormatError(path, None, f"{what} (UTF-8 JSON)", f"undecodable bytes ({exc.reason})"
                          ) from None
    try:
        obj = json.loads(text)
    except json.JSONDecodeError as exc:
        raise FormatError(path, exc.lineno, f"{what} (valid JSON)", exc.msg) from None
    if "object" in what and not isinstance(obj, dict):
        raise FormatError(path, None, what, f"a JSON {type(obj).__name__}")
    return obj


def confined(folder: PathLike, name: Any, listed_in: PathLike) -> Path:
    """``folder / name`` for a file name read from an artefact's metadata (``listed_in``),
    refused unless it stays inside ``folder`` once every link is resolved."""
    folder = Path(folder)
    if not isinstance(name, str) or not name or os.path.isabs(name) or "\x00" in name:
        raise FormatError(listed_in, None, f"a file name inside {folder}", repr(name))
    target = folder / name
    root = os.path.realpath(folder)
    real = os.path.realpath(target)
    if os.path.commonpath([root, real]) != root:
        raise FormatError(listed_in, None, f"a file name inside {folder}",
                          f"{name!r}, which leaves the folder")
    return target


def npy_load(path: PathLike, mmap: bool = True) -> np.ndarray:
    """``np.load`` of a ``.npy`` array without pickle; damaged or truncated files become a
    :class:`FormatError` naming the file."""
    path = Path(path)
    try:
        return np.load(path, mmap_mode="r" if mmap else None, allow_pickle=False)
    except (ValueError, EOFError) as exc:
        msg = str(exc)
        if "mmap length" in msg or "cannot reshape" in msg or isinstance(exc, EOFError):
            msg = "a truncated file"
        raise FormatError(path, None, "a complete .npy array", msg) from None


# ------------------------------------------------------------------------------------------------
# sparse matrices


def check_csr(M, path: PathLike, *, finite: bool = True) -> None:
    """Structural checks of a CSR matrix read from ``path``: ``indptr`` of ``rows + 1``
    non-decreasing entries from 0 to ``nnz``, indices in ``[0, cols)``, finite values."""
    n, d = M.shape
    ip, ind = np.asarray(M.indptr), np.asarray(M.indices)
    if ip.shape != (n + 1,):
        raise FormatError(path, None, f"indptr of {n + 1} entries for {n} rows",
                          f"{ip.shape[0]} entries")
    if n + 1 and (ip[0] != 0 or ip[-1] != ind.shape[0]):
        raise FormatError(path, None, f"indptr from 0 to nnz={ind.shape[0]}",
                          f"indptr from {int(ip[0])} to {int(ip[-1])}")
    bad = np.flatnonzero(np.diff(ip) < 0)
    if bad.size:
        r = int(bad[0])
        raise FormatError(path, None, "a non-decreasing indptr",
                          f"indptr[{r + 1}]={int(ip[r + 1])} < indptr[{r}]={int(ip[r])}")
    if ind.size and (int(ind.min()) < 0 or int(ind.max()) >= d):
        raise FormatError(path, None, f"column ids in [0, {d})",
                          f"ids in [{int(ind.min())}, {int(ind.max())}]")
    if finite and M.dtype.kind == "f" and not np.isfinite(M.data).all():
        raise FormatError(path, None, "finite values", "NaN or inf")


def check_float32(values: np.ndarray, where: PathLike, line: Optional[int] = None) -> None:
    """Refuse values that are finite in float64 but overflow float32 (they would become inf)."""
    v = np.asarray(values)
    if v.dtype.itemsize > 4 and v.size:
        with np.errstate(over="ignore"):
            big = np.isinf(v.astype(np.float32)) & np.isfinite(v)
        if big.any():
            raise FormatError(where, line, f"values within float32 range (|v| <= {FLOAT32_MAX:.8g})",
                              repr(float(v[np.argmax(big)])))


def check_binary(Y, path: PathLike) -> None:
    """A label matrix stores only 1s: an explicit 0 (not a label) or any other value is refused."""
    data = np.asarray(Y.data)
    bad = data != 1
    if bad.any():
        k = int(np.argmax(bad))
        row = int(np.searchsorted(np.asarray(Y.indptr), k, side="right") - 1)
        raise FormatError(path, None, "a binary label matrix (every stored value 1)",
                          f"{data[k]!r} stored at row {row}, label {int(Y.indices[k])}")
