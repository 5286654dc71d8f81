"""LabelIndex and exact_search: contract, exactness, recall floors on planted data, persistence."""

import json
import subprocess
import sys

import numpy as np
import pytest

faiss = pytest.importorskip("faiss")

from xmr.errors import FormatError, MetadataMismatchError, MissingDependencyError, XMRError  # noqa: E402
from xmr.data.planted import planted_labels, planted_queries  # noqa: E402
from xmr.eval.recall import knn_recall  # noqa: E402
from xmr.index import PAD_SCORE, LabelIndex, exact_search  # noqa: E402
from xmr.utils.threads import omp_threads  # noqa: E402


pytestmark = pytest.mark.usefixtures("one_faiss_thread")


@pytest.fixture(scope="module")
def search_problem():
    """20k clustered labels (d=32, 256 overlapping clusters), 400 queries near random labels."""
    W = planted_labels(20000, 32, num_centres=256, noise=1.0, seed=0)
    Q, _ = planted_queries(W, 400, noise=0.3, seed=1)
    S, I = exact_search(W, Q, 10)
    return W, Q, S, I


def _dense_topk(W, Q, k):
    """Reference: full score matrix and a stable sort (ties by smaller label id)."""
    S = Q.astype(np.float64) @ W.astype(np.float64).T
    order = np.argsort(-S, axis=1, kind="stable")[:, :k]
    return np.take_along_axis(S, order, axis=1), order


# ---- exact_search ---------------------------------------------------------------------------

def test_exact_search_equals_dense_sort_with_ties():
    # Small integers: every dot product is exact in f32 and ties are frequent, so chunked
    # partial top-k + merge must reproduce the stable sort bit for bit.
    rng = np.random.default_rng(0)
    W = rng.integers(-2, 3, size=(503, 6)).astype(np.float32)
    Q = rng.integers(-2, 3, size=(41, 6)).astype(np.float32)
    ref_s, ref_i = _dense_topk(W, Q, 17)
    s, i = exact_search(W, Q, 17, label_chunk=37, query_chunk=8)
    np.testing.assert_array_equal(i, ref_i)
    np.testing.assert_array_equal(s, ref_s.astype(np.float32))
    assert s.dtype == np.float32 and i.dtype == np.int64


def test_exact_search_random_gaussian_and_l2():
    rng = np.random.default_rng(1)
    W = rng.standard_normal((1000, 16)).astype(np.float32)
    Q = rng.standard_normal((30, 16)).astype(np.float32)
    ref_s, ref_i = _dense_topk(W, Q, 10)
    s, i = exact_search(W, Q, 10, label_chunk=128, query_chunk=7)
    np.testing.assert_array_equal(i, ref_i)
    np.testing.assert_allclose(s, ref_s, rtol=1e-5, atol=1e-5)
    # l2: score = -||q - w||^2
    D = ((Q[:, None, :].astype(np.float64) - W[None]) ** 2).sum(-1)
    s2, i2 = exact_search(W, Q, 5, metric="l2", label_chunk=300)
    np.testing.assert_array_equal(i2, np.argsort(D, axis=1, kind="stable")[:, :5])
    np.testing.assert_allclose(s2, -np.sort(D, axis=1)[:, :5], rtol=1e-4, atol=1e-4)


def test_exact_search_pads_when_k_exceeds_labels():
    W = np.eye(3, 4, dtype=np.float32)
    Q = np.array([[1, 2, 3, 0]], dtype=np.float32)
    s, i = exact_search(W, Q, 5, label_chunk=2)
    np.testing.assert_array_equal(i, [[2, 1, 0, -1, -1]])
    np.testing.assert_array_equal(s, [[3, 2, 1, PAD_SCORE, PAD_SCORE]])


def test_exact_search_validates_inputs():
    W = np.zeros((5, 4), np.float32)
    with pytest.raises(ValueError, match=r"^Q: expected dim 4, got shape \(2, 3\)$"):
        exact_search(W, np.zeros((2, 3)), 1)
    with pytest.raises(ValueError, match=r"^k: expected an integer >= 1, got 0$"):
        exact_search(W, np.zeros((2, 4)), 0)
    with pytest.raises(ValueError, match="^W: expected finite values, got NaN or inf$"):
        exact_search(np.full((5, 4), np.nan), np.zeros((2, 4)), 1)
    with pytest.raises(ValueError, match=r"^metric: expected one of \('ip', 'l2'\), got 'cos'$"):
        exact_search(W, np.zeros((2, 4)), 1, metric="cos")


def test_knn_recall():
    assert knn_recall([[1, 2, 3]], [[3, 2, 1]]) == 1.0
    assert knn_recall([[1, 2, -1], [7, 8, 9]], [[1, 5, 6], [9, 0, 1]]) == pytest.approx(2 / 6)


# ---- the index: contract and exactness ------------------------------------------------------

def test_flat_index_equals_exact(search_problem):
    W, Q, S, I = search_problem
    s, i = LabelIndex.build(W, factory="Flat").search(Q, 10)
    assert knn_recall(i, I) >= 0.999  # identical up to float rounding at near-ties
    np.testing.assert_allclose(s, S, rtol=1e-4, atol=1e-4)
    assert s.dtype == np.float32 and i.dtype == np.int64 and i.shape == (400, 10)


@pytest.mark.parametrize("factory, floor", [("IVF{nlist},Flat", 0.95), ("HNSW32", 0.95)])
def test_recall_floor_default_settings(search_problem, factory, floor):
    W, Q, S, I = search_problem
    index = LabelIndex.build(W, factory=factory)
    s, i = index.search(Q, 10)
    assert knn_recall(i, I) >= floor, (factory, index.search_params)
    # Returned scores are the true inner products of the returned labels, sorted.
    true = np.einsum("nd,nkd->nk", Q, W[i])
    np.testing.assert_allclose(s, true, rtol=1e-4, atol=1e-4)
    assert np.all(np.diff(s, axis=1) <= 1e-6)


def test_default_search_params():
    W = planted_labels(2000, 16, seed=3)
    assert LabelIndex.build(W, factory="HNSW32").search_params == {"efSearch": 128}
    ivf = LabelIndex.build(W, factory="IVF")  # alias of IVF{nlist},Flat, nlist = 4*sqrt(2000)
    assert ivf.shards_[0].factory == "IVF179,Flat"
    assert ivf.search_params == {"nprobe": 32}
    ivf.set_params(nprobe=5)
    assert faiss.downcast_index(ivf.shards_[0].index).nprobe == 5


def test_pq_factory_runs_with_contract():
    W = planted_labels(2000, 16, num_centres=64, seed=4)
    Q, _ = planted_queries(W, 100)
    _, I = exact_search(W, Q, 10)
    s, i = LabelIndex.build(W, factory="IVF{nlist},PQ4x4", nprobe=64).search(Q, 10)
    assert knn_recall(i, I) >= 0.3  # 4x4-bit codes: coarse, but far above chance (10/2000)
    assert (i >= 0).all() and np.all(np.diff(s, axis=1) <= 1e-6)


def test_padding_when_k_exceeds_labels_or_ivf_lists_are_short():
    W = planted_labels(300, 8, num_centres=16, seed=5)
    Q, _ = planted_queries(W, 20)
    for factory in ("Flat", "HNSW32"):
        s, i = LabelIndex.build(W[:7], factory=factory).search(Q, 12)
        assert (i[:, 7:] == -1).all() and (s[:, 7:] == PAD_SCORE).all(), factory
        assert np.array_equal(np.sort(i[:, :7], axis=1), np.tile(np.arange(7), (20, 1)))
    ivf = LabelIndex.build(W, factory="IVF{nlist},Flat", nlist=60, nprobe=1)
    s, i = ivf.search(Q, 40)  # one list of ~5 labels cannot fill 40 results
    assert (i == -1).any()
    for row_s, row_i in zip(s, i):
        real = row_i >= 0
        assert real[: real.sum()].all()  # padding only at the end
        assert len(set(row_i[real])) == real.sum()
        assert (row_s[~real] == PAD_SCORE).all()


def test_l2_metric_flat_equals_exact():
    W = planted_labels(2000, 16, seed=6)
    Q, _ = planted_queries(W, 50)
    S, I = exact_search(W, Q, 5, metric="l2")
    s, i = LabelIndex.build(W, factory="Flat", metric="l2").search(Q, 5)
    assert knn_recall(i, I) >= 0.99
    np.testing.assert_allclose(s, S, rtol=1e-4, atol=1e-4)


# ---- shards ---------------------------------------------------------------------------------

def test_shards_equal_single_index(search_problem):
    W, Q, S, I = search_problem
    one_s, one_i = LabelIndex.build(W, factory="Flat").search(Q, 10)
    sharded = LabelIndex.build(W, factory="Flat", shards=3)
    assert [(s.offset, s.count) for s in sharded.shards_] == [(0, 6667), (6667, 6666),
                                                             (13333, 6667)]
    s, i = sharded.search(Q, 10)
    np.testing.assert_array_equal(i, one_i)
    np.testing.assert_allclose(s, one_s, rtol=1e-6)


def test_ranks_merge_with_offsets(search_problem):
    # Each "rank" indexes its own label range with its global offset; from_shards merges them.
    W, Q, S, I = search_problem
    bounds = [0, 5000, 12000, 20000]
    ranks = [LabelIndex(32, factory="Flat").add_with_offset(W[a:b], a)
             for a, b in zip(bounds[:-1], bounds[1:])]
    merged = LabelIndex.from_shards(ranks[::-1])  # order of ranks does not matter
    assert merged.num_labels == 20000 and merged.ntotal == 20000
    s, i = merged.search(Q, 10)
    one_s, one_i = LabelIndex.build(W, factory="Flat").search(Q, 10)
    np.testing.assert_array_equal(i, one_i)
    np.testing.assert_allclose(s, one_s, rtol=1e-6)
    # Approximate shards (HNSW) with offsets keep the recall floor.
    hnsw = LabelIndex.from_shards([LabelIndex(32, factory="HNSW32").add_with_offset(W[a:b], a)
                                   for a, b in ((0, 2500), (2500, 5000))])
    sub = exact_search(W[:5000], Q, 10)[1]
    s, i = hnsw.search(Q, 10)
    assert knn_recall(i, sub) >= 0.95
    np.testing.assert_allclose(s, np.einsum("nd,nkd->nk", Q, W[i]), rtol=1e-4, atol=1e-4)
    with pytest.raises(ValueError, match=r"^labels 4000\.\.4999 overlap the shard holding "
                                         r"labels 0\.\.4999$"):
        LabelIndex.from_shards([ranks[0], LabelIndex(32, "Flat").add_with_offset(W[:1000], 4000)])


# ---- persistence ----------------------------------------------------------------------------

@pytest.mark.parametrize("factory, shards", [("HNSW32", 1), ("IVF{nlist},Flat", 2)])
def test_save_load_round_trip(tmp_path, factory, shards):
    W = planted_labels(3000, 16, seed=7)
    Q, _ = planted_queries(W, 60)
    index = LabelIndex.build(W, factory=factory, shards=shards, efSearch=64) if factory == "HNSW32" \
        else LabelIndex.build(W, factory=factory, shards=shards, nprobe=7)
    before = index.search(Q, 10)
    index.save(tmp_path / "idx")
    meta = json.loads((tmp_path / "idx" / "meta.json").read_text())
    assert meta["format"] == "xmr-label-index" and meta["format_version"] == 1
    assert (meta["dim"], meta["metric"], meta["num_labels"]) == (16, "ip", 3000)
    assert meta["factory"] == factory and "xmr_version" in meta
    assert meta["search_params"] == ({"efSearch": 64} if factory == "HNSW32" else {"nprobe": 7})
    files = sorted(p.name for p in (tmp_path / "idx").iterdir())
    assert files == (["index.faiss", "meta.json"] if shards == 1
                     else ["meta.json", "shard_00000.faiss", "shard_00001.faiss"])
    loaded = LabelIndex.load(tmp_path / "idx", expect_dim=16, expect_num_labels=3000)
    assert loaded.search_params == index.search_params
    after = loaded.search(Q, 10)
    np.testing.assert_array_equal(after[1], before[1])
    np.testing.assert_array_equal(after[0], before[0])


def test_load_metadata_mismatch_messages(tmp_path):
    W = planted_labels(1000, 64, seed=8)
    path = tmp_path / "x"
    LabelIndex.build(W, factory="Flat").save(path)
    with pytest.raises(MetadataMismatchError) as e:
        LabelIndex.load(path, expect_dim=64, expect_num_labels=2000)
    assert str(e.value) == (f"index {path} was built for 1000 labels of dim 64; "
                            f"the model has 2000 labels of dim 64")
    with pytest.raises(MetadataMismatchError) as e:
        LabelIndex.load(path, expect_dim=32)
    assert str(e.value) == f"index {path} was built for 1000 labels of dim 64; expected dim 32"
    with pytest.raises(FormatError) as e:
        LabelIndex.load(tmp_path / "nope")
    assert str(e.value) == (f"{tmp_path / 'nope' / 'meta.json'}: expected the meta.json of an "
                            f"index written by xmr, got no such file")
    # A meta.json that lies about the file is caught too.
    meta = json.loads((path / "meta.json").read_text())
    meta["shards"][0]["count"] = 999
    (path / "meta.json").write_text(json.dumps(meta))
    with pytest.raises(MetadataMismatchError) as e:
        LabelIndex.load(path)
    assert str(e.value) == (f"index {path}: index.faiss holds 1000 vectors of dim 64; "
                            f"meta.json says 999 of dim 64")


def test_save_is_atomic_replace(tmp_path):
    W = planted_labels(500, 8, seed=9)
    path = tmp_path / "idx"
    LabelIndex.build(W, factory="Flat").save(path)
    LabelIndex.build(W[:200], factory="Flat").save(path)  # overwrite in place
    assert LabelIndex.load(path).num_labels == 200
    assert sorted(p.name for p in tmp_path.iterdir()) == ["idx"]  # no temporaries left


# ---- validation, threading, imports ---------------------------------------------------------

def test_bad_inputs_have_clear_errors():
    W = planted_labels(100, 8, seed=10)
    index = LabelIndex.build(W, factory="Flat")
    with pytest.raises(ValueError, match=r"^Q: expected dim 8, got shape \(3, 5\)$"):
        index.search(np.zeros((3, 5), np.float32), 2)
    with pytest.raises(ValueError, match=r"^factory: 'IVF40,PQ3' is not a valid FAISS index "
                                         r"for dim 8: The dimension of the vector \(d\) should "
                                         r"be a multiple of the number of subquantizers"):
        LabelIndex.build(W, factory="IVF{nlist},PQ3")  # 8 is not a multiple of 3
    with pytest.raises(ValueError, match="^search parameter 'bogus' does not apply to a 'Flat'"):
        index.set_params(bogus=3)
    with pytest.raises(ValueError, match=r"^shards: expected at most one shard per label "
                                         r"\(100 labels\), got 101$"):
        LabelIndex.build(W, shards=101)
    with pytest.raises(ValueError, match=r"^use_gpu: expected 'auto', True or False, got 'yes'$"):
        LabelIndex(8, use_gpu="yes")


def test_faiss_thread_count_untouched(search_problem):
    W, Q, _, _ = search_problem
    before = faiss.omp_get_max_threads()
    LabelIndex.build(W[:2000], factory="HNSW32", shards=2).search(Q, 5)
    assert faiss.omp_get_max_threads() == before
    with omp_threads(1):
        assert faiss.omp_get_max_threads() == 1
    assert faiss.omp_get_max_threads() == before


def test_import_is_cheap():
    code = ("import sys, xmr.index, xmr.negatives.miner, xmr.cli.cmd_index; "
            "print(sorted(m for m in ('faiss', 'numba', 'torch') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_missing_faiss_gives_install_hint(monkeypatch):
    monkeypatch.setitem(sys.modules, "faiss", None)  # makes `import faiss` raise ImportError
    with pytest.raises(MissingDependencyError, match=r"pip install 'xmr\[cpu\]'"):
        LabelIndex.build(np.zeros((4, 2), np.float32), factory="Flat")


def test_use_gpu_true_without_gpu_is_an_error():
    if faiss.get_num_gpus() > 0:
        pytest.skip("a GPU is present")
    with pytest.raises(XMRError, match=r"^use_gpu=True but FAISS sees no GPU"):
        LabelIndex.build(np.zeros((4, 2), np.float32), factory="Flat", use_gpu=True)


@pytest.mark.gpu
def test_gpu_index_equals_cpu(search_problem):
    if faiss.get_num_gpus() == 0:
        pytest.skip("FAISS sees no GPU")
    W, Q, S, I = search_problem
    for factory in ("Flat", "IVF{nlist},Flat"):
        gpu = LabelIndex.build(W, factory=factory, use_gpu=True)
        assert gpu.shards_[0].on_gpu
        s, i = gpu.search(Q, 10)
        assert knn_recall(i, I) >= (0.999 if factory == "Flat" else 0.95)
