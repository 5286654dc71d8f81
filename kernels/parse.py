"""Numba kernels that parse and format the XMC sparse text formats.

Two leaf kernels over primitive arrays, each with a pure-Python reference (suffix ``_ref``) that
the tests hold them equal to:

* :func:`parse_sparse_lines` — bytes (``uint8[n]``, ending in ``\\n``) → CSR triplets of the
  features and, optionally, of the labels, plus an error status. It parses both formats of the
  Extreme Classification Repository (Bhatia et al., http://manikvarma.org/downloads/XC/
  XMLRepository.html): the BoW line ``l1,l2,... f:v f:v ...`` (``with_labels=True``) and the
  sparse-text line ``idx:val idx:val ...`` (``with_labels=False``).
* :func:`format_sparse_lines` — CSR triplets with ``float32`` values → the same text, each value
  written with the fewest significant digits (at most 9) that read back to the same ``float32``.

Grammar of one line (tokens are separated by runs of `` ``, ``\\t`` or ``\\r``):

* with labels: the first token is a label list ``d+(,d+)*`` unless it contains ``:``; every other
  token is a feature;
* a feature is ``d+:NUMBER`` with ``NUMBER = [+-]?(d+(.d*)?|.d+)([eE][+-]?d+)?``;
* an id must lie in ``[0, n_labels)`` / ``[0, n_features)``.

Within a row, ids are sorted; a feature id that repeats has its values **summed** (in file order,
as ``scipy.sparse`` does for duplicate COO entries), a label that repeats is kept once.

Numbers are converted exactly as ``float(token)`` does (correctly rounded ``float64``): the fast
path is exact when the decimal mantissa fits in 53 bits and the power of ten in ``[-22, 22]``
(Clinger, *How to read floating point numbers accurately*, PLDI 1990, §3); other tokens (rare:
more than 15–16 significant digits or a large exponent) go through Python's ``float`` in an
``objmode`` block. Non-finite results are rejected.

Nothing compiles at import: the kernels are compiled (and cached) on their first call.
"""

from __future__ import annotations

import math

import numba
import numpy as np
from numba import njit

# Error codes returned in ``status[0]`` by the parser.
OK = 0
ERR_LABEL = 1  # a label is not a decimal integer in [0, n_labels)
ERR_FEATURE_ID = 2  # a feature id is not a decimal integer in [0, n_features)
ERR_VALUE = 3  # the value after ':' is not a finite number
ERR_NO_COLON = 4  # a feature token without ':'
ERR_EXTRA_LINE = 5  # a non-blank line after max_rows rows

# status layout: [code, line of the error (0-based, within the buffer), token start, token end,
#                 rows parsed, lines consumed]
STATUS_LEN = 6

_NL, _SP, _TAB, _CR = 10, 32, 9, 13
_COLON, _COMMA, _DOT, _PLUS, _MINUS = 58, 44, 46, 43, 45
_ZERO, _NINE, _E, _e = 48, 57, 69, 101
_TWO53 = 2**53
_MAX_MANT_DIGITS = 19  # a 19-digit decimal mantissa fits in int64

# Exact float64 powers of ten (10**22 is the largest one that a double holds exactly).
_P10 = np.array([10.0**k for k in range(23)], dtype=np.float64)


@njit(cache=True, inline="always")
def _is_ws(c):
    return c == _SP or c == _TAB or c == _CR


@njit(cache=True)
def _slow_float(buf, start, end):
    """``float(bytes)`` for the rare tokens that the exact fast path cannot handle."""
    with numba.objmode(v="float64"):
        v = float(bytes(buf[start:end]).decode("ascii"))
    return v


@njit(cache=True)
def _scan_number(buf, start, end):
    """Read the longest NUMBER-like prefix of ``buf[start:end]``; return ``(ok, value, stop)``
    where ``stop`` is the first unread offset and ``ok`` says a well-formed number was read."""
    p = start
    neg = False
    if p < end and (buf[p] == _PLUS or buf[p] == _MINUS):
        neg = buf[p] == _MINUS
        p += 1
    mant = 0
    ndig = 0
    exp10 = 0
    any_digit = False
    inexact = False
    while p < end and _ZERO <= buf[p] <= _NINE:
        d = buf[p] - _ZERO
        any_digit = True
        if mant != 0 or d != 0:
            if ndig < _MAX_MANT_DIGITS:
                mant = mant * 10 + d
                ndig += 1
            else:
                exp10 += 1
                inexact = True
        p += 1
    if p < end and buf[p] == _DOT:
        p += 1
        while p < end and _ZERO <= buf[p] <= _NINE:
            d = buf[p] - _ZERO
            any_digit = True
            if mant == 0 and d == 0:
                exp10 -= 1
            elif ndig < _MAX_MANT_DIGITS:
                mant = mant * 10 + d
                ndig += 1
                exp10 -= 1
            else:
                inexact = True
            p += 1
    if not any_digit:
        return False, 0.0, p
    if p < end and (buf[p] == _E or buf[p] == _e):
        p += 1
        eneg = False
        if p < end and (buf[p] == _PLUS or buf[p] == _MINUS):
            eneg = buf[p] == _MINUS
            p += 1
        e = 0
        edig = False
        while p < end and _ZERO <= buf[p] <= _NINE:
            edig = True
            if e < 100000:
                e = e * 10 + (buf[p] - _ZERO)
            p += 1
        if not edig:
            return False, 0.0, p
        exp10 += -e if eneg else e
    if mant == 0:
        v = 0.0
    elif not inexact and mant <= _TWO53 and -22 <= exp10 <= 22:
        if exp10 >= 0:
            v = float(mant) * _P10[exp10]
        else:
            v = float(mant) / _P10[-exp10]
    else:
        sign = 1 if (buf[start] == _PLUS or buf[start] == _MINUS) else 0
        v = _slow_float(buf, start + sign, p)
        if not math.isfinite(v):
            return False, 0.0, p
    return True, -v if neg else v, p


@njit(cache=True)
def _parse_number(buf, start, end):
    """Parse all of ``buf[start:end]`` as a NUMBER; return ``(ok, value)``."""
    ok, v, p = _scan_number(buf, start, end)
    return ok and p == end, v


@njit(cache=True)
def _parse_id(buf, start, end, limit):
    """Parse ``buf[start:end]`` as a decimal id in ``[0, limit)``; return -1 when it is not one."""
    if start >= end:
        return -1
    v = 0
    for p in range(start, end):
        c = buf[p]
        if c < _ZERO or c > _NINE:
            return -1
        if v < limit:  # stop growing once out of range (no overflow on long digit runs)
            v = v * 10 + (c - _ZERO)
    if v >= limit:
        return -1
    return v


@njit(cache=True)
def _finish_row(ind, val, start, end, is_label):
    """Sort ``ind[start:end]`` (stable), merge repeats (sum values, or keep one label); return
    the new end of the row."""
    n = end - start
    if n <= 1:
        return end
    sorted_unique = True
    for k in range(start + 1, end):
        if ind[k] <= ind[k - 1]:
            sorted_unique = False
            break
    if sorted_unique:
        return end
    order = np.argsort(ind[start:end], kind="mergesort")
    tmp_i = ind[start:end][order]
    tmp_v = val[start:end][order] if not is_label else val[start:start]
    w = start
    for k in range(n):
        if k > 0 and tmp_i[k] == ind[w - 1]:
            if not is_label:
                val[w - 1] += tmp_v[k]
            continue
        ind[w] = tmp_i[k]
        if not is_label:
            val[w] = tmp_v[k]
        w += 1
    return w


@njit(cache=True)
def parse_sparse_lines(buf, with_labels, n_labels, n_features, max_rows):
    """Parse complete lines of XC BoW / sparse text into CSR triplets.

    Parameters
    ----------
    buf : ``uint8[n]`` — the bytes of whole lines; must be empty or end with ``\\n``.
    with_labels : bool — BoW lines (leading label list) or sparse-text lines (features only).
    n_labels, n_features : int — ids must lie in ``[0, n_labels)`` and ``[0, n_features)``.
    max_rows : int — rows still expected; lines after that many rows must be blank (they are
        consumed but not counted as rows), otherwise the parse stops with ``ERR_EXTRA_LINE``.

    Returns
    -------
    x_indptr ``int64[r+1]``, x_indices ``int64[nnz]``, x_values ``float64[nnz]``,
    y_indptr ``int64[r+1]``, y_indices ``int64[nnz_y]`` (length-1 placeholders when
    ``with_labels`` is false), status ``int64[6]`` = (code, error line, token start, token end,
    rows r, lines consumed). On error, the arrays hold the rows before the failing line.
    """
    n = buf.shape[0]
    n_lines = 0
    n_colon = 0
    n_comma = 0
    for i in range(n):
        c = buf[i]
        if c == _NL:
            n_lines += 1
        elif c == _COLON:
            n_colon += 1
        elif c == _COMMA:
            n_comma += 1
    x_indptr = np.zeros(n_lines + 1, dtype=np.int64)
    x_ind = np.empty(n_colon, dtype=np.int64)
    x_val = np.empty(n_colon, dtype=np.float64)
    if with_labels:
        y_indptr = np.zeros(n_lines + 1, dtype=np.int64)
        y_ind = np.empty(n_comma + n_lines, dtype=np.int64)
    else:
        y_indptr = np.zeros(1, dtype=np.int64)
        y_ind = np.empty(1, dtype=np.int64)
    y_dummy = np.empty(0, dtype=np.float64)
    status = np.zeros(STATUS_LEN, dtype=np.int64)

    xnnz = 0
    ynnz = 0
    row = 0
    line = 0
    i = 0
    while i < n:
        line_start = i
        if row >= max_rows:  # past the header's N: only blank lines are allowed
            j = i
            blank = True
            while buf[j] != _NL:
                if not _is_ws(buf[j]):
                    blank = False
                j += 1
            if not blank:
                status[0] = ERR_EXTRA_LINE
                status[1] = line
                status[2] = line_start
                status[3] = j
                break
            i = j + 1
            line += 1
            continue
        xs = xnnz
        ys = ynnz
        first = True
        err = OK
        while True:
            while _is_ws(buf[i]):
                i += 1
            if buf[i] == _NL:
                i += 1
                break
            t0 = i
            if not (with_labels and first):
                # fast path for a well-formed feature: one pass over 'id:value'
                fid = 0
                p = i
                while _ZERO <= buf[p] <= _NINE:
                    if fid < n_features:
                        fid = fid * 10 + (buf[p] - _ZERO)
                    p += 1
                if p > t0 and buf[p] == _COLON and fid < n_features:
                    ok, v, q = _scan_number(buf, p + 1, n)
                    if ok and (_is_ws(buf[q]) or buf[q] == _NL):
                        x_ind[xnnz] = fid
                        x_val[xnnz] = v
                        xnnz += 1
                        i = q
                        first = False
                        continue
                # otherwise the general path below finds and reports the error
            colon = -1
            while not _is_ws(buf[i]) and buf[i] != _NL:
                if colon < 0 and buf[i] == _COLON:
                    colon = i
                i += 1
            t1 = i
            if with_labels and first and colon < 0:
                a = t0
                while a <= t1:
                    b = a
                    while b < t1 and buf[b] != _COMMA:
                        b += 1
                    lab = _parse_id(buf, a, b, n_labels)
                    if lab < 0:
                        err = ERR_LABEL
                        status[2] = a
                        status[3] = b
                        break
                    y_ind[ynnz] = lab
                    ynnz += 1
                    a = b + 1
            elif colon < 0:
                err = ERR_NO_COLON
                status[2] = t0
                status[3] = t1
            else:
                fid = _parse_id(buf, t0, colon, n_features)
                if fid < 0:
                    err = ERR_FEATURE_ID
                    status[2] = t0
                    status[3] = colon
                else:
                    ok, v = _parse_number(buf, colon + 1, t1)
                    if not ok:
                        err = ERR_VALUE
                        status[2] = t0
                        status[3] = t1
                    else:
                        x_ind[xnnz] = fid
                        x_val[xnnz] = v
                        xnnz += 1
            if err != OK:
                break
            first = False
        if err != OK:
            status[0] = err
            status[1] = line
            xnnz = xs
            ynnz = ys
            break
        xnnz = _finish_row(x_ind, x_val, xs, xnnz, False)
        if with_labels:
            ynnz = _finish_row(y_ind, y_dummy, ys, ynnz, True)
        row += 1
        line += 1
        x_indptr[row] = xnnz
        if with_labels:
            y_indptr[row] = ynnz
    status[4] = row
    status[5] = line
    if with_labels:
        return (x_indptr[: row + 1], x_ind[:xnnz], x_val[:xnnz], y_indptr[: row + 1],
                y_ind[:ynnz], status)
    return x_indptr[: row + 1], x_ind[:xnnz], x_val[:xnnz], y_indptr, y_ind, status


# ------------------------------------------------------------------------------------------------
# Reference parser (pure Python), same contract as parse_sparse_lines.

_WS = (" ", "\t", "\r")


def _ref_id(tok: str, limit: int) -> int:
    if tok == "" or not all("0" <= ch <= "9" for ch in tok):
        return -1
    v = int(tok)
    return v if v < limit else -1


def _ref_number(tok: str):
    import re

    if not re.fullmatch(r"[+-]?(\d+(\.\d*)?|\.\d+)([eE][+-]?\d+)?", tok):
        return False, 0.0
    v = float(tok)
    if not math.isfinite(v):
        return False, 0.0
    return True, v


def parse_sparse_lines_ref(buf, with_labels, n_labels, n_features, max_rows):
    """Slow reference of :func:`parse_sparse_lines` (same arguments, same outputs)."""
    data = bytes(np.asarray(buf, dtype=np.uint8))
    text = data.decode("latin-1")  # 1 char per byte, so offsets are byte offsets
    x_indptr, x_ind, x_val, y_indptr, y_ind = [0], [], [], [0], []
    status = [OK, 0, 0, 0, 0, 0]
    row = 0
    pos = 0
    lines = text.split("\n")[:-1] if text else []
    for line_no, line in enumerate(lines):
        start = pos
        pos += len(line) + 1
        if row >= max_rows:
            if any(ch not in _WS for ch in line):
                status[:4] = [ERR_EXTRA_LINE, line_no, start, start + len(line)]
                break
            status[5] = line_no + 1
            continue
        # tokens with their offsets
        toks = []
        k = 0
        while k < len(line):
            if line[k] in _WS:
                k += 1
                continue
            t0 = k
            while k < len(line) and line[k] not in _WS:
                k += 1
            toks.append((start + t0, line[t0:k]))
        feats, labels, err = {}, [], None
        for ti, (off, tok) in enumerate(toks):
            if with_labels and ti == 0 and ":" not in tok:
                a = 0
                for part in tok.split(","):
                    lab = _ref_id(part, n_labels)
                    if lab < 0:
                        err = (ERR_LABEL, off + a, off + a + len(part))
                        break
                    labels.append(lab)
                    a += len(part) + 1
            elif ":" not in tok:
                err = (ERR_NO_COLON, off, off + len(tok))
            else:
                fs, vs = tok.split(":", 1)
                fid = _ref_id(fs, n_features)
                if fid < 0:
                    err = (ERR_FEATURE_ID, off, off + len(fs))
                else:
                    ok, v = _ref_number(vs)
                    if not ok:
                        err = (ERR_VALUE, off, off + len(tok))
                    else:
                        feats[fid] = feats.get(fid, 0.0) + v
            if err is not None:
                break
        if err is not None:
            status[:4] = [err[0], line_no, err[1], err[2]]
            break
        for fid in sorted(feats):
            x_ind.append(fid)
            x_val.append(feats[fid])
        y_ind.extend(sorted(set(labels)))
        row += 1
        x_indptr.append(len(x_ind))
        y_indptr.append(len(y_ind))
        status[5] = line_no + 1
    status[4] = row
    i64 = np.int64
    out_y = (np.array(y_indptr, i64), np.array(y_ind, i64)) if with_labels else \
        (np.zeros(1, i64), np.empty(1, i64))
    return (np.array(x_indptr, i64), np.array(x_ind, i64), np.array(x_val, np.float64),
            out_y[0], out_y[1], np.array(status, i64))


# ------------------------------------------------------------------------------------------------
# Writer kernel.


@njit(cache=True)
def _write_uint(out, o, v):
    """Write the decimal digits of ``v >= 0`` at ``out[o:]``; return the new offset."""
    if v == 0:
        out[o] = _ZERO
        return o + 1
    nd = 0
    t = v
    while t > 0:
        t //= 10
        nd += 1
    for k in range(nd - 1, -1, -1):
        out[o + k] = _ZERO + v % 10
        v //= 10
    return o + nd


@njit(cache=True)
def _scale10(x, q):
    """``x * 10**q``, exact powers of ten for ``|q| <= 22`` (one rounding), else ``10.0**|q|``."""
    k = q if q >= 0 else -q
    t = _P10[k] if k <= 22 else 10.0**k
    return x * t if q >= 0 else x / t


@njit(cache=True)
def _shortest_f32_digits(v):
    """Fewest significant decimal digits (``digits``, ``e10``) with ``v ≈ digits·10^e10`` such
    that the decimal lies strictly inside the rounding interval of the float32 ``v > 0`` (with a
    relative margin of 1e-6 of the half-gap that covers float64 rounding in this check), so any
    correctly rounding reader — and any reader that goes through float64 — returns ``v``."""
    m, ex = math.frexp(v)  # v = m * 2**ex, m in [0.5, 1)
    if ex - 1 >= -126:  # normal float32: gap to the next float is 2**(ex-24)
        gap_hi = math.ldexp(1.0, ex - 24)
        gap_lo = gap_hi * 0.5 if m == 0.5 and ex - 1 > -126 else gap_hi
    else:  # subnormal: fixed spacing 2**-149
        gap_hi = math.ldexp(1.0, -149)
        gap_lo = gap_hi
    lo = v - 0.5 * gap_lo * (1.0 - 1e-6)
    hi = v + 0.5 * gap_hi * (1.0 - 1e-6)
    # 9 significant digits always round-trip a float32 (IEEE 754-2008 §5.12.2); shorter prefixes
    # are tried first by rounding those 9 digits (integer arithmetic), each checked against the
    # interval. Rounding twice can miss the shortest form by a digit, never correctness.
    e = int(math.floor(math.log10(v)))
    d9 = 0
    for _ in range(3):  # fix an off-by-one leading exponent
        d9 = int(round(_scale10(v, 8 - e)))
        if d9 >= 1_000_000_000:
            e += 1
        elif d9 < 100_000_000:
            e -= 1
        else:
            break
    div = 100_000_000
    for p in range(1, 10):
        cand = (d9 + div // 2) // div
        q = e - p + 1
        d = _scale10(float(cand), q)
        if lo < d < hi:
            return cand, q
        div //= 10
    for p in range(10, 18):  # not reached in practice; a safety net
        q = e - p + 1
        cand = int(round(_scale10(v, -q)))
        if lo < _scale10(float(cand), q) < hi:
            return cand, q
    return cand, q


@njit(cache=True)
def _write_f32(out, o, v):
    """Write ``v`` (a float32 value held in float64) in the shortest round-trip form."""
    if v == 0.0:
        if math.copysign(1.0, v) < 0:
            out[o] = _MINUS
            o += 1
        out[o] = _ZERO
        return o + 1
    if v < 0:
        out[o] = _MINUS
        o += 1
        v = -v
    digits, e10 = _shortest_f32_digits(v)
    while digits % 10 == 0:
        digits //= 10
        e10 += 1
    nd = 0
    t = digits
    while t > 0:
        t //= 10
        nd += 1
    lead = e10 + nd - 1  # exponent of the leading digit
    # positional or scientific, whichever is shorter (positional on a tie)
    if e10 >= 0:
        pos_len = nd + e10  # ddd000
    elif lead >= 0:
        pos_len = nd + 1  # dd.ddd
    else:
        pos_len = 1 - lead + nd  # 0.000ddd
    alead = -lead if lead < 0 else lead
    sci_len = nd + (1 if nd > 1 else 0) + 1 + (1 if lead < 0 else 0) + (
        1 if alead < 10 else (2 if alead < 100 else 3))
    if pos_len <= sci_len:
        if e10 >= 0:
            o = _write_uint(out, o, digits)
            for _ in range(e10):
                out[o] = _ZERO
                o += 1
            return o
        if lead < 0:
            out[o] = _ZERO
            out[o + 1] = _DOT
            o += 2
            for _ in range(-lead - 1):
                out[o] = _ZERO
                o += 1
            return _write_uint(out, o, digits)
        s = o
        o = _write_uint(out, o, digits)
        ip = s + lead + 1  # the point goes after lead+1 digits
        for k in range(o, ip, -1):
            out[k] = out[k - 1]
        out[ip] = _DOT
        return o + 1
    # scientific: d[.ddd]e[-]XX
    s = o
    o = _write_uint(out, o, digits)
    if nd > 1:
        for k in range(o, s + 1, -1):
            out[k] = out[k - 1]
        out[s + 1] = _DOT
        o += 1
    out[o] = _e
    o += 1
    if lead < 0:
        out[o] = _MINUS
        o += 1
        lead = -lead
    return _write_uint(out, o, lead)


# Upper bound of the bytes one entry takes: a 20-digit id, ':', sign, 17 digits, '.', 'e-XXX'.
MAX_ID_BYTES = 21
MAX_FEATURE_BYTES = MAX_ID_BYTES + 1 + 26


@njit(cache=True)
def format_sparse_lines(x_indptr, x_ind, x_val, y_indptr, y_ind, with_labels, out):
    """Write rows as XC BoW (``with_labels``) or sparse-text lines into ``out``.

    ``x_val`` holds float32 values (any float dtype whose values are float32-representable); each
    is written with the fewest digits that read back to the same float32. ``out`` is a ``uint8``
    buffer of at least ``rows + nnz_x * MAX_FEATURE_BYTES + nnz_y * MAX_ID_BYTES`` bytes. Returns
    the number of bytes written. A BoW row without labels starts with a space; a row without
    labels and features is an empty line.
    """
    o = 0
    rows = x_indptr.shape[0] - 1
    for r in range(rows):
        if with_labels:
            for k in range(y_indptr[r], y_indptr[r + 1]):
                if k > y_indptr[r]:
                    out[o] = _COMMA
                    o += 1
                o = _write_uint(out, o, y_ind[k])
        first = True
        for k in range(x_indptr[r], x_indptr[r + 1]):
            if with_labels or not first:
                out[o] = _SP
                o += 1
            first = False
            o = _write_uint(out, o, x_ind[k])
            out[o] = _COLON
            o += 1
            o = _write_f32(out, o, float(x_val[k]))
        out[o] = _NL
        o += 1
    return o
