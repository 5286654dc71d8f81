"""Recall vs search time of the miner's candidate indexes at one million labels.

The hard-negative miner (:class:`~xmr.negatives.miner.HardNegativeMiner`) searches one batch of
query embeddings per training step. This script measures, for each candidate FAISS index and a
sweep of its search parameter (``nprobe`` for IVF, ``efSearch`` for HNSW, ``k_factor_rf`` for a
refined PQ), the time of one miner call on a batch of B = 256 queries and the **recall@K of the
mined shortlist** against exact search: the shortlist is the top ``k`` labels after the row's
positives are removed (``k = 32``, ``num_negatives=None``), exactly what the miner returns, and
the reference shortlist is the same selection over :func:`xmr.index.exact_search`.

Data: planted (clustered) label embeddings, L = 100k and 1M, d = 256
(:func:`xmr.data.planted.planted_labels`, 512 centres, noise 1.0, the data of ``bench_index``);
queries near random labels (:func:`~xmr.data.planted.planted_queries`, noise 0.3), each row's
positive its source label. Indexes are built as the miner builds them (MIPS→L2 reduction,
zero-padded to a multiple of 8 coordinates, seed 0). Search runs on **one** FAISS thread (the
training thread's share in ``bench_step``); builds on all threads (the build time of a
background refresh on one thread is about twice that on this 2-core machine). Search time is
the best of ``--repeat`` runs after one warm-up call.

    python -m benchmarks.micro.bench_mining_index            # L = 100k and 1M, d = 256 (≈ 30 min)
    python -m benchmarks.micro.bench_mining_index --tiny     # seconds (smoke test)

Writes ``benchmarks/results/bench_mining_index.json``: per label count, one row per (index,
parameter) and ``choice``, the fastest configuration whose recall@K is >= ``--target`` (0.9).
The miner's ``factory="auto"`` (:func:`xmr.negatives.miner.auto_index`) follows these choices.
"""

from __future__ import annotations

import argparse
import logging
import sys
import time

import numpy as np

from benchmarks._common import write_result
from xmr.data.planted import planted_labels, planted_queries
from xmr.index import exact_search
from xmr.negatives.miner import HardNegativeMiner
from xmr.utils.threads import omp_threads

log = logging.getLogger("bench_mining_index")

#: (factory, build parameters, search parameter, values swept)
GRID = (
    ("IVF{nlist},Flat", {"nlist": 1024}, "nprobe", (1, 2, 4, 8)),
    ("IVF{nlist},Flat", {"nlist": 4096}, "nprobe", (2, 4, 8, 16)),
    ("IVF{nlist},SQ8", {"nlist": 1024}, "nprobe", (1, 2, 4, 8)),
    ("IVF{nlist},SQ8", {"nlist": 4096}, "nprobe", (4, 8, 16)),
    ("IVF{nlist},PQ66x4fs,RFlat", {"nlist": 1024, "nprobe": 2}, "k_factor_rf", (4, 8, 16)),
    ("IVF{nlist},PQ66x4fs,RFlat", {"nlist": 1024, "nprobe": 4}, "k_factor_rf", (8, 16)),
    ("HNSW32", {}, "efSearch", (32, 48, 64, 128)),
)
TINY_GRID = (
    ("IVF{nlist},Flat", {"nlist": 32}, "nprobe", (1, 4)),
    ("IVF{nlist},SQ8", {"nlist": 32}, "nprobe", (4,)),
    ("IVF{nlist},PQ4x4fs,RFlat", {"nlist": 32, "nprobe": 8}, "k_factor_rf", (4,)),
    ("HNSW32", {}, "efSearch", (32,)),
)


def exact_shortlists(W, Q, src, k: int) -> np.ndarray:
    """The reference shortlist ``i64[n, k]``: exact top ``k + 1`` minus the row's positive."""
    _, top = exact_search(W, Q, k + 1)
    out = np.empty((Q.shape[0], k), dtype=np.int64)
    for b in range(Q.shape[0]):
        out[b] = [j for j in top[b] if j != src[b]][:k]
    return out


def shortlist_recall(neg_indptr, neg_ids, ref: np.ndarray) -> float:
    """Mean over rows of |mined ∩ exact| / k."""
    k = ref.shape[1]
    hits = [len(set(neg_ids[neg_indptr[b]:neg_indptr[b + 1]].tolist()) & set(ref[b].tolist()))
            for b in range(ref.shape[0])]
    return float(np.mean(hits)) / k


def run(L: int, d: int, B: int, k: int, grid, repeat: int, target: float) -> dict:
    t0 = time.perf_counter()
    W = planted_labels(L, d, num_centres=512 if L >= 100_000 else 32, noise=1.0, seed=0)
    Q, src = planted_queries(W, B, noise=0.3, seed=1)
    pos_indptr, pos_ids = np.arange(B + 1, dtype=np.int64), src.astype(np.int64)
    log.info("data L=%d d=%d in %.1fs", L, d, time.perf_counter() - t0)
    t0 = time.perf_counter()
    ref = exact_shortlists(W, Q, src, k)
    exact_s = time.perf_counter() - t0
    log.info("exact shortlists in %.1fs", exact_s)
    rows = []
    for factory, build, name, values in grid:
        miner = HardNegativeMiner(L, k=k, refresh_every=1, factory=factory, use_gpu=False,
                                  seed=0, index_params=dict(build))
        t0 = time.perf_counter()
        miner.refresh(W)
        build_s = time.perf_counter() - t0
        resolved = miner.index_.shards_[0].factory
        for v in values:
            miner.index_.set_params(**{name: v})
            with omp_threads(1):
                got = miner.mine(Q, pos_indptr, pos_ids)  # warm-up, and the recall
                best = float("inf")
                for _ in range(repeat):
                    ts = time.perf_counter()
                    miner.mine(Q, pos_indptr, pos_ids)
                    best = min(best, time.perf_counter() - ts)
            row = {"factory": resolved, "build_params": build, "param": name, "value": v,
                   "build_s": round(build_s, 2), "mine_ms": round(best * 1e3, 2),
                   "recall_at_k": round(shortlist_recall(*got, ref), 4)}
            rows.append(row)
            log.info("%-28s %s=%-4d build %6.1fs  mine %8.1f ms  recall@%d %.3f", resolved, name,
                     v, build_s, row["mine_ms"], k, row["recall_at_k"])
        del miner
    ok = [r for r in rows if r["recall_at_k"] >= target]
    choice = min(ok, key=lambda r: r["mine_ms"]) if ok else None
    return {"rows": rows, "exact_shortlist_s": round(exact_s, 2), "choice": choice}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--labels", default="100000,1000000", help="label counts, comma separated")
    p.add_argument("--dim", type=int, default=256)
    p.add_argument("--batch", type=int, default=256, help="queries per miner call")
    p.add_argument("-k", type=int, default=32, help="shortlist size (MinerConfig.k)")
    p.add_argument("--repeat", type=int, default=3, help="best of N timed calls")
    p.add_argument("--target", type=float, default=0.9, help="recall@K the choice must reach")
    p.add_argument("--threads", type=int, default=None, help="FAISS threads of the builds")
    p.add_argument("--tiny", action="store_true", help="L = 5000, d = 16 (smoke test)")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    labels = [int(v) for v in str(args.labels).split(",")]
    if args.tiny:
        labels, args.dim, args.batch, args.repeat = [5000], 16, 32, 1
    grid = TINY_GRID if args.tiny else GRID
    t0 = time.perf_counter()
    with omp_threads(args.threads):
        import faiss

        threads = faiss.omp_get_max_threads()
        res = {str(L): run(L, args.dim, args.batch, args.k, grid, args.repeat, args.target)
               for L in labels}
    config = {"labels": labels, "dim": args.dim, "batch": args.batch, "k": args.k,
              "repeat": args.repeat, "target_recall": args.target, "build_threads": threads,
              "search_threads": 1, "tiny": args.tiny,
              "grid": [{"factory": f, "build": b, "param": n, "values": list(v)}
                       for f, b, n, v in grid],
              "planted": "planted_labels(L, d, num_centres=512, noise=1.0, seed=0); "
                         "planted_queries(W, B, noise=0.3, seed=1); positive = source label",
              "miner": "HardNegativeMiner(k, num_negatives=None, mips_to_l2=True, seed=0)",
              "total_s": round(time.perf_counter() - t0, 1),
              "command": "python -m " + " ".join(["benchmarks.micro.bench_mining_index"]
                                                 + (argv if argv is not None else sys.argv[1:]))}
    path = write_result("bench_mining_index", config, res)
    log.info("wrote %s (choices: %s)", path, {L: r["choice"] for L, r in res.items()})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
