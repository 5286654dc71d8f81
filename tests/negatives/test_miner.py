"""HardNegativeMiner: positives removed, skip_top, shortlist size, refresh cadence, seeded sampling."""

import json

import numpy as np
import pytest

pytest.importorskip("faiss")

from xmr.data.planted import planted_labels, planted_queries  # noqa: E402
from xmr.index import exact_search  # noqa: E402
from xmr.negatives.miner import HardNegativeMiner  # noqa: E402

L, D, B = 2000, 16, 64


pytestmark = pytest.mark.usefixtures("one_faiss_thread")


@pytest.fixture(scope="module")
def data():
    W = planted_labels(L, D, num_centres=32, seed=0)
    Q, src = planted_queries(W, B, seed=1)
    rng = np.random.default_rng(2)
    # Positives: the source label plus 0-4 labels among the query's exact top 20, so removing
    # them really changes the shortlist.
    _, top = exact_search(W, Q, 20)
    rows = []
    for b in range(B):
        extra = rng.choice(top[b], size=rng.integers(0, 5), replace=False)
        rows.append(np.unique(np.concatenate([[src[b]], extra])))
    indptr = np.zeros(B + 1, np.int64)
    indptr[1:] = np.cumsum([len(r) for r in rows])
    return W, Q, indptr, np.concatenate(rows).astype(np.int64)


def _reference(W, Q, indptr, ids, k, skip_top):
    """Slow per-row reference over the exact ranking."""
    _, order = exact_search(W, Q, L)
    out = []
    for b in range(Q.shape[0]):
        pos = set(ids[indptr[b]:indptr[b + 1]].tolist())
        kept = [j for j in order[b] if j not in pos]
        out.append(kept[skip_top:skip_top + k])
    return out


def _rows(indptr, ids):
    return [ids[indptr[b]:indptr[b + 1]].tolist() for b in range(len(indptr) - 1)]


@pytest.mark.parametrize("skip_top", [0, 3])
def test_mine_matches_reference(data, skip_top):
    W, Q, indptr, ids = data
    miner = HardNegativeMiner(L, k=10, skip_top=skip_top, factory="Flat").refresh(W)
    neg_indptr, neg_ids = miner.mine(Q, indptr, ids)
    assert neg_indptr.dtype == np.int64 and neg_ids.dtype == np.int64
    assert neg_indptr.shape == (B + 1,) and neg_indptr[-1] == len(neg_ids)
    assert _rows(neg_indptr, neg_ids) == _reference(W, Q, indptr, ids, 10, skip_top)
    for b, row in enumerate(_rows(neg_indptr, neg_ids)):
        assert not set(row) & set(ids[indptr[b]:indptr[b + 1]].tolist())
        assert len(row) == 10


def test_default_hnsw_miner_removes_positives(data):
    W, Q, indptr, ids = data
    miner = HardNegativeMiner(L, k=20, skip_top=2)
    miner.refresh(W)
    neg_indptr, neg_ids = miner.mine(Q, indptr, ids)
    ref = _reference(W, Q, indptr, ids, 20, 2)
    got = _rows(neg_indptr, neg_ids)
    hits = sum(len(set(g) & set(r)) for g, r in zip(got, ref))
    assert hits / (20 * B) >= 0.9  # approximate index, planted data
    for b, row in enumerate(got):
        assert not set(row) & set(ids[indptr[b]:indptr[b + 1]].tolist())
        assert len(set(row)) == len(row)


def test_small_label_space_gives_short_rows():
    W = planted_labels(12, 4, num_centres=3, seed=3)
    miner = HardNegativeMiner(12, k=50, factory="Flat").refresh(W)
    indptr = np.array([0, 2, 2])
    neg_indptr, neg_ids = miner.mine(W[:2], indptr, np.array([0, 5]))
    rows = _rows(neg_indptr, neg_ids)
    assert sorted(rows[0]) == [j for j in range(12) if j not in (0, 5)]
    assert sorted(rows[1]) == list(range(12))  # no positives: every label is a negative


def test_seeded_sampling_is_reproducible_and_uniform(data):
    W, Q, indptr, ids = data
    full = HardNegativeMiner(L, k=10, factory="Flat").refresh(W).mine(Q, indptr, ids)
    a = HardNegativeMiner(L, k=10, num_negatives=4, seed=7, factory="Flat").refresh(W)
    b = HardNegativeMiner(L, k=10, num_negatives=4, seed=7, factory="Flat").refresh(W)
    c = HardNegativeMiner(L, k=10, num_negatives=4, seed=8, factory="Flat").refresh(W)
    ra, rb, rc = (m.mine(Q, indptr, ids) for m in (a, b, c))
    np.testing.assert_array_equal(ra[1], rb[1])
    assert not np.array_equal(ra[1], rc[1])
    # Resume: a fresh miner loaded with a's state draws what a draws next.
    state = json.loads(json.dumps(a.state_dict()))
    d = HardNegativeMiner(L, k=10, num_negatives=4, seed=0, factory="Flat").refresh(W)
    d.load_state_dict(state)
    np.testing.assert_array_equal(d.mine(Q, indptr, ids)[1], a.mine(Q, indptr, ids)[1])
    short = _rows(*full)
    for row, s in zip(_rows(*ra), short):
        assert len(row) == 4 and set(row) <= set(s)
        assert row == [j for j in s if j in row]  # kept in shortlist (score) order
    # Uniform over the shortlist: each of 10 shortlist ranks is drawn with probability 0.4.
    n = 3000
    Qr = np.repeat(Q[:1], n, axis=0)
    pr = np.repeat(ids[indptr[0]:indptr[1]][None], n, axis=0)
    p_indptr = np.arange(n + 1) * pr.shape[1]
    _, picks = a.mine(Qr, p_indptr, pr.ravel())
    counts = np.array([(picks == j).sum() for j in short[0]])
    sd = np.sqrt(n * 0.4 * 0.6)
    assert np.all(np.abs(counts - 0.4 * n) < 5 * sd), counts


def test_refresh_cadence_and_stats(data):
    W, Q, indptr, ids = data
    calls = []

    def get_W():
        calls.append(1)
        return W

    miner = HardNegativeMiner(L, k=5, refresh_every=3, factory="Flat")
    did = [miner.maybe_refresh(step, get_W) for step in range(10)]
    assert did == [True, False, False, True, False, False, True, False, False, True]
    assert len(calls) == 4 and miner.last_refresh_step_ == 9
    miner.mine(Q, indptr, ids)
    miner.mine(Q[:3], indptr[:4], ids[:indptr[3]])
    st = miner.stats()
    assert (st["refreshes"], st["searches"], st["queries"]) == (4, 2, B + 3)
    assert st["refresh_time_s"] > 0 and st["search_time_s"] > 0
    assert st["mine_time_s"] >= st["search_time_s"]
    # A manual refresh starts the cadence at the next maybe_refresh.
    m2 = HardNegativeMiner(L, refresh_every=2, factory="Flat").refresh(W)
    assert [m2.maybe_refresh(s, get_W) for s in (5, 6, 7)] == [False, False, True]


def test_validation_messages(data):
    W, Q, indptr, ids = data
    miner = HardNegativeMiner(L, factory="Flat")
    with pytest.raises(RuntimeError, match=r"no index yet; call refresh\(W\)"):
        miner.mine(Q, indptr, ids)
    with pytest.raises(ValueError, match=r"^W: expected shape \(2000, d\), got \(10, 16\)$"):
        miner.refresh(W[:10])
    miner.refresh(W)
    with pytest.raises(ValueError, match=r"^Q: expected dim 16, got shape \(64, 8\)$"):
        miner.mine(Q[:, :8], indptr, ids)
    with pytest.raises(ValueError, match=r"^pos_indptr: expected shape \(65,\) for 64 queries, "
                                         r"got \(64,\)$"):
        miner.mine(Q, indptr[:-1], ids)
    bad = ids.copy()
    bad[3] = L
    with pytest.raises(ValueError, match=r"^pos_ids: expected label ids in \[0, 2000\), got 2000$"):
        miner.mine(Q, indptr, bad)
    with pytest.raises(ValueError, match=r"^pos_indptr: expected non-decreasing offsets from 0 "
                                         r"to len\(pos_ids\)=\d+, got 1\.\.\d+$"):
        miner.mine(Q, indptr + 1, ids)
    with pytest.raises(ValueError, match=r"^num_negatives: expected an integer >= 1 or None, "
                                         r"got 0$"):
        HardNegativeMiner(L, num_negatives=0)
    with pytest.raises(ValueError, match=r"^k: expected an integer >= 1, got 0$"):
        HardNegativeMiner(L, k=0)


def test_mips_to_l2_keeps_the_inner_product_ranking():
    """The Bachrach et al. reduction: exact L2 search over augmented rows returns the exact
    inner-product top-k, also when row norms vary a lot (as in a trained label table)."""
    from xmr.index.mips import mips_augment, mips_augment_queries

    rng = np.random.default_rng(0)
    W = (rng.normal(size=(500, 16)) * rng.lognormal(0, 1, size=(500, 1))).astype(np.float32)
    Q = rng.normal(size=(40, 16)).astype(np.float32)
    _, want = exact_search(W, Q, 10)
    _, got = exact_search(mips_augment(W), mips_augment_queries(Q), 10, metric="l2")
    np.testing.assert_array_equal(got, want)


def test_miner_with_and_without_the_transform_agree_on_flat():
    from xmr.negatives.miner import HardNegativeMiner

    rng = np.random.default_rng(1)
    W = (rng.normal(size=(300, 8)) * rng.lognormal(0, 1, size=(300, 1))).astype(np.float32)
    Q = rng.normal(size=(12, 8)).astype(np.float32)
    ptr = np.arange(13, dtype=np.int64)
    pos = rng.integers(0, 300, 12)
    a = HardNegativeMiner(300, k=7, factory="Flat", mips_to_l2=True).refresh(W).mine(Q, ptr, pos)
    b = HardNegativeMiner(300, k=7, factory="Flat", mips_to_l2=False).refresh(W).mine(Q, ptr, pos)
    np.testing.assert_array_equal(a[0], b[0])
    np.testing.assert_array_equal(a[1], b[1])


@pytest.mark.parametrize("num_negatives", [None, 4])
def test_duplicate_query_rows_are_searched_once_with_the_same_negatives(data, num_negatives):
    """A batch whose rows repeat (each row 3 times, interleaved, with the copies' positives
    differing) mines exactly what the miner without deduplication mines, sampling included,
    while searching each distinct row once."""
    W, Q, indptr, ids = data
    rows = _rows(indptr, ids)
    order = np.array([b for _ in range(3) for b in range(B)])  # 0..B-1, 0..B-1, 0..B-1
    Qd = Q[order]
    rows_d = [rows[b] if r == 0 else rows[b][:1] for r, b in
              zip(np.repeat(np.arange(3), B), order)]  # copies 2 and 3: the source label only
    ind_d = np.zeros(len(rows_d) + 1, np.int64)
    ind_d[1:] = np.cumsum([len(r) for r in rows_d])
    ids_d = np.concatenate(rows_d).astype(np.int64)
    got, want = [], []
    for dedup, out in ((True, got), (False, want)):
        m = HardNegativeMiner(L, k=10, num_negatives=num_negatives, seed=3, factory="Flat",
                              dedup_queries=dedup).refresh(W)
        out.append(m.mine(Qd, ind_d, ids_d))
        out.append(m.stats()["queries_searched"])
    np.testing.assert_array_equal(got[0][0], want[0][0])
    np.testing.assert_array_equal(got[0][1], want[0][1])
    assert (got[1], want[1]) == (B, 3 * B)
    # copies with fewer positives see a different shortlist: not just row 0's list repeated
    assert _rows(*got[0])[0] != _rows(*got[0])[B]
    if num_negatives is None:
        assert _rows(*got[0])[B] == _reference(W, Q[:1], np.array([0, 1]), ids_d[ind_d[B]:ind_d[B] + 1], 10, 0)[0]


def test_miner_search_settings_from_the_config():
    from xmr.errors import ConfigError
    from xmr.train.config import MinerConfig

    assert MinerConfig().index_params() == {}
    m = MinerConfig(factory="IVF{nlist},Flat", nlist=64, nprobe=4)
    m.validate()
    assert m.index_params() == {"nlist": 64, "nprobe": 4}
    assert MinerConfig(factory="HNSW32", ef_search=40).index_params() == {"efSearch": 40}
    with pytest.raises(ConfigError, match=r"^miner.nprobe: applies to an IVF factory, got "
                                          r"miner.factory 'HNSW32'$"):
        MinerConfig(factory="HNSW32", nprobe=8).validate()
    with pytest.raises(ConfigError, match=r"^miner.nprobe: applies to an IVF factory; "
                                          r"miner.factory 'auto' picks the index by the label "
                                          r"count, so set miner.factory too$"):
        MinerConfig(nprobe=8).validate()
    with pytest.raises(ConfigError, match=r"^miner.ef_search: applies to an HNSW factory, got "
                                          r"miner.factory 'IVF\{nlist\},Flat'$"):
        MinerConfig(factory="IVF{nlist},Flat", ef_search=8).validate()
    with pytest.raises(ConfigError, match=r"^miner.nlist: applies to an IVF factory with "
                                          r"\{nlist\}, got miner.factory 'IVF64,Flat'$"):
        MinerConfig(factory="IVF64,Flat", nlist=8).validate()


def test_auto_factory_follows_the_measured_choice():
    """factory="auto": HNSW32 for small tables, IVF-SQ8 with nprobe 2 over at most 1024 lists
    from AUTO_IVF_MIN_LABELS on (benchmarks/results/bench_mining_index.json); explicit
    index_params override the automatic ones."""
    from xmr.negatives.miner import AUTO_IVF_MIN_LABELS

    small = HardNegativeMiner(AUTO_IVF_MIN_LABELS - 1)
    assert (small.factory, small.index_params) == ("HNSW32", {})
    big = HardNegativeMiner(1_000_000)
    assert big.factory == "IVF{nlist},SQ8" and big.index_params == {"nlist": 1024, "nprobe": 2}
    mid = HardNegativeMiner(AUTO_IVF_MIN_LABELS, index_params={"nprobe": 4})
    assert mid.index_params == {"nlist": 1024, "nprobe": 4}
    assert HardNegativeMiner(10_000, factory="Flat").factory == "Flat"
    # the built index really is the automatic one (small table: HNSW, searchable)
    W = planted_labels(3000, 8, num_centres=8, seed=0)
    m = HardNegativeMiner(3000, k=5).refresh(W)
    assert m.index_.shards_[0].factory == "HNSW32" and m.index_.search(W[:2], 3)[1].shape == (2, 3)
