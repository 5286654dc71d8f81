"""Sharded mining: two gloo processes, each indexing only its own label range, mine exactly the
shortlist that one process with an exact (Flat) index over all labels mines for the concatenated
batch — also with skip_top, sampling, uneven batches, a MIPS reduction whose row norms differ
between the shards, and asynchronous refresh; bad input on one rank raises on both."""

import os

import numpy as np
import pytest
import torch.distributed as dist
from _helpers import run_ranks

pytest.importorskip("faiss")

from xmr.data.planted import planted_labels, planted_queries  # noqa: E402
from xmr.negatives.miner import HardNegativeMiner  # noqa: E402

pytestmark = pytest.mark.distributed

WORLD, L, D = 2, 1201, 16
SPLIT = [23, 14]  # uneven batch sizes on purpose
STEPS = 7


def _problem():
    """Tables of STEPS steps (drifting; rank 1's rows longer, so the MIPS M is rank 1's) and
    a batch per step with 1-4 positives per row, built identically in every process."""
    W = planted_labels(L, D, num_centres=24, seed=0)
    W[L // 2:] *= 1.7
    rng = np.random.default_rng(3)
    Ws = [W]
    for _ in range(STEPS - 1):
        Ws.append((Ws[-1] + 0.1 * rng.standard_normal(W.shape)).astype(np.float32))
    B = sum(SPLIT)
    Q, src = planted_queries(W, B, seed=1)
    rows = [np.unique(np.concatenate([[src[b]], rng.integers(0, L, rng.integers(0, 4))]))
            for b in range(B)]
    indptr = np.zeros(B + 1, np.int64)
    indptr[1:] = np.cumsum([len(r) for r in rows])
    return Ws, Q.astype(np.float32), indptr, np.concatenate(rows).astype(np.int64)


def _local(indptr, ids, a, b):
    return indptr[a:b + 1] - indptr[a], ids[indptr[a]:indptr[b]]


CONFIGS = {
    "flat": dict(k=10, skip_top=2, num_negatives=6, factory="Flat", refresh_every=3),
    "flat-async": dict(k=10, num_negatives=6, factory="Flat", refresh_every=3,
                       async_refresh=True, swap_lag=2),
}


def _mine_all(miner, Ws, Q, indptr, ids, rows, lo=0, hi=L):
    out = []
    a, b = rows
    ip, pi = _local(indptr, ids, a, b)
    for t in range(STEPS):
        miner.maybe_refresh(t, lambda: Ws[t][lo:hi])
        out.append(miner.mine(Q[a:b], ip, pi))
    return out


def _worker(rank, out_dir):
    from xmr.utils.threads import omp_threads

    Ws, Q, indptr, ids = _problem()
    a = sum(SPLIT[:rank])
    res = {}
    with omp_threads(1):
        for name, kw in CONFIGS.items():
            m = HardNegativeMiner(L, seed=5, process_group=dist.group.WORLD, **kw)
            res[name] = _mine_all(m, Ws, Q, indptr, ids, (a, a + SPLIT[rank]), m.lo, m.hi)
            res[name + ":range"] = (m.lo, m.hi, m.index_.ntotal)
        # bad input on rank 1 only: both ranks raise, neither hangs
        m = HardNegativeMiner(L, k=5, factory="Flat", process_group=dist.group.WORLD)
        m.refresh(Ws[0][m.lo:m.hi])
        ip, pi = _local(indptr, ids, a, a + SPLIT[rank])
        if rank == 1:
            pi = pi.copy()
            pi[0] = L
        try:
            m.mine(Q[a:a + SPLIT[rank]], ip, pi)
            res["error"] = None
        except ValueError as e:
            res["error"] = str(e)
    np.save(os.path.join(out_dir, f"rank{rank}.npy"), np.array(res, dtype=object),
            allow_pickle=True)


def test_two_ranks_mine_the_single_process_exact_shortlist(tmp_path):
    run_ranks(_worker, str(tmp_path), world=WORLD, timeout_s=120)
    res = [np.load(tmp_path / f"rank{r}.npy", allow_pickle=True).item() for r in range(WORLD)]
    Ws, Q, indptr, ids = _problem()
    B = sum(SPLIT)
    for name, kw in CONFIGS.items():
        # each rank indexed its own half of the labels only
        assert [r[name + ":range"] for r in res] == [(0, 600, 600), (600, 1201, 601)]
        ref = HardNegativeMiner(L, seed=5, **kw)
        want = _mine_all(ref, Ws, Q, indptr, ids, (0, B))
        assert (want[0][1] < 600).any() and (want[0][1] >= 600).any()  # both shards count
        for t in range(STEPS):
            got_ptr = np.concatenate([res[0][name][t][0], res[1][name][t][0][1:]
                                      + res[0][name][t][0][-1]])
            got_ids = np.concatenate([res[0][name][t][1], res[1][name][t][1]])
            np.testing.assert_array_equal(got_ptr, want[t][0], err_msg=f"{name} step {t}")
            np.testing.assert_array_equal(got_ids, want[t][1], err_msg=f"{name} step {t}")
    assert "pos_ids: expected label ids in [0, 1201)" in res[1]["error"]
    assert "rank(s) [1] rejected their input" in res[0]["error"]
