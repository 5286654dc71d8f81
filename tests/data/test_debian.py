"""Tests of the embedded dataset debian-deps (xmr.data.debian) and of its build script."""

from __future__ import annotations

import gzip
import hashlib
import importlib.util
import json
import lzma
import shutil
from importlib import resources
from pathlib import Path

import numpy as np
import pytest

from xmr.data.debian import (
    CHECKSUM_NAME,
    SNAPSHOT_NAME,
    load_debian_deps,
    load_debian_raw,
    parse_depends,
    point_labels,
    split_indices,
)
from xmr.errors import ChecksumError, FormatError

REPO = Path(__file__).resolve().parents[2]


def _packaged(name: str) -> Path:
    return Path(str(resources.files("xmr.data").joinpath("snapshots", name)))


def _write_snapshot(folder: Path, lines) -> Path:
    """A small snapshot + checksum file in ``folder`` (lines: dicts or raw strings)."""
    text = "".join((ln if isinstance(ln, str) else json.dumps(ln)) + "\n" for ln in lines)
    blob = lzma.compress(text.encode())
    path = folder / SNAPSHOT_NAME
    path.write_bytes(blob)
    (folder / CHECKSUM_NAME).write_text(f"{hashlib.sha256(blob).hexdigest()}  {SNAPSHOT_NAME}\n")
    return path


def _rec(package, description, depends="", pre_depends=""):
    return {"package": package, "description": description, "depends": depends, "pre_depends": pre_depends}


@pytest.fixture(scope="module")
def raw():
    return load_debian_raw()


@pytest.fixture(scope="module")
def ds():
    return load_debian_deps(seed=0)


# ----------------------------------------------------------------------------- parse_depends


@pytest.mark.parametrize(
    "field, names",
    [
        ("libc6 (>= 2.34)", ["libc6"]),
        ("debconf (>= 0.5) | debconf-2.0", ["debconf", "debconf-2.0"]),
        ("python3:any", ["python3"]),
        ("python3:any (>= 3.11~)", ["python3"]),
        ("libfoo1:amd64 (= 1.2-3)", ["libfoo1"]),
        ("foo [amd64]", ["foo"]),
        ("foo [!i386 !armel] (>= 2)", ["foo"]),
        ("bar <!nocheck>", ["bar"]),
        ("bar <!nocheck> <stage1>", ["bar"]),
        ("", []),
        ("   ", []),
        ("libc6 (>= 2.34), libc6 (<< 2.37), zlib1g|libc6", ["libc6", "zlib1g"]),
        ("a,\n b |\tc (>= 1:2.0-1~bpo1)", ["a", "b", "c"]),
        ("default-mta | mail-transport-agent, perl:any", ["default-mta", "mail-transport-agent", "perl"]),
    ],
)
def test_parse_depends(field, names):
    assert parse_depends(field) == names


def test_parse_depends_rejects_non_str():
    with pytest.raises(TypeError, match=r"^parse_depends: expected a str field, got NoneType$"):
        parse_depends(None)


# ----------------------------------------------------------------------------- snapshot / checksum


def test_packaged_snapshot_checksum_and_fields(raw):
    recorded = _packaged(CHECKSUM_NAME).read_text().split()[0]
    assert hashlib.sha256(_packaged(SNAPSHOT_NAME).read_bytes()).hexdigest() == recorded
    assert 54_000 <= len(raw) <= 58_000
    names = [r["package"] for r in raw]
    assert names == sorted(names) and len(set(names)) == len(names)
    assert all(set(r) == {"package", "description", "depends", "pre_depends"} for r in raw)
    assert all(r["depends"] or r["pre_depends"] for r in raw)
    # Long descriptions came from Translation-en: nearly every point has one.
    assert sum("\n" in r["description"] for r in raw) > 0.99 * len(raw)
    by_name = {r["package"]: r for r in raw}
    assert "libc6" in parse_depends(by_name["bash"]["depends"] + "," + by_name["bash"]["pre_depends"])


def test_corrupted_copy_raises_exact_message(tmp_path):
    snap = tmp_path / SNAPSHOT_NAME
    shutil.copyfile(_packaged(SNAPSHOT_NAME), snap)
    shutil.copyfile(_packaged(CHECKSUM_NAME), tmp_path / CHECKSUM_NAME)
    assert len(load_debian_raw(snap)) > 50_000  # the intact copy loads
    blob = bytearray(snap.read_bytes())
    blob[len(blob) // 2] ^= 0xFF
    snap.write_bytes(bytes(blob))
    expected = _packaged(CHECKSUM_NAME).read_text().split()[0]
    got = hashlib.sha256(bytes(blob)).hexdigest()
    with pytest.raises(ChecksumError) as exc:
        load_debian_raw(snap)
    assert str(exc.value) == f"{snap}: sha256 mismatch: expected {expected}, got {got}"


def test_missing_checksum_file(tmp_path):
    snap = tmp_path / SNAPSHOT_NAME
    snap.write_bytes(lzma.compress(b""))
    with pytest.raises(ChecksumError) as exc:
        load_debian_raw(snap)
    assert str(exc.value) == (
        f"{snap}: no recorded sha256 (expected {tmp_path / CHECKSUM_NAME}); pass sha256= explicitly"
    )
    assert load_debian_raw(snap, sha256=hashlib.sha256(snap.read_bytes()).hexdigest()) == []


def test_bad_json_line_names_file_and_line(tmp_path):
    snap = _write_snapshot(tmp_path, [_rec("a", "x", "b"), '{"package": "c", "description": 3}'])
    with pytest.raises(FormatError) as exc:
        load_debian_raw(snap)
    assert str(exc.value) == (
        f"{snap}, line 2: expected a JSON object with string fields package, description, depends, "
        "pre_depends, got '{\"package\": \"c\", \"description\": 3}'"
    )


# ----------------------------------------------------------------------------- the split


def test_split_is_seeded_disjoint_and_complete():
    trn, tst = split_indices(1000, 0.2, seed=0)
    assert len(tst) == 200 and len(trn) == 800
    assert np.array_equal(np.sort(np.concatenate([trn, tst])), np.arange(1000))
    perm = np.random.default_rng(0).permutation(1000)  # the documented construction
    assert np.array_equal(tst, np.sort(perm[:200]))
    trn2, tst2 = split_indices(1000, 0.2, seed=0)
    assert np.array_equal(tst, tst2) and np.array_equal(trn, trn2)
    assert not np.array_equal(tst, split_indices(1000, 0.2, seed=1)[1])


@pytest.mark.parametrize("bad", [0.0, 1.0, -0.1, 1.5])
def test_split_rejects_bad_fraction(bad):
    with pytest.raises(ValueError, match=r"^test_fraction: expected a float in \(0, 1\), got "):
        split_indices(10, bad)


# ----------------------------------------------------------------------------- small snapshot


def _small_snapshot(tmp_path):
    recs = [
        _rec(f"pkg{i:02d}", f"tool number {i}\nshared words alpha{i % 3} unique{i}", f"lib{i % 4} (>= 1)",
             "dpkg (>= 1.15)" if i % 5 == 0 else "")
        for i in range(30)
    ]
    return recs, _write_snapshot(tmp_path, recs)


def test_small_snapshot_dataset_matches_raw(tmp_path):
    recs, snap = _small_snapshot(tmp_path)
    ds = load_debian_deps(test_fraction=0.2, seed=3, min_df=1, path=snap)
    again = load_debian_deps(test_fraction=0.2, seed=3, min_df=1, path=snap)
    assert ds.label_names == ["dpkg", "lib0", "lib1", "lib2", "lib3"]
    trn, tst = split_indices(30, 0.2, 3)
    assert ds.info["packages_tst"] == [recs[i]["package"] for i in tst]
    for Y, rows in ((ds.Y_trn, trn), (ds.Y_tst, tst)):
        for r, i in enumerate(rows):
            got = {ds.label_names[j] for j in Y[r].indices}
            assert got == set(point_labels(recs[i]))
    # Same seed, same matrices; the vectorizer saw the training texts only.
    assert (ds.X_trn != again.X_trn).nnz == 0 and (ds.X_tst != again.X_tst).nnz == 0
    vocab = ds.info["vectorizer"].vocabulary_
    assert all(f"unique{i}" in vocab for i in trn) and not any(f"unique{i}" in vocab for i in tst)
    assert ds.X_trn.dtype == np.float32 and ds.X_trn.format == "csr"
    assert (ds.prop_a, ds.prop_b) == (0.55, 1.5)


# ----------------------------------------------------------------------------- the real dataset


def test_real_dataset_scale(ds):
    s = ds.stats()
    n = s["n_train"] + s["n_test"]
    assert 54_000 <= n <= 58_000  # 55,848 in the bookworm 12.15 snapshot
    assert s["n_test"] == round(0.2 * n)
    assert 33_000 <= s["num_labels"] <= 38_000  # 35,437
    assert 4.6 <= s["labels_per_point"] <= 5.5  # 5.06
    assert 0.75 <= s["frac_labels_lt5"] <= 0.85  # 0.80: power-law label frequencies
    assert 20_000 <= s["num_features"] <= 60_000  # 35.8k with min_df=2
    assert len(ds.label_names) == ds.num_labels and list(ds.label_names) == sorted(ds.label_names)
    for X in (ds.X_trn, ds.X_tst):
        assert X.dtype == np.float32 and X.format == "csr"
    assert ds.Y_trn.dtype == np.float32 and ds.Y_trn.shape[1] == ds.Y_tst.shape[1]
    assert ds.X_trn.shape[1] == ds.X_tst.shape[1]
    # Every row has at least one label; labels are binary.
    assert np.diff(ds.Y_trn.indptr).min() >= 1 and np.diff(ds.Y_tst.indptr).min() >= 1
    assert set(np.unique(ds.Y_trn.data)) == {1.0}
    # libc6 is the most frequent dependency.
    freq = np.asarray(ds.Y_trn.sum(0)).ravel()
    assert ds.label_names[int(freq.argmax())] == "libc6"


def test_real_split_reproducible_and_disjoint(ds, raw):
    trn_names, tst_names = ds.info["packages_trn"], ds.info["packages_tst"]
    assert not set(trn_names) & set(tst_names)
    assert len(trn_names) + len(tst_names) == len(raw)
    trn, tst = split_indices(len(raw), 0.2, seed=0)
    assert tst_names == [raw[i]["package"] for i in tst]
    assert trn_names == [raw[i]["package"] for i in trn]
    other = split_indices(len(raw), 0.2, seed=1)[1]
    assert len(set(tst) & set(other)) < 0.3 * len(tst)  # about 20% overlap for independent splits
    # Rows carry their own package's labels.
    by_name = {r["package"]: r for r in raw}
    for r in range(0, len(tst_names), 997):
        got = {ds.label_names[j] for j in ds.Y_tst[r].indices}
        assert got == set(point_labels(by_name[tst_names[r]]))


# ----------------------------------------------------------------------------- build script


def _build_module():
    spec = importlib.util.spec_from_file_location("build_debian_deps", REPO / "data_scripts" / "build_debian_deps.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


PACKAGES = """\
Package: alpha
Version: 1.0-1
Architecture: amd64
Depends: libc6 (>= 2.34), debconf (>= 0.5) | debconf-2.0
Pre-Depends: dpkg (>= 1.15.6~)
Description: first tool
Description-md5: 11111111111111111111111111111111

Package: alpha
Version: 1.0~rc1-1
Architecture: amd64
Depends: oldlib
Description: first tool (old)
Description-md5: 22222222222222222222222222222222

Package: beta
Version: 2.0
Architecture: all
Depends: python3:any,
 python3-gamma
Description: second tool
Description-md5: 33333333333333333333333333333333

Package: gamma
Version: 3
Architecture: amd64
Depends: libgamma0 [amd64] <!nocheck>
Description: third tool
Description-md5: 55555555555555555555555555555555

Package: delta
Version: 1
Architecture: amd64
Description: has no dependencies
Description-md5: 44444444444444444444444444444444

Package: epsilon
Version: 1
Architecture: i386
Depends: libc6
Description: other architecture
"""

TRANSLATIONS = """\
Package: alpha
Description-md5: 11111111111111111111111111111111
Description-en: first tool
 Alpha does one thing.
 .
 And does it well.

Package: beta-renamed
Description-md5: 33333333333333333333333333333333
Description-en: second tool
 Beta long text.

Package: gamma
Description-md5: 66666666666666666666666666666666
Description-en: third tool
 Matched by package name.
"""


def test_build_script_from_files(tmp_path, capsys):
    mod = _build_module()
    pk = tmp_path / "Packages.xz"
    pk.write_bytes(lzma.compress(PACKAGES.encode()))
    tr = tmp_path / "Translation-en.gz"
    tr.write_bytes(gzip.compress(TRANSLATIONS.encode()))
    out = tmp_path / "snap"
    assert mod.main(["--packages", str(pk), "--translations", str(tr), "--out", str(out)]) == 0
    assert "points): 3" in capsys.readouterr().out
    recs = load_debian_raw(out / SNAPSHOT_NAME)
    assert recs == [
        _rec("alpha", "first tool\nAlpha does one thing.\n\nAnd does it well.",
             "libc6 (>= 2.34), debconf (>= 0.5) | debconf-2.0", "dpkg (>= 1.15.6~)"),
        _rec("beta", "second tool\nBeta long text.", "python3:any, python3-gamma"),
        _rec("gamma", "third tool\nMatched by package name.", "libgamma0 [amd64] <!nocheck>"),
    ]
    assert [point_labels(r) for r in recs] == [
        ["dpkg", "libc6", "debconf", "debconf-2.0"], ["python3", "python3-gamma"], ["libgamma0"]]
    first = (out / SNAPSHOT_NAME).read_bytes()
    mod.main(["--packages", str(pk), "--translations", str(tr), "--out", str(out)])
    assert (out / SNAPSHOT_NAME).read_bytes() == first  # deterministic output


def test_build_script_rejects_bad_stanza(tmp_path):
    mod = _build_module()
    pk = tmp_path / "Packages"
    pk.write_text("Package: a\nno colon here\n")
    with pytest.raises(FormatError) as exc:
        mod.main(["--packages", str(pk), "--out", str(tmp_path / "snap")])
    assert str(exc.value) == f"{pk}, line 2: expected a 'Field: value' line, got 'no colon here'"


@pytest.mark.parametrize(
    "a, b, sign",
    [("1.0~rc1-1", "1.0-1", -1), ("1:0.1", "2.0", 1), ("6.1.0-9", "6.1.0-10", -1), ("1.0", "1.0", 0),
     ("1.0a", "1.0+", -1), ("1.01", "1.1", 0), ("2.30-1", "2.4-1", 1), ("1.0", "1.0-0", 0)],
)
def test_build_script_version_order(a, b, sign):
    mod = _build_module()
    assert mod.compare_versions(a, b) == sign
    assert mod.compare_versions(b, a) == -sign
