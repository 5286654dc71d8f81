"""Bring your own data: every layout, the conversion cache, the registry-name check, bad input."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import numpy as np
import pytest
import scipy.sparse as sp
from _helpers import TOPICS, planted_matrices, planted_text, tsv_folder, write_tsv

from xmr.cli.main import main
from xmr.data.formats import write_npz, write_sparse_text, write_xc_bow
from xmr.data.loaders import load_dataset
from xmr.data.sources import import_dataset
from xmr.errors import FormatError, MetadataMismatchError



def _same(A, B):
    A, B = sp.csr_matrix(A), sp.csr_matrix(B)
    assert A.shape == B.shape
    assert abs(A - B).max() == 0 if A.nnz or B.nnz else True


@pytest.fixture
def mats():
    return planted_matrices()


def _xc(folder: Path, m) -> Path:
    folder.mkdir(parents=True)
    write_xc_bow(folder / "train.txt", m["X_trn"], m["Y_trn"])
    write_xc_bow(folder / "test.txt", m["X_tst"], m["Y_tst"])
    return folder


def _check(ds, m, name):
    assert ds.name == name
    for k in ("X_trn", "Y_trn", "X_tst", "Y_tst"):
        _same(getattr(ds, k), m[k])
    assert (ds.prop_a, ds.prop_b) == (0.55, 1.5)


def _no_leftovers(root: Path):
    imported = root / "imported"
    if imported.exists():
        assert [p.name for p in imported.iterdir() if p.name.startswith(".")] == []


# ------------------------------------------------------------------------------- each layout

def test_xc_folder(tmp_path, mats):
    src = _xc(tmp_path / "mine", mats)
    (src / "labels.txt").write_text("".join(f"lab{j}\n" for j in range(12)))
    ds = load_dataset(str(src), root=tmp_path / "root")
    _check(ds, mats, "mine")
    assert ds.label_names == [f"lab{j}" for j in range(12)]
    assert ds.info["format"] == "xc" and set(ds.info["source_sha256"]) == {"train.txt", "test.txt",
                                                                           "labels.txt"}


def test_sparse_folder(tmp_path, mats):
    src = tmp_path / "sp"
    src.mkdir()
    for pre, s in (("trn", "trn"), ("tst", "tst")):
        write_sparse_text(src / f"{pre}_X_Xf.txt", mats[f"X_{s}"])
        write_sparse_text(src / f"{pre}_X_Y.txt", mats[f"Y_{s}"])
    _check(load_dataset(str(src), root=tmp_path / "root"), mats, "sp")


def test_npz_folder_with_names_and_filters(tmp_path, mats):
    src = tmp_path / "npz"
    src.mkdir()
    for k, v in mats.items():
        write_npz(src / f"{k}.npz", v)
    (src / "labels.txt").write_text("".join(f"n{j}\n" for j in range(12)))
    (src / "filter_labels_test.txt").write_text("0 3\n2 5\n")
    ds = load_dataset(str(src), root=tmp_path / "root")
    _check(ds, mats, "npz")
    assert ds.label_names[3] == "n3"
    assert ds.filter_pairs.tolist() == [[0, 3], [2, 5]]


def test_tsv_folder_keeps_names_and_fits_tfidf_on_train_only(tmp_path):
    from sklearn.feature_extraction.text import TfidfVectorizer

    src = tsv_folder(tmp_path / "text", n=100)
    ds = load_dataset(str(src), root=tmp_path / "root")
    rows = planted_text(100)
    assert ds.label_names == sorted({n for _, ls in rows[:80] for n in ls})
    assert ds.X_trn.shape[0] == 80 and ds.X_tst.shape[0] == 20
    ref = TfidfVectorizer(sublinear_tf=True, min_df=1, dtype=np.float32)
    X = ref.fit_transform([t for t, _ in rows[:80]])
    _same(ds.X_trn, X)
    _same(ds.X_tst, ref.transform([t for t, _ in rows[80:]]))
    j = ds.label_names.index(rows[0][1][0])
    assert ds.Y_trn[0, j] == 1 and ds.Y_trn[0].nnz == len(rows[0][1])
    # the saved vectorizer (JSON + npy, no pickle) featurizes new text exactly as the fitted one
    from xmr.data.text import TextVectorizer

    vec = TextVectorizer.load(ds.info["vectorizer_dir"])
    q = ["w01 w02 unseen", "w39"]
    _same(vec.transform(q), ref.transform(q))


def test_min_df_is_configurable(tmp_path):
    src = tsv_folder(tmp_path / "text", n=100)
    d1 = load_dataset(str(src), root=tmp_path / "root", min_df=1).num_features
    d8 = load_dataset(str(src), root=tmp_path / "root", min_df=8).num_features
    assert 0 < d8 < d1
    with pytest.raises(FormatError, match=r"train.tsv: expected training texts with words that "
                                          r"occur in at least min_df=1000 points"):
        load_dataset(str(src), root=tmp_path / "root", min_df=1000)


def test_lf_folder(tmp_path):
    src = tmp_path / "lf"
    src.mkdir()

    def write(name, recs):
        with gzip.open(src / name, "wt", encoding="utf-8") as f:
            for r in recs:
                f.write(json.dumps(r) + "\n")

    write("trn.json.gz", [{"uid": i, "title": f"alpha beta{i % 3}", "target_ind": [i % 3]}
                          for i in range(9)])
    write("tst.json.gz", [{"uid": 0, "title": "beta1", "target_ind": [1, 2]}])
    write("lbl.json.gz", [{"uid": j, "title": f"label {j}"} for j in range(3)])
    (src / "filter_labels_test.txt").write_text("0 2\n")
    ds = load_dataset(str(src), root=tmp_path / "root")
    assert ds.label_names == ["label 0", "label 1", "label 2"]
    assert ds.Y_trn.shape == (9, 3) and ds.Y_tst.toarray().tolist() == [[0, 1, 1]]
    assert ds.filter_pairs.tolist() == [[0, 2]]
    assert "vectorizer_dir" in ds.info


def test_prepared_folder_is_read_directly(tmp_path, mats):
    out = import_dataset(_xc(tmp_path / "src", mats), tmp_path / "prepared", name="mine")
    ds = load_dataset(str(out), root=tmp_path / "root")
    _check(ds, mats, "mine")
    assert not (tmp_path / "root").exists()  # nothing converted: it is already canonical


def test_single_files_are_split_by_seed(tmp_path, mats):
    from xmr.data.debian import split_indices

    X = sp.vstack([mats["X_trn"], mats["X_tst"]]).tocsr()
    Y = sp.vstack([mats["Y_trn"], mats["Y_tst"]]).tocsr()
    write_xc_bow(tmp_path / "all.txt", X, Y)
    ds = load_dataset(str(tmp_path / "all.txt"), root=tmp_path / "root", test_fraction=0.3, seed=4)
    trn, tst = split_indices(X.shape[0], 0.3, 4)
    _same(ds.X_trn, X[trn])
    _same(ds.Y_tst, Y[tst])
    rows = planted_text(50)
    write_tsv(tmp_path / "all.tsv", rows)
    ds = load_dataset(str(tmp_path / "all.tsv"), root=tmp_path / "root", test_fraction=0.2, seed=1)
    trn, tst = split_indices(50, 0.2, 1)
    assert ds.X_trn.shape[0] == 40 and ds.Y_tst.shape[0] == 10
    assert ds.label_names == sorted({n for _, ls in rows for n in ls})
    j = ds.label_names.index(rows[tst[0]][1][0])
    assert ds.Y_tst[0, j] == 1


def test_propensity_constants_come_from_options_not_the_name(tmp_path, mats):
    src = _xc(tmp_path / "Amazon-like", mats)
    ds = load_dataset(str(src), root=tmp_path / "root", prop_a=0.6, prop_b=2.6)
    assert (ds.prop_a, ds.prop_b) == (0.6, 2.6)
    out = import_dataset(src, tmp_path / "imp", options=_opts(prop_a=0.5, prop_b=0.4))
    assert json.loads((out / "meta.json").read_text())["prop_a"] == 0.5
    assert (load_dataset(str(out)).prop_a, load_dataset(str(out)).prop_b) == (0.5, 0.4)


def _opts(**kw):
    from xmr.data.sources import Options

    return Options(**kw)


# ------------------------------------------------------------------------------- the cache

def test_changed_source_is_converted_again(tmp_path, mats):
    src = _xc(tmp_path / "mine", mats)
    root = tmp_path / "root"
    ds = load_dataset(str(src), root=root)
    folder = Path(ds.info["folder"])
    stamp = (folder / "meta.json").stat().st_mtime_ns
    again = load_dataset(str(src), root=root)  # unchanged: the cache is used as it is
    assert again.info["folder"] == str(folder)
    assert (folder / "meta.json").stat().st_mtime_ns == stamp
    # change the source: the next load must see the new data, never the stale copy
    Y = mats["Y_tst"].tolil()
    Y[0, :] = 0
    Y[0, 11] = 1
    write_xc_bow(src / "test.txt", mats["X_tst"], Y.tocsr())
    fresh = load_dataset(str(src), root=root)
    assert fresh.info["folder"] == str(folder)
    assert fresh.Y_tst[0].indices.tolist() == [11]
    _same(fresh.Y_tst, Y)
    # a file appearing (label names) is a change too
    (src / "labels.txt").write_text("".join(f"x{j}\n" for j in range(12)))
    assert load_dataset(str(src), root=root).label_names[0] == "x0"
    _no_leftovers(root)


def test_failed_conversion_leaves_nothing(tmp_path, mats):
    src = _xc(tmp_path / "mine", mats)
    root = tmp_path / "root"
    good = load_dataset(str(src), root=root)
    (src / "test.txt").write_text("2 50 12\n1,2 3:1\n99 1:1\n")
    with pytest.raises(FormatError):
        load_dataset(str(src), root=root)
    _no_leftovers(root)
    # the stale copy is not picked up either: the source still does not load
    with pytest.raises(FormatError):
        load_dataset(str(src), root=root)
    assert good.X_trn.shape == (120, 50)


# ------------------------------------------------------------------------------- registry names

def test_folder_named_after_a_benchmark_is_checked(tmp_path, mats):
    src = _xc(tmp_path / "EURLex-4K", mats)
    with pytest.raises(MetadataMismatchError) as e:
        load_dataset(str(src), root=tmp_path / "root")
    assert str(e.value) == (
        f"{src} is named after the registered benchmark EURLex-4K but does not match its "
        "published statistics: N_trn=120 (published 15539), N_tst=30 (published 3809), "
        "L=12 (published 3993), D=50 (published 5000); rename the folder (or import it with "
        "`xmr data import SRC --out DIR --name NAME`) if it is another dataset")
    _no_leftovers(tmp_path / "root")
    # the way out the message names: import it under another name
    out = import_dataset(src, tmp_path / "out", name="mine")
    _check(load_dataset(str(out)), mats, "mine")
    # ... but not into a folder named after another benchmark
    with pytest.raises(MetadataMismatchError, match="Wiki10-31K"):
        import_dataset(src, tmp_path / "Wiki10-31K", name="mine")
    assert not (tmp_path / "Wiki10-31K").exists()


def test_folder_that_matches_its_benchmark_gets_its_constants(tmp_path, monkeypatch):
    """A folder whose statistics match the registry entry it is named after is that benchmark."""
    from xmr.data import registry

    m = planted_matrices(n_trn=40, n_tst=10, D=20, L=6)
    info = registry.get_dataset("Amazon-670K")
    fake = registry.DatasetStats(40, 10, 20, 6, 1.0, 1.0)
    monkeypatch.setitem(registry._BY_KEY, "amazon-670k",
                        registry.DatasetInfo(**{**info.__dict__, "stats": fake}))
    ds = load_dataset(str(_xc(tmp_path / "Amazon-670K", m)), root=tmp_path / "root")
    assert (ds.name, ds.prop_a, ds.prop_b) == ("Amazon-670K", 0.6, 2.6)


def test_import_as_a_benchmark_name_is_refused(tmp_path, mats):
    _xc(tmp_path / "mine", mats)
    with pytest.raises(MetadataMismatchError, match="Wiki10-31K"):
        import_dataset(tmp_path / "mine", tmp_path / "x", name="wiki10-31k")
    assert not (tmp_path / "x").exists()


# ------------------------------------------------------------------------------- bad input

def _err(tmp_path, capsys, argv):
    assert main(argv) == 1
    return capsys.readouterr().err.strip()


def test_unknown_layout_lists_what_was_looked_for(tmp_path, capsys):
    d = tmp_path / "odd"
    d.mkdir()
    (d / "data.csv").write_text("x")
    (d / "train.txt").write_text("x")
    assert _err(tmp_path, capsys, ["data", "info", str(d)]) == (
        f"xmr data: error: {d}: expected one of the dataset layouts: meta.json + X_trn.npz + "
        "Y_trn.npz + X_tst.npz + Y_tst.npz (prepared), X_trn.npz + Y_trn.npz + X_tst.npz + "
        "Y_tst.npz (npz), train.txt + test.txt (xc), trn_X_Xf.txt + trn_X_Y.txt + tst_X_Xf.txt + "
        "tst_X_Y.txt (sparse), train.tsv + test.tsv (tsv), trn.json.gz + tst.json.gz (lf), "
        "got the files data.csv, train.txt")


def _tsv(d: Path, train: str, test: str) -> Path:
    d.mkdir()
    (d / "train.tsv").write_text(train)
    (d / "test.tsv").write_text(test)
    return d


@pytest.mark.parametrize("train,test,where,msg", [
    ("a b\tx\nc d no tab here\n", "a\tx\n", "train.tsv, line 2",
     "expected 'text<TAB>label,label,...', got no tab in 'c d no tab here'"),
    ("a b\tx\nc d\t , \n", "a\tx\n", "train.tsv, line 2",
     "expected at least one label name after the tab, got an empty label list in 'c d\\t , '"),
    ("hello world\tx\nfoo bar\ty\n", "hello\tx\n\nfoo\ty,zz\n", "test.tsv, line 3",
     "expected label names that occur in the training file train.tsv, got 'zz', which appears "
     "only in the test file"),
])
def test_bad_tsv_is_one_line_naming_file_and_line(tmp_path, capsys, train, test, where, msg):
    d = _tsv(tmp_path / "t", train, test)
    root = tmp_path / "root"
    err = _err(tmp_path, capsys, ["train", "--set", f"data.dataset={d}", "--set",
                                  f"data.root={root}", "--out", str(tmp_path / "run")])
    assert err == f"xmr train: error: {d}/{where}: {msg}"
    _no_leftovers(root)
    assert not (tmp_path / "run").exists()


def test_feature_widths_that_differ(tmp_path, capsys, mats):
    d = tmp_path / "w"
    d.mkdir()
    write_xc_bow(d / "train.txt", mats["X_trn"], mats["Y_trn"])
    X = sp.csr_matrix((mats["X_tst"].data, mats["X_tst"].indices, mats["X_tst"].indptr),
                      shape=(30, 60))
    write_xc_bow(d / "test.txt", X, mats["Y_tst"])
    assert _err(tmp_path, capsys, ["data", "info", str(d), "--root", str(tmp_path / "r")]) == (
        f"xmr data: error: {d}/test.txt, line 1: expected 50 features as in train.txt, got 60")
    n = tmp_path / "n"
    n.mkdir()
    for k, v in mats.items():
        write_npz(n / f"{k}.npz", v if k != "X_tst" else X)
    assert _err(tmp_path, capsys, ["data", "info", str(n), "--root", str(tmp_path / "r")]) == (
        f"xmr data: error: {n}/X_tst.npz: expected 50 features as in X_trn.npz, got 60")


def test_unknown_name_says_name_or_path(capsys):
    err = _err(None, capsys, ["data", "info", "./no/such/folder"])
    assert err == "xmr data: error: no/such/folder: expected a dataset folder or file, got no such file or folder"


# ------------------------------------------------------------------------------- CLI

def test_data_import_and_info(tmp_path, capsys):
    src = tsv_folder(tmp_path / "mydata", n=100)
    out = tmp_path / "prepared"
    assert main(["data", "import", str(src), "--out", str(out), "--format", "tsv"]) == 0
    assert capsys.readouterr().out.strip() == (
        f"mydata imported into {out}: N_trn=80 N_tst=20 D=40 L=10")
    assert (out / "vectorizer" / "vectorizer.json").is_file()
    assert main(["data", "info", str(out), "--json"]) == 0
    st = json.loads(capsys.readouterr().out)
    assert (st["n_train"], st["n_test"], st["num_features"], st["num_labels"]) == (80, 20, 40, 10)
    freq = np.asarray(load_dataset(str(out)).Y_trn.sum(0)).ravel()
    assert st["labels_per_point"] == pytest.approx(freq.sum() / 80)
    assert st["points_per_label"] == pytest.approx(freq.sum() / 10)
    assert st["frac_labels_lt5"] == 0.0
    assert sum(st["label_frequency_tail"].values()) == pytest.approx(1.0)
    assert st["label_frequency_tail"]["10-99"] == pytest.approx(((freq >= 10) & (freq <= 99)).mean())
    assert st["label_frequency_tail"]["100-999"] == 0.0
    assert st["top_labels"][0]["train_points"] == int(freq.max())
    assert st["top_labels"][0]["name"] == TOPICS[int(np.argmax(freq))]
    assert main(["data", "info", str(out)]) == 0
    text = capsys.readouterr().out
    assert "N (train / test)     : 80 / 20" in text and "labels with < 5 pos. : 0.0 %" in text
    # an existing folder that is not a prepared dataset is never overwritten
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "keep.txt").write_text("mine")
    assert _err(tmp_path, capsys, ["data", "import", str(src), "--out", str(tmp_path / "busy")]) == (
        f"xmr data: error: {tmp_path / 'busy'} exists and is not an xmr prepared dataset folder; "
        "choose another --out")
    assert (tmp_path / "busy" / "keep.txt").read_text() == "mine"
