"""CandidateSources: the one owner of a batch's candidates P ∪ T ∪ H ∪ R.

double-distill: the candidates hold the positives, the teacher's top-K truncated to teacher_k,
the mined ids and num_random sampled ids; the same step number draws the same negatives (what
makes a resumed run draw the uninterrupted one's); presets fetch only what they need."""

import numpy as np
import pytest
import torch

from xmr.negatives.samplers import make_sampler
from xmr.negatives.sources import CandidateSources
from xmr.objectives.config import LossConfig
from xmr.teachers.store import TeacherStore

L, K_STORE, TEACHER_K, NUM_RANDOM, SEED = 60, 5, 3, 7, 11


def _store(n=20):
    """Row i's teacher top-5: labels 10 + (i + j) mod 50, logits decreasing."""
    ids = np.array([[10 + (i + j) % 50 for j in range(K_STORE)] for i in range(n)])
    logits = np.tile(np.array([4.0, 3.0, 2.0, 1.0, 0.0], np.float32), (n, 1))
    return TeacherStore(indptr=np.arange(0, ids.size + 1, K_STORE, dtype=np.int64),
                        ids=ids.reshape(-1), logits=logits.reshape(-1), num_labels=L)


class _Miner:
    """A miner stub: records its calls; row b's hard negatives are labels 2b + 1 and 2b + 2."""

    def __init__(self):
        self.refreshed, self.queries = [], []

    def maybe_refresh(self, step, get_W):
        self.refreshed.append((step, get_W().shape))

    def mine(self, Q, pos_indptr, pos_ids):
        self.queries.append(np.array(Q))
        B = len(pos_indptr) - 1
        ids = np.array([[2 * b + 1, 2 * b + 2] for b in range(B)], dtype=np.int64).reshape(-1)
        return np.arange(0, 2 * B + 1, 2, dtype=np.int64), ids


def _batch():
    rows = np.array([4, 0, 9])
    pos = (np.array([0, 1, 3, 4], dtype=np.int64), np.array([0, 7, 8, 9], dtype=np.int64))
    emb = torch.randn(3, 4)
    return rows, pos, emb


def _sources(miner=None, **kw):
    cfg = LossConfig(preset="double-distill", teacher_k=TEACHER_K, num_random=NUM_RANDOM,
                     proposal="uniform", **kw).resolved()
    return CandidateSources(cfg, L, seed=SEED, teacher=_store(), miner=miner,
                            label_rows=lambda: np.zeros((L, 4), np.float32))


def test_double_distill_candidates_hold_p_truncated_t_h_and_r():
    miner = _Miner()
    src = _sources(miner)
    rows, pos, emb = _batch()
    c = src(rows, pos, emb, step=5)
    cand = set(c.batch.cand_ids.tolist())
    # P
    assert set(pos[1].tolist()) <= cand
    # T: the teacher's first teacher_k labels of each batch row (the store holds 5)
    t_ptr, t_ids, t_logits = c.teacher
    np.testing.assert_array_equal(np.diff(t_ptr), [TEACHER_K] * 3)
    for b, r in enumerate(rows):
        want = [10 + (r + j) % 50 for j in range(TEACHER_K)]
        assert t_ids[t_ptr[b]:t_ptr[b + 1]].tolist() == want
        np.testing.assert_array_equal(t_logits[t_ptr[b]:t_ptr[b + 1]], [4.0, 3.0, 2.0])
    assert set(t_ids.tolist()) <= cand
    # the targets put teacher mass on the truncated labels only
    tgt_ids = c.batch.cand_ids[c.batch.t_cols]
    assert set(tgt_ids.tolist()) <= set(pos[1].tolist()) | set(t_ids.tolist())
    # H: the miner was refreshed at this step, queried with the detached embeddings
    assert miner.refreshed == [(5, (L, 4))]
    np.testing.assert_array_equal(miner.queries[0], emb.numpy())
    assert set(c.mined[1].tolist()) == {1, 2, 3, 4, 5, 6} and set(c.mined[1].tolist()) <= cand
    # R: num_random distinct ids drawn from rng([seed, step]), all candidates
    r_ids, r_lec = c.sampled
    assert len(r_ids) == NUM_RANDOM == len(set(r_ids.tolist())) and set(r_ids.tolist()) <= cand
    want_ids, want_lec = make_sampler("uniform", L).sample(
        NUM_RANDOM, np.random.default_rng([SEED, 5]), unique=True)
    np.testing.assert_array_equal(r_ids, want_ids)
    np.testing.assert_array_equal(r_lec, want_lec)
    assert cand == set(pos[1].tolist()) | set(t_ids.tolist()) | set(c.mined[1].tolist()) \
        | set(r_ids.tolist())
    assert c.num_candidates == len(c.batch.cand_ids) and c.targets is None


def test_the_same_step_draws_the_same_negatives():
    rows, pos, emb = _batch()
    a, b = _sources(_Miner()), _sources(_Miner())  # e.g. a run and its resumed copy
    first = a(rows, pos, emb, step=3)
    again = a(rows, pos, emb, step=3)
    other = b(rows, pos, emb, step=3)
    later = a(rows, pos, emb, step=4)
    for c in (again, other):
        np.testing.assert_array_equal(c.sampled[0], first.sampled[0])
        np.testing.assert_array_equal(c.batch.cand_ids, first.batch.cand_ids)
        np.testing.assert_array_equal(c.batch.col_bias, first.batch.col_bias)
    assert not np.array_equal(later.sampled[0], first.sampled[0])
    # assemble (parts the caller has) decides the same candidates as the fetching call
    given = a.assemble(pos, _store().rows(rows), first.mined, step=3)
    np.testing.assert_array_equal(given.batch.cand_ids, first.batch.cand_ids)
    np.testing.assert_array_equal(given.batch.t_vals, first.batch.t_vals)


def test_presets_fetch_only_what_they_need():
    class NoRows:
        meta = {}

        def rows(self, rows):
            raise AssertionError("the teacher store was read")

    class NoMiner:
        def maybe_refresh(self, *a):
            raise AssertionError("the miner was refreshed")

        mine = maybe_refresh

    rows, pos, emb = _batch()
    for preset, exact in (("softmax", True), ("sampled", False)):
        cfg = LossConfig(preset=preset, num_random=5 if preset == "sampled" else None,
                         proposal="uniform").resolved()
        assert not cfg.needs_teacher and not cfg.needs_miner
        src = CandidateSources(cfg, L, teacher=NoRows(), miner=NoMiner())
        c = src(rows, pos, emb, step=0)
        assert c.teacher is None and c.mined is None
        if exact:  # A = all labels: the targets over all labels, no batch, no draws
            assert c.batch is None and c.sampled is None and c.num_candidates == L
            assert c.targets[1].size == 0  # decoupled, no teacher: no soft targets ...
            np.testing.assert_array_equal(c.positives[1], pos[1])  # ... the positives alone
        else:
            assert len(c.sampled[0]) == 5 and c.batch is not None


def test_a_needed_teacher_or_miner_that_is_missing_is_an_error():
    rows, pos, emb = _batch()
    cfg = LossConfig(preset="double-distill", num_random=4, proposal="uniform").resolved()
    with pytest.raises(ValueError, match="loss preset 'double-distill' .* needs a teacher store"):
        CandidateSources(cfg, L, miner=_Miner())(rows, pos, emb, step=0)
    with pytest.raises(ValueError, match="needs a teacher store"):
        CandidateSources(cfg, L).assemble(pos, None, None, step=0)
    with pytest.raises(ValueError, match="mines hard negatives .* miner=None"):
        CandidateSources(cfg, L, teacher=_store())(rows, pos, emb, step=0)
