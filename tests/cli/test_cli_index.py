"""`xmr index build|search` end to end: files in, files out, equal to the Python API."""

import numpy as np
import pytest

pytest.importorskip("faiss")

from xmr.cli.main import main  # noqa: E402
from xmr.data.planted import planted_labels, planted_queries  # noqa: E402
from xmr.index import LabelIndex, exact_search  # noqa: E402
from xmr.utils.threads import omp_threads  # noqa: E402


@pytest.fixture(autouse=True)
def _one_faiss_thread():
    with omp_threads(1):
        yield


@pytest.fixture
def files(tmp_path):
    W = planted_labels(3000, 16, num_centres=32, seed=0)
    Q, _ = planted_queries(W, 50, seed=1)
    np.save(tmp_path / "labels.npy", W)
    np.save(tmp_path / "q.npy", Q)
    return tmp_path, W, Q


def test_build_search_equals_python_api(files, capsys):
    tmp, W, Q = files
    rc = main(["index", "build", "--embeddings", str(tmp / "labels.npy"), "--out", str(tmp / "idx"),
               "--factory", "IVF{nlist},Flat", "--set", "nprobe=9", "--shards", "2"])
    assert rc == 0
    assert "built IVF{nlist},Flat index over 3000 labels of dim 16 (2 shard(s))" in capsys.readouterr().out
    rc = main(["index", "search", "--index", str(tmp / "idx"), "--queries", str(tmp / "q.npy"),
               "-k", "7", "--out", str(tmp / "top.npz")])
    assert rc == 0
    out = capsys.readouterr().out
    assert out.startswith("searched 50 queries, k=7, in ") and out.rstrip().endswith("top.npz")
    got = np.load(tmp / "top.npz")
    index = LabelIndex.load(tmp / "idx")
    assert index.search_params == {"nprobe": 9}
    s, i = index.search(Q, 7)
    np.testing.assert_array_equal(got["ids"], i)
    np.testing.assert_array_equal(got["scores"], s)
    # Same as building in Python with the same settings (IVF training is seeded).
    s2, i2 = LabelIndex.build(W, factory="IVF{nlist},Flat", shards=2, nprobe=9).search(Q, 7)
    np.testing.assert_array_equal(got["ids"], i2)
    # search --set overrides the saved search parameters.
    rc = main(["index", "search", "--index", str(tmp / "idx"), "--queries", str(tmp / "q.npy"),
               "-k", "7", "--set", "nprobe=1000", "--out", str(tmp / "top2.npz")])
    assert rc == 0
    np.testing.assert_array_equal(np.load(tmp / "top2.npz")["ids"], exact_search(W, Q, 7)[1])


def test_build_from_model_dir(files, capsys):
    torch = pytest.importorskip("torch")
    tmp, W, Q = files
    (tmp / "model").mkdir()
    torch.save({"label_table.weight": torch.from_numpy(W), "encoder.weight": torch.zeros(2, 2)},
               tmp / "model" / "weights.pt")
    assert main(["index", "build", "--model", str(tmp / "model"), "--out", str(tmp / "idx"),
                 "--factory", "Flat"]) == 0
    assert main(["index", "search", "--index", str(tmp / "idx"), "--queries", str(tmp / "q.npy"),
                 "-k", "3"]) == 0
    out = capsys.readouterr().out
    _, ref = exact_search(W, Q, 3)
    assert f"  query 0: {ref[0, 0]}:" in out
    np.testing.assert_array_equal(LabelIndex.load(tmp / "idx").search(Q, 3)[1], ref)


def test_errors_are_one_line(files, capsys):
    tmp, W, Q = files
    assert main(["index", "build", "--embeddings", str(tmp / "labels.npy"), "--out",
                 str(tmp / "idx"), "--factory", "Flat"]) == 0
    capsys.readouterr()
    np.save(tmp / "q8.npy", Q[:, :8])
    assert main(["index", "search", "--index", str(tmp / "idx"), "--queries",
                 str(tmp / "q8.npy")]) == 1
    assert capsys.readouterr().err == (f"xmr index: error: index {tmp / 'idx'} was built for "
                                       f"3000 labels of dim 16; expected dim 8\n")
    assert main(["index", "build", "--embeddings", str(tmp / "none.npy"), "--out",
                 str(tmp / "x")]) == 1
    assert capsys.readouterr().err == (f"xmr index: error: {tmp / 'none.npy'}: expected a .npy "
                                       f"file of label embeddings [L, d], got no such file\n")
    assert main(["index", "build", "--embeddings", str(tmp / "labels.npy"), "--out",
                 str(tmp / "x"), "--set", "nprobe"]) == 1
    assert capsys.readouterr().err == "xmr index: error: --set: expected NAME=VALUE, got 'nprobe'\n"
    np.save(tmp / "vec.npy", np.zeros(5, np.float32))
    assert main(["index", "build", "--embeddings", str(tmp / "vec.npy"), "--out",
                 str(tmp / "x")]) == 1
    assert capsys.readouterr().err == (f"xmr index: error: {tmp / 'vec.npy'}: expected a 2-D "
                                       f"float array of label embeddings [L, d], got shape (5,) "
                                       f"dtype float32\n")
    (tmp / "m").mkdir()
    assert main(["index", "build", "--model", str(tmp / "m"), "--out", str(tmp / "x")]) == 1
    assert capsys.readouterr().err == (f"xmr index: error: {tmp / 'm' / 'weights.pt'}: expected "
                                       f"the weights.pt of a saved xmr model, got no such file\n")
    assert not (tmp / "x").exists()
