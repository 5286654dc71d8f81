"""LabelIndex(mips=True): the MIPS→L2 reduction as a build option — exact on Flat, inner-product
scores, shards, save/load, errors — and the contract's tie order on FAISS results."""

import json

import numpy as np
import pytest

faiss = pytest.importorskip("faiss")

from xmr.errors import MetadataMismatchError  # noqa: E402
from xmr.index import PAD_SCORE, LabelIndex, exact_search  # noqa: E402
from xmr.index.mips import mips_augment, mips_augment_queries, mips_scores  # noqa: E402


pytestmark = pytest.mark.usefixtures("one_faiss_thread")


def _varied_norms(L=600, d=12, seed=0):
    rng = np.random.default_rng(seed)
    W = (rng.normal(size=(L, d)) * rng.lognormal(0, 1, size=(L, 1))).astype(np.float32)
    Q = rng.normal(size=(40, d)).astype(np.float32)
    return W, Q


def test_mips_helpers():
    W, Q = _varied_norms()
    Wa, Qa = mips_augment(W), mips_augment_queries(Q)
    M = np.linalg.norm(W, axis=1).max()
    np.testing.assert_allclose(np.linalg.norm(Wa, axis=1), M, rtol=1e-5)
    D = ((Qa[:, None, :].astype(np.float64) - Wa[None]) ** 2).sum(-1)
    np.testing.assert_allclose(mips_scores(D, Q, M), Q @ W.T, rtol=1e-4, atol=1e-3)
    with pytest.raises(ValueError, match=r"^W: expected row norms <= max_norm 1, got 2 \(row 0\)$"):
        mips_augment(np.array([[2, 0]], np.float32), max_norm=1.0)


@pytest.mark.parametrize("shards", [1, 3])
def test_flat_mips_index_equals_exact_inner_product(shards):
    W, Q = _varied_norms()
    S, I = exact_search(W, Q, 10)
    index = LabelIndex.build(W, factory="Flat", mips=True, shards=shards)
    # d + 1 of the reduction, zero-padded to a multiple of 8 (MIPS_ALIGN)
    assert index.dim == 12 and index.mips and index.shards_[0].index.d == 16
    s, i = index.search(Q, 10)
    np.testing.assert_array_equal(i, I)
    np.testing.assert_allclose(s, S, rtol=1e-4, atol=1e-3)  # inner products, not distances


def test_mips_save_load_round_trip(tmp_path):
    W, Q = _varied_norms()
    index = LabelIndex.build(W, factory="HNSW32", mips=True, efSearch=64)
    before = index.search(Q, 10)
    index.save(tmp_path / "idx")
    meta = json.loads((tmp_path / "idx" / "meta.json").read_text())
    assert meta["format_version"] == 3 and meta["mips"] is True and meta["dim"] == 12
    assert meta["mips_pad"] == 3
    assert meta["max_norm"] == pytest.approx(float(np.linalg.norm(W, axis=1).max()), rel=1e-6)
    loaded = LabelIndex.load(tmp_path / "idx", expect_dim=12, expect_num_labels=600)
    assert loaded.mips and loaded.max_norm == index.max_norm
    after = loaded.search(Q, 10)  # the query side of the reduction is applied on load too
    np.testing.assert_array_equal(after[1], before[1])
    np.testing.assert_array_equal(after[0], before[0])
    assert np.mean([len(set(a) & set(b)) for a, b in zip(after[1], exact_search(W, Q, 10)[1])]) > 9
    # A non-MIPS index is still written as format version 1.
    LabelIndex.build(W, factory="Flat").save(tmp_path / "raw")
    assert json.loads((tmp_path / "raw" / "meta.json").read_text())["format_version"] == 1


@pytest.mark.parametrize("factory", ["Flat", "IVF8,SQ8"])
def test_padding_changes_no_result_and_unpadded_version_2_indexes_still_load(tmp_path, factory):
    """Zero columns change no distance: a padded index (16 coordinates) and an unpadded one (13,
    as format version 2 wrote them) return the same labels and scores; the version-2 folder
    loads (no ``mips_pad`` key) and keeps its 13 coordinates."""
    W, Q = _varied_norms()
    p = {"nprobe": 8} if factory.startswith("IVF") else {}
    padded = LabelIndex.build(W, factory=factory, mips=True, **p)
    plain = LabelIndex(12, factory=factory, mips=True, mips_pad=0, **p).add_with_offset(W, 0)
    assert padded.shards_[0].index.d == 16 and plain.shards_[0].index.d == 13
    a, b = padded.search(Q, 10), plain.search(Q, 10)
    if factory == "Flat":
        np.testing.assert_array_equal(a[1], b[1])
        np.testing.assert_allclose(a[0], b[0], rtol=1e-4, atol=1e-3)  # float32 distances
    else:  # SQ8 quantises each coordinate over its own range: close, not identical
        assert np.mean([len(set(x) & set(y)) for x, y in zip(a[1], b[1])]) > 9
    plain.save(tmp_path / "v2")
    meta = json.loads((tmp_path / "v2" / "meta.json").read_text())
    assert meta["format_version"] == 2 and "mips_pad" not in meta
    back = LabelIndex.load(tmp_path / "v2", expect_dim=12)
    assert back.mips_pad == 0 and back.shards_[0].index.d == 13
    np.testing.assert_array_equal(back.search(Q, 10)[1], b[1])


def test_mips_shards_need_one_max_norm():
    W, Q = _varied_norms()
    M = float(np.linalg.norm(W, axis=1).max())
    ranks = [LabelIndex(12, factory="Flat", mips=True, max_norm=M).add_with_offset(W[a:b], a)
             for a, b in ((0, 200), (200, 600))]
    merged = LabelIndex.from_shards(ranks)
    np.testing.assert_array_equal(merged.search(Q, 10)[1], exact_search(W, Q, 10)[1])
    own = LabelIndex(12, factory="Flat", mips=True).add_with_offset(W[200:], 200)
    with pytest.raises(ValueError, match=r"^indexes\[1\]: expected mips=True with max_norm "):
        LabelIndex.from_shards([ranks[0], own])
    small = LabelIndex(12, factory="Flat", mips=True, max_norm=0.5)
    with pytest.raises(ValueError, match=r"^W: expected row norms <= max_norm 0\.5, got "):
        small.add_with_offset(W, 0)


def test_mips_bad_arguments_and_files(tmp_path):
    with pytest.raises(ValueError, match=r"^mips: expected metric 'ip' \(the reduction is for "
                                         r"inner-product search\), got metric 'l2'$"):
        LabelIndex(4, metric="l2", mips=True)
    with pytest.raises(ValueError, match=r"^max_norm: expected a finite number >= 0 with "
                                         r"mips=True, got 2\.0 with mips=False$"):
        LabelIndex(4, max_norm=2.0)
    W, _ = _varied_norms()
    LabelIndex.build(W, factory="Flat", mips=True).save(tmp_path / "idx")
    with pytest.raises(MetadataMismatchError, match=r"was built for 600 labels of dim 12; "
                                                    r"expected dim 13$"):
        LabelIndex.load(tmp_path / "idx", expect_dim=13)


def test_faiss_results_are_put_in_contract_order():
    # 14 labels tie at the top; FAISS's own order of equal distances is not xmr's.
    W = np.zeros((40, 3), np.float32)
    W[:, 0] = np.arange(40) % 3
    q = np.eye(1, 3, dtype=np.float32)
    want = np.concatenate([np.arange(2, 40, 3), np.arange(1, 40, 3), np.arange(0, 40, 3)])
    for mips in (False, True):
        s, i = LabelIndex.build(W, factory="Flat", mips=mips).search(q, 45)
        np.testing.assert_array_equal(i[0, :40], want)
        np.testing.assert_array_equal(i[0, 40:], -1)
        np.testing.assert_allclose(s[0, :40], want % 3, atol=1e-5)
        assert (s[0, 40:] == PAD_SCORE).all()


def test_index_meta_goes_through_the_one_artefact_reader(tmp_path):
    """A newer format_version or another format is one FormatError line from read_meta."""
    from xmr.errors import FormatError

    W, _ = _varied_norms()
    LabelIndex.build(W, factory="Flat", mips=True).save(tmp_path / "idx")
    meta_path = tmp_path / "idx" / "meta.json"
    meta = json.loads(meta_path.read_text())
    meta_path.write_text(json.dumps({**meta, "format_version": 4}))
    with pytest.raises(FormatError, match=r"meta.json: expected format_version <= 3 \(the newest "
                                          r"xmr .* reads; upgrade xmr\), got 4 \(written by xmr "):
        LabelIndex.load(tmp_path / "idx")
    meta_path.write_text(json.dumps({**meta, "format": "xmr-model"}))
    with pytest.raises(FormatError, match=r"expected format 'xmr-label-index', got 'xmr-model'"):
        LabelIndex.load(tmp_path / "idx")
    meta_path.write_text(json.dumps({k: v for k, v in meta.items() if k != "shards"}))
    with pytest.raises(FormatError, match=r"missing shards"):
        LabelIndex.load(tmp_path / "idx")
