"""Tests of xmr.data.formats and its parser kernels (xmr.kernels.parse)."""

import os

import numpy as np
import pytest
import scipy.sparse as sp

from xmr.data import formats as F
from xmr.errors import FormatError
from xmr.kernels import parse as K


def random_xy(rng, n=60, d=40, l=25, dtype=np.float32):
    """Random X, Y with empty rows, rows without labels and rows without features."""
    X = sp.random(n, d, density=0.15, format="csr", random_state=rng, dtype=np.float64)
    X.data = (rng.standard_normal(X.nnz) * 10.0 ** rng.integers(-8, 8, X.nnz)).astype(dtype)
    Y = sp.random(n, l, density=0.1, format="csr", random_state=rng)
    Y.data[:] = 1.0
    Y = Y.astype(np.float32)
    X, Y = X.tolil(), Y.tolil()
    X[0, :] = 0  # row 0: no features, has labels
    Y[0, :] = 0
    Y[0, 3] = 1
    Y[1, :] = 0  # row 1: no labels, has features
    X[1, 5] = 2.5
    X[2, :] = 0  # row 2: nothing
    Y[2, :] = 0
    X, Y = X.tocsr(), Y.tocsr()
    X.eliminate_zeros()
    Y.eliminate_zeros()
    return X, Y


def assert_csr_equal(A, B):
    assert A.shape == B.shape
    A, B = sp.csr_matrix(A), sp.csr_matrix(B)
    np.testing.assert_array_equal(A.indptr, B.indptr)
    np.testing.assert_array_equal(A.indices, B.indices)
    np.testing.assert_array_equal(A.data, B.data)  # exact, bit for bit up to -0.0 == 0.0


def write(tmp_path, text, name="f.txt"):
    p = tmp_path / name
    p.write_bytes(text.encode() if isinstance(text, str) else text)
    return p


# ------------------------------------------------------------------------------------------------
# Round trips.


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_xc_bow_round_trip(tmp_path, dtype):
    rng = np.random.default_rng(0)
    X, Y = random_xy(rng, dtype=dtype)
    p = tmp_path / "bow.txt"
    F.write_xc_bow(p, X, Y)
    lines = p.read_text().split("\n")
    assert lines[0] == f"{X.shape[0]} {X.shape[1]} {Y.shape[1]}"
    assert lines[1] == "3" and lines[2].startswith(" 5:2.5 ") and lines[3] == ""
    X2, Y2 = F.read_xc_bow(p, dtype=dtype)
    assert X2.dtype == dtype and Y2.dtype == np.float32
    assert_csr_equal(X2, X)
    assert_csr_equal(Y2, Y)
    # many tiny chunks give the same result
    X3, Y3 = F.read_xc_bow(p, dtype=dtype, chunk_bytes=7)
    assert_csr_equal(X3, X)
    assert_csr_equal(Y3, Y)


def test_sparse_text_round_trip(tmp_path):
    rng = np.random.default_rng(1)
    X, _ = random_xy(rng, n=50, d=30)
    p = tmp_path / "X.txt"
    F.write_sparse_text(p, X)
    assert p.read_text().split("\n")[3] == ""  # empty row = empty line
    assert_csr_equal(F.read_sparse_text(p), X)
    assert_csr_equal(F.read_sparse_text(p, chunk_bytes=5), X)
    assert_csr_equal(F.read_matrix(p), X)


def test_npz_round_trip(tmp_path):
    rng = np.random.default_rng(2)
    X, Y = random_xy(rng)
    F.write_npz(tmp_path / "X.npz", X)
    F.write_npz(tmp_path / "Y.npz", sp.csc_matrix(Y), compressed=False)
    assert_csr_equal(F.read_npz(tmp_path / "X.npz"), X)
    Y2 = F.read_matrix(tmp_path / "Y.npz")
    assert sp.isspmatrix_csr(Y2)
    assert_csr_equal(Y2, Y)


def test_npz_rejects_non_sparse(tmp_path):
    np.savez(tmp_path / "a.npz", a=np.arange(3))
    with pytest.raises(FormatError) as e:
        F.read_npz(tmp_path / "a.npz")
    assert str(e.value) == (f"{tmp_path / 'a.npz'}: expected a scipy sparse matrix saved by "
                            "save_npz, got an .npz with the arrays ['a']")
    write(tmp_path, "3 4\n", "b.npz")
    with pytest.raises(FormatError) as e:
        F.read_npz(tmp_path / "b.npz")
    assert str(e.value) == (f"{tmp_path / 'b.npz'}: expected a scipy sparse matrix saved by "
                            "save_npz, got a file that is not an .npz archive")


def test_float32_shortest_digits_round_trip(tmp_path):
    """Hard float32 values (extremes, subnormals, powers of two and ten) read back bit-exactly,
    written with at most 9 significant digits."""
    rng = np.random.default_rng(3)
    bits = rng.integers(0, 0x7F800000, 3000, dtype=np.int64).astype(np.uint32).view(np.float32)
    special = np.array([1e-45, 1.17549435e-38, 3.4028235e38, 2.0**-126, 2.0**-127, 1.0, 0.1,
                        2.0**24, 2.0**24 + 2, 1e10, 123456.79, 1e-5, 9.999999e-6, 0.3333333,
                        16777216.0, 0.5, 1e-7, 1e7, 1e9, 1e16, 1e30, -7.0], np.float32)
    vals = np.concatenate([bits, -bits[:100], special])
    vals = np.concatenate([vals, np.ones(-len(vals) % 50, np.float32)])
    rows = len(vals) // 50
    M = sp.csr_matrix((vals, np.tile(np.arange(50), rows), np.arange(0, len(vals) + 1, 50)),
                      shape=(rows, 50))
    p = tmp_path / "v.txt"
    F.write_sparse_text(p, M)
    M2 = F.read_sparse_text(p)
    np.testing.assert_array_equal(M2.data.view(np.uint32), M.data.view(np.uint32))
    for tok in p.read_text().split()[2:]:
        mant = tok.split(":")[1].lstrip("-").split("e")[0].replace(".", "").strip("0")
        assert len(mant) <= 9, tok
    # shortest form: simple decimals stay simple
    S = sp.csr_matrix(np.array([[0.1, 1.0, 1e10, 1.5e-7, 123456.79, 0.00025, 2.5e-5, 1e9]],
                               np.float32))
    F.write_sparse_text(p, S)
    assert p.read_text() == "1 8\n0:0.1 1:1 2:1e10 3:1.5e-7 4:123456.79 5:2.5e-4 6:2.5e-5 7:1e9\n"


# ------------------------------------------------------------------------------------------------
# Numba kernel vs reference.


def _make_lines(rng, n, with_labels, corrupt):
    toks_bad = ["abc", "1.5", "-3", "", "99999999999999999999999", "7"]
    lines = []
    for _ in range(n):
        parts = []
        if with_labels and rng.random() < 0.8:
            labs = rng.integers(0, 30, rng.integers(1, 5))
            parts.append(",".join(map(str, labs)))
        for _ in range(rng.integers(0, 8)):
            f = int(rng.integers(0, 20))  # duplicates happen
            v = rng.choice(["1", "0.5", "-2.25e-3", "1e5", ".5", "5.", "+3", "0.1234567890123456789",
                            "1e-330", "0", "-0", "12345678901234567", "7E+2", "1.5e300"])
            parts.append(f"{f}:{v}")
        sep = rng.choice([" ", "  ", "\t", " \r"])
        line = sep.join(parts)
        if with_labels and parts and not (rng.random() < 0.8):
            line = " " + line
        if corrupt and rng.random() < 0.05:
            bad = rng.choice(["x:1", "3:x", "3", "3:", ":1", "-1:2", "25:1", "3:1:2", "3:nan",
                              "3:inf", "3:1e999", "1e", "3:1e+", "3:.", "3:-"])
            line += " " + bad
        if corrupt and with_labels and rng.random() < 0.05:
            line = rng.choice(toks_bad) + "," + line.lstrip()
        lines.append(line + rng.choice(["", "\r"]))
    return ("\n".join(lines) + "\n").encode()


@pytest.mark.parametrize("with_labels", [True, False])
@pytest.mark.parametrize("corrupt", [False, True])
def test_kernel_matches_reference(with_labels, corrupt):
    rng = np.random.default_rng(10 + with_labels + 2 * corrupt)
    n_err = 0
    for trial in range(40):
        data = _make_lines(rng, int(rng.integers(0, 30)), with_labels, corrupt)
        buf = np.frombuffer(bytearray(data), np.uint8)
        max_rows = int(rng.integers(0, 35))
        got = K.parse_sparse_lines(buf, with_labels, 30, 20, max_rows)
        ref = K.parse_sparse_lines_ref(buf, with_labels, 30, 20, max_rows)
        names = ["x_indptr", "x_indices", "x_values", "y_indptr", "y_indices", "status"]
        for name, a, b in zip(names, got, ref):
            if name == "y_indices" and not with_labels:
                continue
            np.testing.assert_array_equal(a, b, err_msg=f"{name}, trial {trial}")
        n_err += int(ref[5][0] != 0)
    if corrupt:
        assert n_err > 5  # the corrupt cases were exercised


def test_kernel_sums_duplicate_features_and_dedups_labels():
    buf = np.frombuffer(bytearray(b"4,1,4 3:1 1:2 3:0.5\n"), np.uint8)
    xp, xi, xv, yp, yi, st = K.parse_sparse_lines(buf, True, 5, 5, 10)
    assert st[0] == K.OK and st[4] == 1
    assert xi.tolist() == [1, 3] and xv.tolist() == [2.0, 1.5]
    assert yi.tolist() == [1, 4]


def test_numbers_parse_like_python_float():
    toks = ["0.1", "1e-7", "3.4028235e38", "0.30000000000000004", "2.2250738585072014e-308",
            "9007199254740993", "1.7976931348623157e308", "4.9e-324", "123456789012345678901234",
            "0.000001234567890123456789", "-0.0", "1e22", "1e23", "8.98846567431158e307"]
    line = " ".join(f"{i}:{t}" for i, t in enumerate(toks)) + "\n"
    buf = np.frombuffer(bytearray(line.encode()), np.uint8)
    _, xi, xv, _, _, st = K.parse_sparse_lines(buf, False, 0, 100, 1)
    assert st[0] == K.OK
    assert xv.tolist() == [float(t) for t in toks]
    assert np.signbit(xv[10])


# ------------------------------------------------------------------------------------------------
# Chunking, line endings.


def test_chunk_boundaries_and_missing_final_newline(tmp_path):
    rng = np.random.default_rng(5)
    X, Y = random_xy(rng, n=200, d=50, l=20)
    p = tmp_path / "a.txt"
    F.write_xc_bow(p, X, Y)
    raw = p.read_bytes()
    q = write(tmp_path, raw.rstrip(b"\n"), "b.txt")  # no final newline
    r = write(tmp_path, raw.replace(b"\n", b"\r\n"), "c.txt")  # CRLF
    for path in (p, q, r):
        for chunk in (1, 3, 64, 1000, 1 << 20):
            X2, Y2 = F.read_xc_bow(path, chunk_bytes=chunk)
            assert_csr_equal(X2, X)
            assert_csr_equal(Y2, Y)


def test_trailing_blank_lines_ignored(tmp_path):
    p = write(tmp_path, "2 4 3\n0 1:1\n2 3:2\n\n  \n")
    X, Y = F.read_xc_bow(p)
    assert X.shape == (2, 4) and Y.toarray().tolist() == [[1, 0, 0], [0, 0, 1]]


def test_header_only_and_zero_rows(tmp_path):
    X, Y = F.read_xc_bow(write(tmp_path, "0 4 3"))
    assert X.shape == (0, 4) and Y.shape == (0, 3)
    M = F.read_sparse_text(write(tmp_path, "2 3\n\n\n", "m.txt"))
    assert M.shape == (2, 3) and M.nnz == 0


def test_label_only_and_feature_only_lines(tmp_path):
    p = write(tmp_path, "4 5 6\n5\n1:0.5 0:2\n 3:1\n2,0\n")
    X, Y = F.read_xc_bow(p)
    assert X.toarray().tolist() == [[0] * 5, [2, 0.5, 0, 0, 0], [0, 0, 0, 1, 0], [0] * 5]
    assert [Y[i].indices.tolist() for i in range(4)] == [[5], [], [], [0, 2]]


# ------------------------------------------------------------------------------------------------
# Bad input: exact messages.

BAD_BOW = [
    ("", "line 1: expected a header of 3 non-negative integers 'N D L', got an empty file"),
    ("2 5\n0 1:1\n", "line 1: expected a header of 3 non-negative integers 'N D L', got '2 5'"),
    ("2 5 3 1\n", "line 1: expected a header of 3 non-negative integers 'N D L', got '2 5 3 1'"),
    ("2 5 x\n", "line 1: expected a header of 3 non-negative integers 'N D L', got '2 5 x'"),
    ("3 5 4\n0 1:1\n1 2:1\n",
     "line 4: expected 3 data lines as the header says, got 2 (the file ends)"),
    ("3 5 4\n", "line 2: expected 3 data lines as the header says, got 0 (the file ends)"),
    ("1 5 4\n0 1:1\n\n1 2:1\n",
     "line 4: expected at most 1 data lines as the header says, got another line '1 2:1'"),
    ("2 5 4\n0 1:1\n3,4 2:1\n", "line 3: expected a label id in [0, 4), got '4'"),
    ("2 5 4\n0 1:1\n3 5:1\n", "line 3: expected a feature id in [0, 5), got '5'"),
    ("1 5 4\n-1 2:1\n", "line 2: expected a label id in [0, 4), got '-1'"),
    ("1 5 4\n1 -2:1\n", "line 2: expected a feature id in [0, 5), got '-2'"),
    ("1 5 4\nabc 2:1\n", "line 2: expected a label id in [0, 4), got 'abc'"),
    ("1 5 4\n1.5 2:1\n", "line 2: expected a label id in [0, 4), got '1.5'"),
    ("1 5 4\n1,,2 2:1\n", "line 2: expected a label id in [0, 4), got ''"),
    ("1 5 4\n1 3:x\n", "line 2: expected 'id:value' with a finite number as value, got '3:x'"),
    ("1 5 4\n1 3:nan\n",
     "line 2: expected 'id:value' with a finite number as value, got '3:nan'"),
    ("1 5 4\n1 a:1\n", "line 2: expected a feature id in [0, 5), got 'a'"),
    ("1 5 4\n1 2:1 3\n", "line 2: expected 'id:value', got '3'"),
    ("1 5 4\n1 2:1 99999999999999999999999:1", "line 2: expected a feature id in [0, 5), "
                                               "got '99999999999999999999999'"),
]


@pytest.mark.parametrize("text,msg", BAD_BOW)
@pytest.mark.parametrize("chunk", [2, 1 << 20])
def test_bad_xc_bow_exact_message(tmp_path, text, msg, chunk):
    p = write(tmp_path, text)
    with pytest.raises(FormatError) as e:
        F.read_xc_bow(p, chunk_bytes=chunk)
    assert str(e.value) == f"{p}, {msg}"


def test_error_line_number_deep_in_a_chunked_file(tmp_path):
    body = "".join(f"{i % 7} {i % 11}:1.5\n" for i in range(5000))
    p = write(tmp_path, f"5001 11 7\n{body}3 12:1\n")
    for chunk in (100, 1 << 20):
        with pytest.raises(FormatError) as e:
            F.read_xc_bow(p, chunk_bytes=chunk)
        assert str(e.value) == f"{p}, line 5002: expected a feature id in [0, 11), got '12'"


BAD_SPARSE = [
    ("", "line 1: expected a header of 2 non-negative integers 'rows cols', got an empty file"),
    ("2 5 3\n", "line 1: expected a header of 2 non-negative integers 'rows cols', got '2 5 3'"),
    ("2 5\n1:1\n", "line 3: expected 2 data lines as the header says, got 1 (the file ends)"),
    ("1 5\n1:1\n2:2\n",
     "line 3: expected at most 1 data lines as the header says, got another line '2:2'"),
    ("1 5\n5:1\n", "line 2: expected a column id in [0, 5), got '5'"),
    ("1 5\n1:1 2\n", "line 2: expected 'id:value', got '2'"),
    ("1 5\n1:1,2\n", "line 2: expected 'id:value' with a finite number as value, got '1:1,2'"),
]


@pytest.mark.parametrize("text,msg", BAD_SPARSE)
def test_bad_sparse_text_exact_message(tmp_path, text, msg):
    p = write(tmp_path, text)
    with pytest.raises(FormatError) as e:
        F.read_sparse_text(p)
    assert str(e.value) == f"{p}, {msg}"


# ------------------------------------------------------------------------------------------------
# Writers.


def _assert_atomic_failure(tmp_path, monkeypatch, do_write):
    p = tmp_path / "out.txt"
    p.write_text("previous content\n")
    calls = {"n": 0}
    real = F._format_rows

    def failing(*a, **kw):
        calls["n"] += 1
        if calls["n"] == 2:
            raise RuntimeError("disk on fire")
        return real(*a, **kw)

    monkeypatch.setattr(F, "_format_rows", failing)
    monkeypatch.setattr(F, "_WRITE_ROWS", 10)  # several slabs, so the failure is midway
    with pytest.raises(RuntimeError, match="disk on fire"):
        do_write(p)
    assert calls["n"] == 2
    assert p.read_text() == "previous content\n"
    assert sorted(os.listdir(tmp_path)) == ["out.txt"]  # no temp file left behind


def test_write_xc_bow_is_atomic(tmp_path, monkeypatch):
    X, Y = random_xy(np.random.default_rng(7))
    _assert_atomic_failure(tmp_path, monkeypatch, lambda p: F.write_xc_bow(p, X, Y))


def test_write_sparse_text_is_atomic(tmp_path, monkeypatch):
    X, _ = random_xy(np.random.default_rng(8))
    _assert_atomic_failure(tmp_path, monkeypatch, lambda p: F.write_sparse_text(p, X))


def test_writer_validation(tmp_path):
    X, Y = random_xy(np.random.default_rng(9))
    p = tmp_path / "o.txt"
    X.data[3] = np.nan
    with pytest.raises(ValueError, match="X must hold finite values, got NaN or inf"):
        F.write_xc_bow(p, X, Y)
    with pytest.raises(ValueError, match=r"same number of rows, got 60 and 59"):
        F.write_xc_bow(p, X, Y[:59])
    with pytest.raises(TypeError, match="M must be a scipy sparse matrix, got ndarray"):
        F.write_sparse_text(p, np.zeros((2, 2)))
    assert not p.exists() and os.listdir(tmp_path) == []


def test_writer_canonicalises_unsorted_duplicates(tmp_path):
    X = sp.csr_matrix((np.array([1.0, 2.0, 3.0], np.float32), [3, 1, 3], [0, 3]), shape=(1, 4))
    X.has_canonical_format = False
    Y = sp.csr_matrix((np.array([1.0, 0.0], np.float32), [2, 0], [0, 2]), shape=(1, 3))
    p = tmp_path / "o.txt"
    F.write_xc_bow(p, X, Y)
    assert p.read_text() == "1 4 3\n2 1:2 3:4\n"
