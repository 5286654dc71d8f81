"""`xmr index build|search` end to end: files in, files out, equal to the Python API."""

import numpy as np
import pytest

pytest.importorskip("faiss")

from xmr.cli.main import main  # noqa: E402
from xmr.data.planted import planted_labels, planted_queries  # noqa: E402
from xmr.eval.recall import knn_recall  # noqa: E402
from xmr.index import LabelIndex, exact_search  # noqa: E402


pytestmark = pytest.mark.usefixtures("one_faiss_thread")


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
    assert capsys.readouterr().err == "xmr index: error: --set: expected key=value, got 'nprobe'\n"
    # --set fills an IndexConfig: unknown names and wrong types are refused before any build
    assert main(["index", "build", "--embeddings", str(tmp / "labels.npy"), "--out",
                 str(tmp / "x"), "--set", "nprob=9"]) == 1
    assert capsys.readouterr().err == (
        "xmr index: error: unknown config key 'nprob'; valid keys here: ['efConstruction', "
        "'efSearch', 'factory', 'ht', 'k_factor', 'max_codes', 'metric', 'mips', 'nlist', "
        "'nprobe', 'seed', 'shards', 'train_points_per_list', 'use_gpu']\n")
    assert main(["index", "build", "--embeddings", str(tmp / "labels.npy"), "--out",
                 str(tmp / "x"), "--set", "efSearch=wide"]) == 1
    assert capsys.readouterr().err == ("xmr index: error: config key 'efSearch': expected an "
                                       "integer, got 'wide'\n")
    assert main(["index", "build", "--embeddings", str(tmp / "labels.npy"), "--out",
                 str(tmp / "x"), "--set", "nprobe=0"]) == 1
    assert capsys.readouterr().err == ("xmr index: error: nprobe: expected an integer >= 1 or "
                                       "None, got 0\n")
    assert main(["index", "search", "--index", str(tmp / "idx"), "--queries", str(tmp / "q.npy"),
                 "--set", "factory=Flat"]) == 1
    assert capsys.readouterr().err == (
        "xmr index: error: --set: expected a search parameter (nprobe, efSearch, ht, k_factor, "
        "max_codes), got 'factory', an option of `xmr index build`\n")
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


def _popularity_table(L=10000, d=32, seed=0):
    """Planted labels whose norms (0.85-2.7) are carried by one shared "popularity"
    direction m that the queries share too, as in a trained softmax table (head labels long,
    every query leaning towards them). Queries sit near random label directions."""
    U = planted_labels(L, d, num_centres=256, seed=seed)
    U /= np.linalg.norm(U, axis=1, keepdims=True)
    rng = np.random.default_rng(seed + 10)
    m = rng.standard_normal(d).astype(np.float32)
    m /= np.linalg.norm(m)
    W = (U + 2.2 * rng.power(0.3, L).astype(np.float32)[:, None] * m).astype(np.float32)
    Q, _ = planted_queries(U, 200, noise=1.0, seed=seed + 1)
    return W, (Q + 0.5 * m).astype(np.float32)


def test_build_from_model_uses_mips_by_default(tmp_path, capsys):
    """`xmr index build --model` (HNSW32) recovers the exact inner-product top 10 on a table with
    norm-carrying directions; `--no-mips` (raw inner product) does not. Measured with one FAISS
    thread: raw 0.84, MIPS 0.998 (the debian-deps model: 0.80 vs 0.97). Caveat: on planted data
    whose norms vary independently of direction the raw-IP graph is as good or better."""
    torch = pytest.importorskip("torch")
    W, Q = _popularity_table()
    norms = np.linalg.norm(W, axis=1)
    assert 0.8 < norms.min() < 0.95 and 2.5 < norms.max() < 3.1
    (tmp_path / "model").mkdir()
    torch.save({"label_table.weight": torch.from_numpy(W)}, tmp_path / "model" / "weights.pt")
    np.save(tmp_path / "q.npy", Q)
    _, exact = exact_search(W, Q, 10)
    recall = {}
    capsys.readouterr()
    for name, flags in (("mips", []), ("raw", ["--no-mips"])):
        assert main(["index", "build", "--model", str(tmp_path / "model"), "--out",
                     str(tmp_path / name), "--gpu", "no", *flags]) == 0
        out = capsys.readouterr().out
        assert out.startswith("built HNSW32 index (MIPS->L2) over 10000 labels of dim 32 "
                              if name == "mips" else "built HNSW32 index over 10000 labels")
        assert main(["index", "search", "--index", str(tmp_path / name), "--queries",
                     str(tmp_path / "q.npy"), "-k", "10",
                     "--out", str(tmp_path / f"{name}.npz")]) == 0
        capsys.readouterr()
        got = np.load(tmp_path / f"{name}.npz")
        recall[name] = knn_recall(got["ids"], exact)
        if name == "mips":  # scores are inner products of the returned labels, also after load
            np.testing.assert_allclose(got["scores"], np.einsum("nd,nkd->nk", Q, W[got["ids"]]),
                                       rtol=1e-4, atol=1e-4)
    assert LabelIndex.load(tmp_path / "mips").mips and not LabelIndex.load(tmp_path / "raw").mips
    assert recall["mips"] >= 0.95, recall
    assert recall["mips"] - recall["raw"] >= 0.05, recall


def test_mips_flag_errors(files, capsys):
    tmp, W, Q = files
    assert main(["index", "build", "--embeddings", str(tmp / "labels.npy"), "--out",
                 str(tmp / "x"), "--mips", "--metric", "l2"]) == 1
    assert capsys.readouterr().err == ("xmr index: error: mips: expected metric 'ip' (the "
                                       "reduction is for inner-product search), got metric "
                                       "'l2'\n")
    assert main(["index", "build", "--embeddings", str(tmp / "labels.npy"), "--out",
                 str(tmp / "x"), "--mips", "--factory", "Flat"]) == 0
    assert LabelIndex.load(tmp / "x").mips
