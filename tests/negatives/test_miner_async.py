"""Asynchronous refresh: the index built from the snapshot of step t mines from step t + swap_lag
on, whatever the thread timing; the same negatives as a synchronous miner refreshed at t + lag
with the table of step t; staleness in the stats; save/load with a build pending."""

import time

import numpy as np
import pytest

pytest.importorskip("faiss")

from xmr.data.planted import planted_labels, planted_queries  # noqa: E402
from xmr.negatives.miner import HardNegativeMiner  # noqa: E402
from xmr.utils.threads import omp_threads  # noqa: E402

L, D, B, STEPS = 1500, 16, 40, 14


pytestmark = pytest.mark.usefixtures("one_faiss_thread")


@pytest.fixture(scope="module")
def tables():
    """W_t drifts with t, so indexes of different steps mine different negatives."""
    W0 = planted_labels(L, D, num_centres=24, seed=0)
    rng = np.random.default_rng(5)
    Ws = [W0]
    for _ in range(STEPS):
        Ws.append((Ws[-1] + 0.15 * rng.standard_normal(W0.shape)).astype(np.float32))
    Q, src = planted_queries(W0, B, seed=1)
    indptr = np.arange(B + 1, dtype=np.int64)
    return Ws, Q, indptr, src.astype(np.int64)


def _kw(**kw):
    return dict(k=8, num_negatives=5, skip_top=1, factory="Flat", seed=4, **kw)


def _run_async(tables, refresh_every, lag, slow=0.0, steps=STEPS):
    Ws, Q, indptr, pos = tables
    miner = HardNegativeMiner(L, refresh_every=refresh_every, async_refresh=True,
                              swap_lag=lag, **_kw())
    if slow:  # a build slower than the steps it overlaps: the swap must wait for it
        build = miner._build

        def slow_build(W, m):
            time.sleep(slow)
            return build(W, m)

        miner._build = slow_build
    out, used = [], []
    for t in range(steps):
        miner.maybe_refresh(t, lambda: Ws[t])
        used.append(miner.index_step_)
        out.append(miner.mine(Q, indptr, pos))
    return miner, out, used


def _rule(t, refresh_every, lag):
    """The snapshot step whose index mines step t: the first index is built at step 0
    synchronously; the snapshot of step s (a multiple of refresh_every) is used from s + lag."""
    s = (t - lag) // refresh_every * refresh_every
    return max(s, 0)


@pytest.mark.parametrize("refresh_every,lag", [(3, 1), (3, 2), (4, 4), (1, 1)])
def test_async_equals_sync_fed_the_lagged_table(tables, refresh_every, lag):
    Ws, Q, indptr, pos = tables
    miner, got, used = _run_async(tables, refresh_every, lag)
    assert used == [_rule(t, refresh_every, lag) for t in range(STEPS)]
    # reference: a synchronous miner (same seed: the same sampling stream) rebuilt with the
    # table of step s exactly when the rule switches to s
    ref = HardNegativeMiner(L, **_kw())
    for t in range(STEPS):
        s = _rule(t, refresh_every, lag)
        if ref.index_step_ != s:
            ref.refresh(Ws[s], step=s)
        want = ref.mine(Q, indptr, pos)
        np.testing.assert_array_equal(got[t][0], want[0], err_msg=f"step {t}")
        np.testing.assert_array_equal(got[t][1], want[1], err_msg=f"step {t}")
    # the lag is real: a synchronous miner at the same cadence mines something else
    sync = HardNegativeMiner(L, refresh_every=refresh_every, **_kw())
    differ = 0
    for t in range(STEPS):
        sync.maybe_refresh(t, lambda: Ws[t])
        differ += not np.array_equal(sync.mine(Q, indptr, pos)[1], got[t][1])
    assert differ > 0
    st = miner.stats()
    assert st["staleness_max"] == max(t - _rule(t, refresh_every, lag) for t in range(STEPS))
    assert st["staleness_last"] == STEPS - 1 - used[-1]
    assert st["async_builds"] == len(range(refresh_every, STEPS, refresh_every))
    assert st["refreshes"] == 1 + len([s for s in range(refresh_every, STEPS, refresh_every)
                                       if s + lag < STEPS])


def test_results_do_not_depend_on_the_build_time(tables):
    _, fast, used_fast = _run_async(tables, 3, 1, steps=8)
    miner, slow, used_slow = _run_async(tables, 3, 1, slow=0.3, steps=8)
    assert used_fast == used_slow
    for a, b in zip(fast, slow):
        np.testing.assert_array_equal(a[1], b[1])
    assert miner.stats()["swap_wait_s"] > 0.1  # the swaps did wait for the slow builds


def test_sync_staleness_stats(tables):
    Ws, Q, indptr, pos = tables
    miner = HardNegativeMiner(L, refresh_every=3, **_kw())
    for t in range(7):
        miner.maybe_refresh(t, lambda: Ws[t])
        miner.mine(Q, indptr, pos)
    st = miner.stats()
    assert (st["staleness_max"], st["staleness_last"], st["async_builds"]) == (2, 0, 0)
    assert st["staleness_mean"] == pytest.approx((0 + 1 + 2 + 0 + 1 + 2 + 0) / 7)


def test_save_and_load_with_a_pending_build(tables, tmp_path):
    """A miner saved between a snapshot and its swap resumes to the same negatives."""
    Ws, Q, indptr, pos = tables
    _, want, _ = _run_async(tables, 3, 2, steps=10)
    miner = HardNegativeMiner(L, refresh_every=3, async_refresh=True, swap_lag=2, **_kw())
    for t in range(4):  # snapshot at step 3, swapped in at step 5
        miner.maybe_refresh(t, lambda: Ws[t])
        miner.mine(Q, indptr, pos)
    assert miner.pending_step_ == 3 and miner.index_step_ == 0
    miner.save(tmp_path / "m")
    assert (tmp_path / "m" / "pending_index" / "meta.json").is_file()
    back = HardNegativeMiner(L, refresh_every=3, async_refresh=True, swap_lag=2, **_kw())
    back.load(tmp_path / "m")
    assert (back.pending_step_, back.index_step_, back.last_refresh_step_) == (3, 0, 3)
    for t in range(4, 10):
        back.maybe_refresh(t, lambda: Ws[t])
        got = back.mine(Q, indptr, pos)
        np.testing.assert_array_equal(got[0], want[t][0], err_msg=f"step {t}")
        np.testing.assert_array_equal(got[1], want[t][1], err_msg=f"step {t}")


def test_build_errors_surface_at_the_swap(tables):
    Ws, Q, indptr, pos = tables
    miner = HardNegativeMiner(L, refresh_every=2, async_refresh=True, swap_lag=1, **_kw())
    miner.maybe_refresh(0, lambda: Ws[0])

    def boom(W, m):
        raise MemoryError("no room")

    miner._build = boom
    miner.maybe_refresh(2, lambda: Ws[2])  # starts the failing build; mining goes on
    miner.mine(Q, indptr, pos)
    with pytest.raises(RuntimeError, match="background index build from the snapshot of step 2 "
                                           "failed: no room"):
        miner.maybe_refresh(3, lambda: Ws[3])


def test_swap_lag_validation():
    with pytest.raises(ValueError, match=r"^swap_lag: expected at most refresh_every=3"):
        HardNegativeMiner(L, refresh_every=3, async_refresh=True, swap_lag=4)
    with pytest.raises(ValueError, match=r"^swap_lag: expected an integer >= 1"):
        HardNegativeMiner(L, async_refresh=True, swap_lag=0)


@pytest.mark.parametrize("build_threads,caller", [(None, 2), (2, 1)])
def test_the_background_build_uses_the_thread_budget(tables, build_threads, caller):
    """OpenMP thread counts are per thread (a new thread starts from the process default, not
    from its creator's omp_set_num_threads): the worker sets its own, ``build_threads`` or the
    count in effect in the thread that took the snapshot."""
    from xmr.utils.optional import faiss

    Ws, Q, indptr, pos = tables
    miner = HardNegativeMiner(L, refresh_every=2, async_refresh=True, build_threads=build_threads,
                              **_kw())
    miner.maybe_refresh(0, lambda: Ws[0])
    seen, build = [], miner._build

    def spy(W, m):
        seen.append(faiss().omp_get_max_threads())
        return build(W, m)

    miner._build = spy
    with omp_threads(caller):
        miner.maybe_refresh(2, lambda: Ws[2])
    miner.maybe_refresh(3, lambda: Ws[3])
    assert seen == [build_threads or caller] and miner.index_step_ == 2
