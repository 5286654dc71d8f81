"""Read and write the file formats of extreme multi-label datasets.

Formats (DESIGN.md §3):

* **XC BoW text** (Extreme Classification Repository, Bhatia et al.): a header ``N D L``, then one
  line per point ``l1,l2,... f:v f:v ...``. A line may lack labels (it then starts with a space,
  or with a ``f:v`` token) or features; an empty line is a point with neither.
  → :func:`read_xc_bow`, :func:`write_xc_bow`.
* **Sparse text** (the repository's newer layout, features and labels in separate files): a
  header ``rows cols``, then ``idx:val idx:val ...`` per line; an empty line is an empty row.
  → :func:`read_sparse_text`, :func:`write_sparse_text`.
* **scipy ``.npz``** CSR → :func:`read_npz`, :func:`write_npz`.

Reading conventions: ids are 0-based; rows come back with sorted indices; a feature id repeated
within a line has its values **summed** (as scipy does for duplicate COO entries, so a file
written by a tool that emits one entry per token occurrence keeps its meaning); a repeated label
is kept once (label matrices are binary). Blank lines after the header's N rows are ignored;
any other line beyond N rows, or fewer than N lines, is an error. Lines may end in ``\\r\\n``
and the last line need not end in a newline.

Text files are parsed in byte chunks (64 MiB by default, cut at the last newline) by the Numba
kernel :func:`xmr.kernels.parse.parse_sparse_lines`, compiled on first use. Bad input raises
:class:`xmr.errors.FormatError` naming the file, the 1-based line (the header is line 1), what
was expected and what came::

    train.txt, line 7: expected a label id in [0, 3993), got '4000'

Writers go through :func:`xmr.utils.atomic.atomic_open`: a failure leaves the previous file.
``float32`` values are written with the fewest digits (≤ 9) that read back to the same float32;
``float64`` values with Python's shortest round-trip ``repr``.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Optional, Tuple, Union

import numpy as np
import scipy.sparse as sp

from xmr.errors import FormatError
from xmr.utils.atomic import atomic_open

log = logging.getLogger(__name__)

PathLike = Union[str, os.PathLike]

DEFAULT_CHUNK_BYTES = 64 << 20
_WRITE_ROWS = 1 << 16  # rows formatted per writer slab
_MAX_HEADER_BYTES = 1 << 16
_MAX_DIM = 1 << 62  # header sizes must leave room for int64 ids and offsets
_F32_MAX = float(np.finfo(np.float32).max)

__all__ = [
    "read_xc_bow",
    "write_xc_bow",
    "read_sparse_text",
    "write_sparse_text",
    "read_npz",
    "write_npz",
    "read_matrix",
]


# ------------------------------------------------------------------------------------------------
# Reading text.


def _show(raw: bytes, limit: int = 40) -> str:
    """A token as it appears in an error message: quoted, shortened if long."""
    text = raw.decode("utf-8", errors="replace")
    if len(text) > limit:
        text = text[:limit] + "..."
    return repr(text)


def _read_header(f, path, names: Tuple[str, ...]) -> Tuple[int, ...]:
    """Read and check line 1: ``len(names)`` non-negative integers."""
    raw = f.readline(_MAX_HEADER_BYTES)
    want = f"a header of {len(names)} non-negative integers '{' '.join(names)}'"
    if raw == b"":
        raise FormatError(path, 1, want, "an empty file")
    fields = raw.split()
    if len(fields) != len(names) or not all(x.isdigit() for x in fields):
        raise FormatError(path, 1, want, _show(raw.rstrip(b"\r\n"), 60))
    values = tuple(int(x) for x in fields)
    for name, v in zip(names, values):
        if v >= _MAX_DIM:
            raise FormatError(path, 1, f"{name} below 2^62", f"{name}={v}")
    return values


def _chunks(f, chunk_bytes: int):
    """Yield ``uint8`` arrays of whole lines (each ending in ``\\n``) read from ``f``.

    One buffer is reused: a yielded array is valid until the next one is requested. The partial
    line after the last newline moves to the front of the buffer for the next read.
    """
    try:
        left = os.fstat(f.fileno()).st_size - f.tell()
    except (OSError, AttributeError, ValueError):
        left = chunk_bytes
    buf = bytearray(max(1, min(chunk_bytes, left + 1)))
    have = 0  # bytes of a partial line at the front of buf
    while True:
        if have == len(buf):  # one line longer than the buffer: a new, larger one (the old one
            buf = buf + bytearray(len(buf))  # may still be exported to a numpy array)
        with memoryview(buf) as mv:
            got = f.readinto(mv[have:])
        if not got:
            break
        end = have + got
        cut = buf.rfind(b"\n", have, end)
        if cut < 0:
            have = end
            continue
        yield np.frombuffer(buf, dtype=np.uint8, count=cut + 1)
        buf[: end - cut - 1] = buf[cut + 1:end]
        have = end - cut - 1
    tail = bytes(buf[:have])
    if tail.strip(b" \t\r"):  # last line without a newline
        yield np.frombuffer(bytearray(tail + b"\n"), dtype=np.uint8)
    # (only blanks after the last newline: not a line)


# Error code of the kernel -> what was expected (format keys: L, D, feat).
_WHAT = {
    1: "a label id in [0, {L})",
    2: "a {feat} id in [0, {D})",
    3: "'id:value' with a finite number as value",
    4: "'id:value'",
}


def _parse_text(path: PathLike, with_labels: bool, dtype, chunk_bytes: int):
    """Shared body of the text readers; returns (header, X, Y or None)."""
    from xmr.kernels import parse as K

    path = os.fspath(path)
    dtype = np.dtype(dtype)
    if dtype.kind != "f":
        raise TypeError(f"dtype must be a floating dtype, got {dtype}")
    if chunk_bytes < 1:
        raise ValueError(f"chunk_bytes must be >= 1, got {chunk_bytes}")
    names = ("N", "D", "L") if with_labels else ("rows", "cols")
    feat = "feature" if with_labels else "column"
    parts = []
    rows = 0
    lines = 0  # data lines consumed so far (the header is line 1)
    with open(path, "rb") as f:
        header = _read_header(f, path, names)
        n_rows, n_cols = header[0], header[1]
        n_labels = header[2] if with_labels else 0
        for buf in _chunks(f, chunk_bytes):
            xp, xi, xv, yp, yi, st = K.parse_sparse_lines(buf, with_labels, n_labels, n_cols,
                                                          n_rows - rows)
            # values that overflow dtype, in the rows before any syntax error: they come first
            if dtype.itemsize < 8 and xv.size:
                with np.errstate(over="ignore"):  # xv itself is finite (the kernel checks)
                    big = np.isinf(xv.astype(dtype))
                if big.any():  # finite in float64, inf once stored in dtype: refuse, naming it
                    e = int(np.argmax(big))
                    r = int(np.searchsorted(xp, e, side="right") - 1)
                    raise FormatError(path, 2 + lines + r, f"values within {dtype} range "
                                      f"(|v| <= {float(np.finfo(dtype).max):.8g}, after summing "
                                      f"repeated ids)", f"{float(xv[e])!r} for {feat} "
                                      f"{int(xi[e])}")
            code = int(st[0])
            if code != K.OK:
                line = 2 + lines + int(st[1])
                tok = bytes(buf[int(st[2]):int(st[3])])
                if code == K.ERR_EXTRA_LINE:
                    raise FormatError(path, line, f"at most {n_rows} data lines as the header "
                                      f"says", f"another line {_show(tok)}")
                what = _WHAT[code].format(L=n_labels, D=n_cols, feat=feat)
                raise FormatError(path, line, what, _show(tok))
            # keep per-chunk results compact (int32 ids, values in dtype) to bound peak memory
            xi = xi.astype(np.int32) if n_cols < 2**31 else xi
            yi = yi.astype(np.int32) if n_labels < 2**31 else yi
            parts.append((xp, xi, xv.astype(dtype), yp, yi))
            rows += int(st[4])
            lines += int(st[5])
    if rows != n_rows:
        raise FormatError(path, 2 + lines, f"{n_rows} data lines as the header says",
                          f"{rows} (the file ends)")
    X = _concat_csr([(p[0], p[1], p[2]) for p in parts], (n_rows, n_cols), dtype)
    Y = None
    if with_labels:
        Y = _concat_csr([(p[3], p[4], None) for p in parts], (n_rows, n_labels), np.float32)
    return header, X, Y


def _concat_csr(parts, shape, dtype) -> sp.csr_matrix:
    """Stack per-chunk CSR triplets (data ``None`` = all ones) into one csr_matrix."""
    nnz = sum(len(p[1]) for p in parts)
    idx_dtype = np.int32 if max(nnz, shape[1]) < 2**31 - 1 else np.int64
    indptr = np.empty(shape[0] + 1, dtype=idx_dtype)
    indices = np.empty(nnz, dtype=idx_dtype)
    data = np.empty(nnz, dtype=dtype)
    indptr[0] = 0
    r = o = 0
    for p_indptr, p_ind, p_val in parts:
        k = len(p_indptr) - 1
        indptr[r + 1:r + k + 1] = p_indptr[1:] + o
        indices[o:o + len(p_ind)] = p_ind
        data[o:o + len(p_ind)] = 1.0 if p_val is None else p_val
        r += k
        o += len(p_ind)
    assert r == shape[0] and o == nnz
    M = sp.csr_matrix((data, indices, indptr), shape=shape, copy=False)
    M.has_sorted_indices = True
    return M


def read_xc_bow(path: PathLike, dtype=np.float32, *, chunk_bytes: int = DEFAULT_CHUNK_BYTES
                ) -> Tuple[sp.csr_matrix, sp.csr_matrix]:
    """Read an XC repository BoW file.

    Returns ``X: csr_matrix dtype [N, D]`` (features) and ``Y: csr_matrix float32 [N, L]`` of
    1.0 (labels), both with sorted, unique indices per row. ``chunk_bytes`` sets the read size
    (small values are for tests). Raises :class:`FormatError` on bad input.
    """
    _, X, Y = _parse_text(path, True, dtype, chunk_bytes)
    log.debug("read %s: X %s nnz=%d, Y %s nnz=%d", path, X.shape, X.nnz, Y.shape, Y.nnz)
    return X, Y


def read_sparse_text(path: PathLike, dtype=np.float32, *,
                     chunk_bytes: int = DEFAULT_CHUNK_BYTES) -> sp.csr_matrix:
    """Read a sparse text matrix (header ``rows cols``) as ``csr_matrix dtype [rows, cols]``."""
    _, X, _ = _parse_text(path, False, dtype, chunk_bytes)
    log.debug("read %s: %s nnz=%d", path, X.shape, X.nnz)
    return X


# ------------------------------------------------------------------------------------------------
# Writing text.


def _as_csr(M, name: str) -> sp.csr_matrix:
    if not sp.issparse(M):
        raise TypeError(f"{name} must be a scipy sparse matrix, got {type(M).__name__}")
    M = sp.csr_matrix(M)
    if M.ndim != 2:
        raise ValueError(f"{name} must be 2-D, got shape {M.shape}")
    if M.dtype.kind not in "fiub":
        raise TypeError(f"{name} must have a numeric dtype, got {M.dtype}")
    if not M.has_canonical_format:  # sorted, no duplicates
        M = M.copy()
        M.sum_duplicates()
    return M


def _format_rows_py(X: sp.csr_matrix, Y: Optional[sp.csr_matrix], r0: int, r1: int) -> bytes:
    """Python formatter (float64 values: shortest round-trip ``repr``)."""
    out = []
    for r in range(r0, r1):
        a, b = X.indptr[r], X.indptr[r + 1]
        feats = " ".join(f"{i}:{v!r}" for i, v in zip(X.indices[a:b].tolist(),
                                                     X.data[a:b].tolist()))
        if Y is None:
            out.append(feats)
        else:
            labs = ",".join(map(str, Y.indices[Y.indptr[r]:Y.indptr[r + 1]].tolist()))
            out.append(f"{labs} {feats}" if feats else labs)
    return ("\n".join(out) + "\n").encode("ascii") if out else b""


def _format_rows(X: sp.csr_matrix, Y: Optional[sp.csr_matrix], r0: int, r1: int) -> bytes:
    """Lines of rows ``r0:r1`` as bytes."""
    if X.dtype == np.float64:
        return _format_rows_py(X, Y, r0, r1)
    from xmr.kernels import parse as K

    a, b = int(X.indptr[r0]), int(X.indptr[r1])
    xp = X.indptr[r0:r1 + 1].astype(np.int64) - a
    xi = X.indices[a:b].astype(np.int64)
    xv = X.data[a:b].astype(np.float32)
    size = (r1 - r0) + (b - a) * K.MAX_FEATURE_BYTES
    if Y is not None:
        c, d = int(Y.indptr[r0]), int(Y.indptr[r1])
        yp = Y.indptr[r0:r1 + 1].astype(np.int64) - c
        yi = Y.indices[c:d].astype(np.int64)
        size += (d - c) * K.MAX_ID_BYTES
    else:
        yp = np.zeros(1, np.int64)
        yi = np.zeros(1, np.int64)
    out = np.empty(size, dtype=np.uint8)
    n = K.format_sparse_lines(xp, xi, xv, yp, yi, Y is not None, out)
    return out[:n].tobytes()


def _check_finite(M: sp.csr_matrix, name: str) -> None:
    if M.dtype.kind == "f" and not np.isfinite(M.data).all():
        raise ValueError(f"{name} must hold finite values, got NaN or inf")


def _write_text(path: PathLike, header: str, X: sp.csr_matrix, Y: Optional[sp.csr_matrix]):
    with atomic_open(path, "wb") as f:
        f.write(header.encode("ascii") + b"\n")
        for r0 in range(0, X.shape[0], _WRITE_ROWS):
            f.write(_format_rows(X, Y, r0, min(r0 + _WRITE_ROWS, X.shape[0])))


def write_xc_bow(path: PathLike, X, Y) -> None:
    """Write ``X [N, D]`` and the label matrix ``Y [N, L]`` (its non-zero pattern) as an XC BoW
    file, atomically. Values of X must be finite; explicit zeros are written as ``f:0``."""
    X = _as_csr(X, "X")
    Y = _as_csr(Y, "Y")
    if (Y.data == 0).any():  # a stored zero is not a label
        Y = Y.copy()
        Y.eliminate_zeros()
    if X.shape[0] != Y.shape[0]:
        raise ValueError(f"X and Y must have the same number of rows, got {X.shape[0]} and "
                         f"{Y.shape[0]}")
    _check_finite(X, "X")
    if X.dtype != np.float64:
        X = X.astype(np.float32)
    _write_text(path, f"{X.shape[0]} {X.shape[1]} {Y.shape[1]}", X, Y)


def write_sparse_text(path: PathLike, M) -> None:
    """Write ``M [rows, cols]`` as a sparse text file (header ``rows cols``), atomically."""
    M = _as_csr(M, "M")
    _check_finite(M, "M")
    if M.dtype != np.float64:
        M = M.astype(np.float32)
    _write_text(path, f"{M.shape[0]} {M.shape[1]}", M, None)


# ------------------------------------------------------------------------------------------------
# npz.


def read_npz(path: PathLike) -> sp.csr_matrix:
    """Read a scipy ``.npz`` sparse matrix (``save_npz``; loaded without pickle) as csr_matrix.

    A CSR/CSC archive is checked before scipy sees it (indptr non-decreasing from 0 to nnz,
    indices in range, a sane shape); values must be finite. Defects are :class:`FormatError`.
    """
    import zipfile

    want = "a scipy sparse matrix saved by save_npz"
    os.stat(path)  # FileNotFoundError as usual
    if not zipfile.is_zipfile(path):
        raise FormatError(path, None, want, "a file that is not an .npz archive")
    try:
        with np.load(path, allow_pickle=False) as z:
            keys = sorted(z.files)
            fmt = bytes(np.asarray(z["format"]).item()).decode("ascii", "replace") \
                if "format" in keys and z["format"].dtype.kind == "S" else None
            arrays = {k: z[k] for k in keys if k in ("indptr", "indices", "data", "shape")}
    except (ValueError, OSError, EOFError, zipfile.BadZipFile) as e:
        if isinstance(e, OSError) and getattr(e, "errno", None):
            raise
        raise FormatError(path, None, want, f"a damaged archive ({e})") from None
    if "format" not in keys:
        raise FormatError(path, None, want, f"an .npz with the arrays {keys}")
    if fmt in ("csr", "csc"):
        missing = [k for k in ("indptr", "indices", "data", "shape") if k not in arrays]
        if missing:
            raise FormatError(path, None, want, f"a {fmt} archive without {', '.join(missing)}")
        shape = arrays["shape"]
        if shape.shape != (2,) or shape.dtype.kind not in "iu" or (shape < 0).any() or \
                (shape >= _MAX_DIM).any():
            raise FormatError(path, None, "shape: two non-negative integers below 2^62",
                              repr(shape.tolist()))
        for k in ("indptr", "indices"):
            if arrays[k].ndim != 1 or arrays[k].dtype.kind not in "iu":
                raise FormatError(path, None, f"{k}: a 1-D integer array",
                                  f"dtype {arrays[k].dtype}, shape {arrays[k].shape}")
        if arrays["data"].shape != arrays["indices"].shape:
            raise FormatError(path, None, "data and indices of the same length",
                              f"{arrays['data'].shape} and {arrays['indices'].shape}")
        major, minor = (int(shape[0]), int(shape[1])) if fmt == "csr" else (int(shape[1]),
                                                                            int(shape[0]))
        _check_compressed(path, arrays["indptr"], arrays["indices"], major, minor)
        # build from the arrays already read (no second decompression of a large archive)
        cls = sp.csr_matrix if fmt == "csr" else sp.csc_matrix
        M = sp.csr_matrix(cls((arrays["data"], arrays["indices"], arrays["indptr"]),
                              shape=(int(shape[0]), int(shape[1]))))
    else:
        try:
            M = sp.csr_matrix(sp.load_npz(path))
        except (ValueError, KeyError, IndexError) as e:
            raise FormatError(path, None, want, f"{type(e).__name__}: {e}") from None
    if M.dtype.kind == "f" and not np.isfinite(M.data).all():
        raise FormatError(path, None, "finite values", "NaN or inf")
    return M


def _check_compressed(path, indptr, indices, major: int, minor: int) -> None:
    """indptr of ``major + 1`` non-decreasing entries from 0 to nnz, indices in ``[0, minor)``."""
    nnz = indices.shape[0]
    if indptr.shape[0] != major + 1:
        raise FormatError(path, None, f"indptr of {major + 1} entries", f"{indptr.shape[0]}")
    if indptr[0] != 0 or indptr[-1] != nnz:
        raise FormatError(path, None, f"indptr from 0 to nnz={nnz}",
                          f"{int(indptr[0])} to {int(indptr[-1])}")
    drop = np.flatnonzero(np.diff(indptr.astype(np.int64)) < 0)
    if drop.size:
        r = int(drop[0])
        raise FormatError(path, None, "a non-decreasing indptr",
                          f"indptr[{r + 1}]={int(indptr[r + 1])} < indptr[{r}]={int(indptr[r])}")
    if nnz and (int(indices.min()) < 0 or int(indices.max()) >= minor):
        raise FormatError(path, None, f"indices in [0, {minor})",
                          f"indices in [{int(indices.min())}, {int(indices.max())}]")


def write_npz(path: PathLike, M, compressed: bool = True) -> None:
    """Write a sparse matrix as CSR ``.npz`` (scipy ``save_npz``), atomically."""
    M = _as_csr(M, "M")
    with atomic_open(path, "wb") as f:
        sp.save_npz(f, M, compressed=compressed)


# ------------------------------------------------------------------------------------------------


def read_matrix(path: PathLike, dtype=np.float32):
    """Read by extension/header: ``.npz`` → csr; a text file whose header has 3 fields → the
    ``(X, Y)`` of :func:`read_xc_bow`; 2 fields → the csr of :func:`read_sparse_text`."""
    path = Path(path)
    if path.suffix == ".npz":
        return read_npz(path)
    with open(path, "rb") as f:
        n = len(f.readline(_MAX_HEADER_BYTES).split())
    if n == 3:
        return read_xc_bow(path, dtype)
    if n == 2:
        return read_sparse_text(path, dtype)
    return read_xc_bow(path, dtype)  # raises the header error
