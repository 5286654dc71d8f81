"""The project's fuzz suite for the text parsers (hypothesis, fixed example counts, fast).

* the Numba kernel :func:`xmr.kernels.parse.parse_sparse_lines` against its pure-Python reference
  ``parse_sparse_lines_ref`` on random valid lines and on randomly damaged ones (every output,
  the error status included, must agree);
* the file readers (:func:`read_xc_bow`, :func:`read_sparse_text`, any chunk size) against a
  pure-Python whole-file reader: same matrices on valid files, a :class:`FormatError` on the same
  line on damaged ones, never another exception;
* the float32 writer kernel: every float32 written reads back bit-identical.
"""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp

pytest.importorskip("hypothesis", reason="the fuzz suite needs hypothesis (pip install 'xmr[test]')")
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from xmr.data.formats import read_sparse_text, read_xc_bow  # noqa: E402
from xmr.errors import FormatError  # noqa: E402
from xmr.kernels import parse as K  # noqa: E402

FUZZ = settings(max_examples=250, deadline=None, derandomize=True,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])

WS = st.sampled_from([" ", "  ", "\t", " \t", "\r"])
NUMBER = st.one_of(
    st.integers(-10**6, 10**6).map(str),
    st.floats(allow_nan=False, allow_infinity=False, width=32).map(repr),
    st.floats(allow_nan=False, allow_infinity=False, min_value=-1e30, max_value=1e30).map(
        lambda v: f"{v:.17e}"),
    st.tuples(st.integers(0, 999), st.integers(0, 99999), st.integers(-30, 30)).map(
        lambda t: f"{t[0]}.{t[1]}e{t[2]}"),
    st.sampled_from([".5", "5.", "+1", "-0", "0.000000000000000000001234", "1e-320",
                     "12345678901234567890123", "3.4028235e38"]),
)


@st.composite
def lines(draw, with_labels: bool, n_labels: int, n_feat: int):
    rows = draw(st.integers(0, 12))
    out = []
    for _ in range(rows):
        parts = []
        if with_labels and draw(st.booleans()):
            labs = draw(st.lists(st.integers(0, n_labels - 1), min_size=1, max_size=5))
            parts.append(",".join(map(str, labs)))
        feats = draw(st.lists(st.tuples(st.integers(0, n_feat - 1), NUMBER), max_size=6))
        parts += [f"{i}:{v}" for i, v in feats]
        sep = draw(WS)
        line = sep.join(parts)
        if with_labels and parts and ":" in parts[0] and draw(st.booleans()):
            line = " " + line  # a point without labels
        if draw(st.booleans()):
            line += draw(WS)
        out.append(line)
    return out


DAMAGE = st.sampled_from(list(":,.-+eE \t\r\n0123456789x") + ["nan", "inf", "99999999999999999999",
                                                                "1e400", "::", ",,", "\x00", "é"])


@st.composite
def damaged(draw, text: str):
    data = text
    for _ in range(draw(st.integers(1, 3))):
        pos = draw(st.integers(0, max(len(data) - 1, 0)))
        op = draw(st.sampled_from(["insert", "replace", "delete"]))
        tok = draw(DAMAGE)
        if op == "insert":
            data = data[:pos] + tok + data[pos:]
        elif op == "replace":
            data = data[:pos] + tok + data[pos + 1:]
        else:
            data = data[:pos] + data[pos + 1:]
    return data


def _buf(text: str) -> np.ndarray:
    raw = text.encode("utf-8")
    if raw and not raw.endswith(b"\n"):
        raw += b"\n"
    return np.frombuffer(raw, dtype=np.uint8).copy()


def _same(a, b, with_labels):
    """All outputs equal (the label arrays are uninitialised placeholders without labels)."""
    keep = range(6) if with_labels else (0, 1, 2, 5)
    for k in keep:
        np.testing.assert_array_equal(np.asarray(a[k]), np.asarray(b[k]), err_msg=str(k))


@FUZZ
@given(st.data(), st.booleans())
def test_kernel_equals_reference_on_valid_lines(data, with_labels):
    L, D = data.draw(st.integers(1, 20)), data.draw(st.integers(1, 40))
    body = "\n".join(data.draw(lines(with_labels, L, D))) + "\n"
    buf = _buf(body)
    got = K.parse_sparse_lines(buf, with_labels, L, D, 1 << 30)
    ref = K.parse_sparse_lines_ref(buf, with_labels, L, D, 1 << 30)
    assert int(got[5][0]) == K.OK
    _same(got, ref, with_labels)


@FUZZ
@given(st.data(), st.booleans())
def test_kernel_equals_reference_on_damaged_lines(data, with_labels):
    L, D = data.draw(st.integers(1, 20)), data.draw(st.integers(1, 40))
    body = "\n".join(data.draw(lines(with_labels, L, D))) + "\n"
    bad = data.draw(damaged(body))
    max_rows = data.draw(st.sampled_from([1 << 30, body.count("\n")]))
    buf = _buf(bad)
    got = K.parse_sparse_lines(buf, with_labels, L, D, max_rows)
    ref = K.parse_sparse_lines_ref(buf, with_labels, L, D, max_rows)
    _same(got, ref, with_labels)


# ---- whole files against a pure-Python reader ---------------------------------------------------


def _ref_read(text: str, with_labels: bool):
    """Pure-Python reader: ``("ok", X, Y)`` or ``("error", line)`` (1-based, header = 1).

    Conventions of the format (formats.py): a last line without a newline counts, but only
    blanks after the last newline are not a line."""
    head, sep, tail = text.rpartition("\n")
    if sep and not tail.strip(" \t\r"):
        text = head + "\n"
    lines_ = text.split("\n")
    header = lines_[0].split()
    n_names = 3 if with_labels else 2
    if not text or len(header) != n_names or not all(h.isdigit() for h in header):
        return ("error", 1)
    dims = [int(h) for h in header]
    if any(v >= 2**62 for v in dims):
        return ("error", 1)
    n, d = dims[0], dims[1]
    L = dims[2] if with_labels else 0
    body = "\n".join(lines_[1:])
    buf = _buf(body) if body.strip(" \t\r\n") or body.count("\n") else np.zeros(0, np.uint8)
    xp, xi, xv, yp, yi, status = K.parse_sparse_lines_ref(buf, with_labels, L, d, n)
    with np.errstate(over="ignore"):  # the rows before a syntax error come first
        big = np.isinf(xv.astype(np.float32))
    if big.any():
        e = int(np.argmax(big))
        return ("error", 2 + int(np.searchsorted(xp, e, side="right") - 1))
    if status[0] != K.OK:
        return ("error", 2 + int(status[1]))
    rows = int(status[4])
    if rows != n:
        return ("error", None)
    X = sp.csr_matrix((xv.astype(np.float32), xi, xp), shape=(n, d))
    Y = sp.csr_matrix((np.ones(len(yi), np.float32), yi, yp), shape=(n, L)) if with_labels else None
    return ("ok", X, Y)


def _check_file(tmp_path, text: str, with_labels: bool, chunk: int):
    f = tmp_path / "f.txt"
    f.write_bytes(text.encode("utf-8"))
    ref = _ref_read(text, with_labels)
    try:
        if with_labels:
            X, Y = read_xc_bow(f, chunk_bytes=chunk)
        else:
            X, Y = read_sparse_text(f, chunk_bytes=chunk), None
    except FormatError as exc:
        assert ref[0] == "error", (exc, text)
        if ref[1] is not None:
            assert exc.line == ref[1], (str(exc), ref, text)
        assert str(f) in str(exc)
        return
    assert ref[0] == "ok", (ref, text)
    np.testing.assert_array_equal(X.toarray(), ref[1].toarray())
    if with_labels:
        np.testing.assert_array_equal(Y.toarray(), ref[2].toarray())


@FUZZ
@given(st.data(), st.booleans(), st.sampled_from([1, 7, 64, 1 << 20]))
def test_readers_equal_the_reference_on_valid_files(tmp_path, data, with_labels, chunk):
    L, D = data.draw(st.integers(1, 20)), data.draw(st.integers(1, 40))
    body = data.draw(lines(with_labels, L, D))
    head = f"{len(body)} {D} {L}" if with_labels else f"{len(body)} {D}"
    text = "\n".join([head, *body]) + data.draw(st.sampled_from(["\n", "", "\n\n", "\r\n"]))
    _check_file(tmp_path, text, with_labels, chunk)


@FUZZ
@given(st.data(), st.booleans(), st.sampled_from([1, 5, 1 << 20]))
def test_readers_on_damaged_files_fail_on_the_reference_line(tmp_path, data, with_labels, chunk):
    L, D = data.draw(st.integers(1, 20)), data.draw(st.integers(1, 40))
    body = data.draw(lines(with_labels, L, D))
    head = f"{len(body)} {D} {L}" if with_labels else f"{len(body)} {D}"
    text = data.draw(damaged("\n".join([head, *body]) + "\n"))
    _check_file(tmp_path, text, with_labels, chunk)


@FUZZ
@given(st.lists(st.floats(width=32, allow_nan=False, allow_infinity=False), min_size=1,
                max_size=30))
def test_writer_kernel_round_trips_every_float32(values):
    v = np.asarray(values, dtype=np.float32)
    n = v.size
    xp = np.array([0, n], np.int64)
    xi = np.arange(n, dtype=np.int64)
    out = np.empty(1 + n * K.MAX_FEATURE_BYTES, np.uint8)
    m = K.format_sparse_lines(xp, xi, v.astype(np.float64), np.zeros(1, np.int64),
                              np.zeros(1, np.int64), False, out)
    got = K.parse_sparse_lines(out[:m].copy(), False, 0, n, 1)
    assert int(got[5][0]) == K.OK
    back = got[2].astype(np.float32)
    np.testing.assert_array_equal(back, v)
    np.testing.assert_array_equal(np.signbit(back), np.signbit(v))  # -0.0 stays -0.0


@pytest.mark.parametrize("value", ["3.5e38", "1e39", "-1e300"])
def test_values_that_overflow_float32_are_refused_naming_the_line(tmp_path, value):
    f = tmp_path / "x.txt"
    f.write_text(f"2 3\n0:1\n1:{value}\n")
    with pytest.raises(FormatError, match=r"line 3: .*float32"):
        read_sparse_text(f)
    assert read_sparse_text(f, dtype=np.float64)[1, 1] == float(value)
