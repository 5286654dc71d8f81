"""Helpers shared by the tests (plain functions, imported by name: ``from _helpers import ...``;
``tests/`` is on ``sys.path`` through ``pythonpath`` in setup.cfg). The fixtures built on them
(``planted``, ``one_faiss_thread``) are in ``tests/conftest.py``.

- :func:`run_ranks`: the 2-process gloo harness (spawned ranks on 127.0.0.1, a deadline);
- :func:`random_csr`: random CSR inputs with empty rows, duplicates and edge ids;
- planted data: :func:`planted_sparse` (sparse X/Y a model can learn) and the
  bring-your-own-data generators :func:`planted_text`, :func:`tsv_folder`,
  :func:`planted_matrices` (planted label embeddings and queries for search tests come from the
  library itself, :mod:`xmr.data.planted`).
"""

from __future__ import annotations

import os
import socket
import time
from pathlib import Path

import numpy as np
import pytest
import scipy.sparse as sp

# ------------------------------------------------------------------------------------------------
# processes
# ------------------------------------------------------------------------------------------------


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _rank_main(rank, fn, world, port, pg_timeout_s, args):
    import datetime

    import torch
    import torch.distributed as dist

    os.environ.setdefault("GLOO_SOCKET_IFNAME", "lo")
    torch.set_num_threads(1)
    kw = {} if pg_timeout_s is None else {"timeout": datetime.timedelta(seconds=pg_timeout_s)}
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank,
                            world_size=world, **kw)
    try:
        fn(rank, *args)
    finally:
        dist.destroy_process_group()


def run_ranks(fn, *args, world: int = 2, timeout_s: float = 120.0, pg_timeout_s=None) -> None:
    """Run ``fn(rank, *args)`` in ``world`` spawned processes joined in one gloo process group
    (TCP rendezvous on a free port of 127.0.0.1, one torch thread per process; the group is
    destroyed when ``fn`` returns or raises).

    ``fn`` must be a module-level function (it is pickled by name); results travel through
    files it writes. An exception in a rank is raised here (``ProcessRaisedException``, with the
    rank's traceback); ranks still running after ``timeout_s`` are killed and the test fails
    (a hang becomes a failure). ``pg_timeout_s``: the process group's own timeout (torch's
    default when None).
    """
    import torch.multiprocessing as mp

    ctx = mp.spawn(_rank_main, args=(fn, world, free_port(), pg_timeout_s, args), nprocs=world,
                   join=False)
    deadline = time.monotonic() + timeout_s
    while not ctx.join(timeout=1):
        if time.monotonic() > deadline:
            for proc in ctx.processes:
                proc.kill()
            pytest.fail(f"distributed workers did not finish within {timeout_s:g} s")


# ------------------------------------------------------------------------------------------------
# random CSR
# ------------------------------------------------------------------------------------------------


def random_csr(rng, num_rows, num_labels, max_per_row, p_empty=0.2, p_edge=0.2, pool=None):
    """Random CSR (indptr i64[B+1], ids i64) with empty rows, duplicates and ids at 0 and L-1.

    ``pool``: draw ids from this small array (forces collisions between rows)."""
    counts = rng.integers(0, max_per_row + 1, size=num_rows)
    counts[rng.random(num_rows) < p_empty] = 0
    indptr = np.zeros(num_rows + 1, dtype=np.int64)
    indptr[1:] = np.cumsum(counts)
    n = int(indptr[-1])
    if pool is None:
        ids = rng.integers(0, num_labels, size=n)
    else:
        ids = rng.choice(pool, size=n)
    edge = rng.random(n) < p_edge
    ids[edge] = rng.choice([0, num_labels - 1], size=int(edge.sum()))
    dup = rng.random(n) < 0.1  # in-row duplicates: copy the previous entry of the same row
    for i in np.flatnonzero(dup):
        r = np.searchsorted(indptr, i, side="right") - 1
        if i > indptr[r]:
            ids[i] = ids[i - 1]
    return indptr, ids.astype(np.int64)


# ------------------------------------------------------------------------------------------------
# planted data
# ------------------------------------------------------------------------------------------------


def planted_sparse(n=400, D=300, L=60, seed=0):
    """Each label owns a few features; a point's labels are 1-3 labels and its features are
    drawn from them (plus noise), so a model can learn the mapping. ``(X, Y)`` CSR float32."""
    rng = np.random.default_rng(seed)
    feat_of = rng.integers(0, D, size=(L, 4))
    rows_x, cols_x, rows_y, cols_y = [], [], [], []
    for i in range(n):
        labels = rng.choice(L, size=rng.integers(1, 4), replace=False)
        feats = np.concatenate([feat_of[labels].ravel(), rng.integers(0, D, 3)])
        rows_x += [i] * len(feats)
        cols_x += feats.tolist()
        rows_y += [i] * len(labels)
        cols_y += labels.tolist()
    X = sp.csr_matrix((np.ones(len(rows_x), np.float32), (rows_x, cols_x)), shape=(n, D))
    X.sum_duplicates()
    X.data = np.log1p(X.data).astype(np.float32)
    Y = sp.csr_matrix((np.ones(len(rows_y), np.float32), (rows_y, cols_y)), shape=(n, L))
    return X, Y


# bring your own data: small planted datasets in every layout xmr reads

WORDS = [f"w{i:02d}" for i in range(40)]
TOPICS = [f"topic-{c}" for c in "abcdefghij"]


def planted_text(n: int = 300, seed: int = 0):
    """Points whose words reveal their labels: label t owns words 4t..4t+3."""
    rng = np.random.default_rng(seed)
    rows = []
    for _ in range(n):
        k = 1 + int(rng.integers(0, 2))
        labs = sorted(set(int(x) for x in rng.choice(len(TOPICS), k, replace=False)))
        words = [WORDS[4 * t + int(rng.integers(0, 4))] for t in labs for _ in range(3)]
        words += [WORDS[int(rng.integers(0, 40))]]
        rng.shuffle(words)
        rows.append((" ".join(words), [TOPICS[t] for t in labs]))
    return rows


def write_tsv(path: Path, rows) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(f"{t}\t{','.join(ls)}\n" for t, ls in rows), encoding="utf-8")
    return path


def tsv_folder(folder: Path, n: int = 300, seed: int = 0) -> Path:
    rows = planted_text(n, seed)
    cut = int(0.8 * n)
    write_tsv(folder / "train.tsv", rows[:cut])
    write_tsv(folder / "test.tsv", rows[cut:])
    return folder


def planted_matrices(n_trn: int = 120, n_tst: int = 30, D: int = 50, L: int = 12, seed: int = 0):
    """CSR float32 X/Y with every row holding at least one feature and one label."""
    rng = np.random.default_rng(seed)

    def make(n):
        Y = sp.random(n, L, density=0.15, random_state=rng, format="csr", dtype=np.float32)
        Y.data[:] = 1
        Y = (Y + sp.csr_matrix((np.ones(n, np.float32), (np.arange(n), rng.integers(0, L, n))),
                                shape=(n, L))).tocsr()
        Y.data[:] = 1
        X = sp.random(n, D, density=0.2, random_state=rng, format="csr", dtype=np.float32)
        X = (X + sp.csr_matrix((np.ones(n, np.float32), (np.arange(n), rng.integers(0, D, n))),
                                shape=(n, D))).tocsr()
        X.sum_duplicates()
        X.sort_indices()
        Y.sort_indices()
        return X, Y

    X_trn, Y_trn = make(n_trn)
    X_tst, Y_tst = make(n_tst)
    return {"X_trn": X_trn, "Y_trn": Y_trn, "X_tst": X_tst, "Y_tst": Y_tst}
