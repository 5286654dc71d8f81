"""Benchmark of xmr.eval: metric evaluation and the top-k kernels, against references.

Measured side by side in one run (best of N), reported as ratios:

1. ``evaluate`` (P, nDCG, R, PSP, PSnDCG at 1/3/5) vs the five napkinXC ``napkinxc.metrics``
   calls on the same top-5 lists (a per-row Python loop), with the values checked to agree;
2. the Numba top-k kernels vs their numpy references (CSR rows of 100 scores; dense rows),
   and, for dense rows, vs the usual argpartition idiom (which does not order ties);
3. ``evaluate`` at the scale named in the design: n = 1M test rows, L = 3M labels, k = 5.

    python -m benchmarks.micro.bench_metrics            # writes benchmarks/results/metrics.json
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import scipy.sparse as sp

from benchmarks._common import best_time, write_result


def _problem(n, L, K, seed=0, max_pos=10):
    """Random ground truth (0..max_pos-1 positives a row) and distinct top-K ids with hits."""
    rng = np.random.default_rng(seed)
    npos = rng.integers(0, max_pos, n)
    indptr = np.concatenate([[0], np.cumsum(npos)])
    Y = sp.csr_matrix((np.ones(indptr[-1]), rng.integers(0, L, indptr[-1]), indptr), shape=(n, L))
    Y.sum_duplicates()
    # ids: the row's first positive (if any) then K-1 distinct random labels shifted off it
    ids = (rng.integers(0, L // K, (n, 1)) * K + np.arange(K)[None, :]).astype(np.int64)
    has = np.diff(Y.indptr) > 0
    first = Y.indices[np.minimum(Y.indptr[:-1], max(Y.nnz - 1, 0))]
    clash = (ids[:, 1:] == first[:, None]).any(axis=1)
    ids[has & ~clash, 0] = first[has & ~clash]
    return Y, ids


def bench_vs_napkinxc(n, L, repeat):
    import napkinxc.metrics as nm

    from xmr.eval import evaluate, inverse_propensity

    Y, ids = _problem(n, L, 5, seed=1)
    w = inverse_propensity(Y)
    lists = [[int(j) for j in row if j >= 0] for row in ids]
    ours = evaluate(Y, ids, ks=(1, 3, 5), inv_prop=w)

    def nxc():
        return {"P": nm.precision_at_k(Y, lists, k=5), "nDCG": nm.ndcg_at_k(Y, lists, k=5),
                "R": nm.recall_at_k(Y, lists, k=5), "PSP": nm.psprecision_at_k(Y, lists, w, k=5),
                "PSnDCG": nm.psndcg_at_k(Y, lists, w, k=5)}

    t0 = time.perf_counter()
    ref = nxc()  # one timed run: a per-row Python loop, minutes to repeat
    t_nxc = time.perf_counter() - t0
    max_diff = max(abs(ours[f"{m}@{k}"] - ref[m][k - 1]) for m in ref for k in (1, 3, 5))
    t_ours = best_time(lambda: evaluate(Y, ids, ks=(1, 3, 5), inv_prop=w), repeat=repeat)
    return {"n": n, "L": L, "k": 5, "xmr_s": t_ours, "napkinxc_s": t_nxc,
            "speedup": t_nxc / t_ours, "max_abs_diff": max_diff}


def bench_topk(repeat):
    from xmr.kernels.metrics import topk_csr, topk_csr_ref, topk_dense, topk_dense_ref

    rng = np.random.default_rng(2)
    out = {}
    n, m, L, k = 20_000, 100, 1_000_000, 5
    indptr = np.arange(n + 1, dtype=np.int64) * m
    S = sp.csr_matrix((rng.random(n * m).astype(np.float32), rng.integers(0, L, n * m), indptr),
                      shape=(n, L))
    S.sum_duplicates()
    o_s, o_i = np.empty((n, k), np.float32), np.empty((n, k), np.int64)
    topk_csr(S.indptr, S.indices, S.data, k, o_s, o_i)  # compile
    assert np.array_equal(o_i, topk_csr_ref(S.indptr, S.indices, S.data, k)[1])
    t_k = best_time(lambda: topk_csr(S.indptr, S.indices, S.data, k, o_s, o_i), repeat=repeat)
    t_r = best_time(lambda: topk_csr_ref(S.indptr, S.indices, S.data, k), repeat=repeat)
    out["csr"] = {"n": n, "nnz": int(S.nnz), "k": k, "kernel_s": t_k, "numpy_ref_s": t_r,
                  "speedup_vs_ref": t_r / t_k}
    n, L = 500, 50_000
    D = rng.random((n, L), dtype=np.float32)
    o_s, o_i = np.empty((n, k), np.float32), np.empty((n, k), np.int64)
    topk_dense(D, k, o_s, o_i)
    assert np.array_equal(o_i, topk_dense_ref(D, k)[1])
    t_k = best_time(lambda: topk_dense(D, k, o_s, o_i), repeat=repeat)
    t_r = best_time(lambda: topk_dense_ref(D, k), repeat=repeat)

    def argpartition_topk():  # the usual numpy idiom; ties at the k-th score in arbitrary order
        part = np.argpartition(-D, k - 1, axis=1)[:, :k]
        order = np.argsort(-np.take_along_axis(D, part, axis=1), axis=1, kind="stable")
        return np.take_along_axis(part, order, axis=1)

    t_p = best_time(argpartition_topk, repeat=repeat)
    out["dense"] = {"n": n, "L": L, "k": k, "kernel_s": t_k, "numpy_ref_s": t_r,
                    "numpy_argpartition_s": t_p, "speedup_vs_ref": t_r / t_k,
                    "speedup_vs_argpartition": t_p / t_k}
    return out


def bench_scale(n, L, repeat):
    from xmr.eval import evaluate, inverse_propensity

    Y, ids = _problem(n, L, 5, seed=3)
    w = inverse_propensity(Y, A=0.6, B=2.6)
    t = best_time(lambda: evaluate(Y, ids, ks=(1, 3, 5), inv_prop=w), repeat=repeat)
    return {"n": n, "L": L, "k": 5, "nnz_Y": int(Y.nnz), "evaluate_s": t,
            "rows_per_s": n / t}


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--quick", action="store_true", help="small sizes (a smoke run)")
    a = ap.parse_args()
    q = a.quick
    config = {"repeat": a.repeat, "quick": q}
    t0 = time.perf_counter()
    results = {
        "vs_napkinxc": bench_vs_napkinxc(2_000 if q else 10_000, 100_000, a.repeat),
        "topk_kernels": bench_topk(a.repeat),
        "scale": bench_scale(100_000 if q else 1_000_000, 3_000_000, a.repeat),
    }
    results["total_s"] = time.perf_counter() - t0
    path = write_result("metrics", config, results)
    print(path)
    import json

    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
