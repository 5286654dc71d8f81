"""Throughput of the XC BoW reader and writer against scikit-learn's svmlight loader.

Generates a synthetic XC BoW file of a realistic shape (default 100k rows, ~100 features and 5
labels per row, D = 100k, L = 50k, ~170 MB), then measures side by side (reader runs interleaved), best of N:

* ``xmr.data.formats.read_xc_bow`` (Numba, chunked) — MB/s of file read and parsed;
* ``sklearn.datasets.load_svmlight_file(multilabel=True, zero_based=True)`` on a header-less copy
  of the same file (only the parse is timed);
* ``xmr.data.formats.write_xc_bow`` — MB/s of text written;

checks that both readers return the same matrices, and reports the compile time of the parser
kernel in a fresh process with an empty Numba cache (cold) and with the on-disk cache (warm).

    python -m benchmarks.micro.bench_io            # writes benchmarks/results/bench_io.json
    python -m benchmarks.micro.bench_io --rows 20000 --repeat 2   # a quick run
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import scipy.sparse as sp

from benchmarks._common import ROOT, best_time, write_result


def synthetic_xy(rows: int, d: int, l: int, nnz_x: int, nnz_y: int, seed: int = 0):
    """Random CSR ``X f32 [rows, d]`` (~nnz_x sorted unique ids/row, L2-normalised TF-IDF-like
    values) and ``Y f32 [rows, l]`` (~nnz_y labels/row)."""
    rng = np.random.default_rng(seed)

    def pattern(width, k):
        ids = np.sort(rng.integers(0, width, (rows, k)), axis=1)
        keep = np.ones_like(ids, dtype=bool)
        keep[:, 1:] = ids[:, 1:] != ids[:, :-1]
        indptr = np.zeros(rows + 1, np.int64)
        np.cumsum(keep.sum(1), out=indptr[1:])
        return indptr, ids[keep].astype(np.int32)

    xp, xi = pattern(d, nnz_x)
    xv = rng.gamma(1.0, 1.0, len(xi)).astype(np.float32)
    X = sp.csr_matrix((xv, xi, xp), shape=(rows, d))
    norms = np.sqrt(np.asarray(X.multiply(X).sum(1)).ravel()).astype(np.float32)
    X = sp.csr_matrix(sp.diags(1.0 / norms).astype(np.float32) @ X, dtype=np.float32)
    yp, yi = pattern(l, nnz_y)
    Y = sp.csr_matrix((np.ones(len(yi), np.float32), yi, yp), shape=(rows, l))
    return X, Y


def compile_seconds(path: Path, cold: bool) -> float:
    """Time of the first read of a tiny file in a fresh process (cold: empty Numba cache)."""
    code = ("import time; t=time.perf_counter(); from xmr.data.formats import read_xc_bow; "
            f"read_xc_bow({str(path)!r}); print(time.perf_counter()-t)")
    env = dict(os.environ)
    with tempfile.TemporaryDirectory() as cache:
        if cold:
            env["NUMBA_CACHE_DIR"] = cache
        out = subprocess.run([sys.executable, "-c", code], env=env, cwd=ROOT, check=True,
                             capture_output=True, text=True).stdout
    return float(out.strip().splitlines()[-1])


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rows", type=int, default=100_000)
    ap.add_argument("--features", type=int, default=100_000)
    ap.add_argument("--labels", type=int, default=50_000)
    ap.add_argument("--nnz-x", type=int, default=100)
    ap.add_argument("--nnz-y", type=int, default=5)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--repeat-sklearn", type=int, default=2)
    args = ap.parse_args()

    from sklearn.datasets import load_svmlight_file

    from xmr.data.formats import read_xc_bow, write_xc_bow

    X, Y = synthetic_xy(args.rows, args.features, args.labels, args.nnz_x, args.nnz_y)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        path = tmp / "train.txt"
        t_write = best_time(lambda: write_xc_bow(path, X, Y), repeat=args.repeat, warmup=1)
        size = path.stat().st_size
        mb = size / 1e6
        bare = tmp / "train.svm"  # header-less copy for sklearn
        with open(path, "rb") as src, open(bare, "wb") as dst:
            src.readline()
            while chunk := src.read(64 << 20):
                dst.write(chunk)
        mb_bare = bare.stat().st_size / 1e6

        tiny = tmp / "tiny.txt"
        write_xc_bow(tiny, X[:10], Y[:10])
        t_cold = compile_seconds(tiny, cold=True)
        t_warm = compile_seconds(tiny, cold=False)

        def sk():
            return load_svmlight_file(str(bare), n_features=args.features, multilabel=True,
                                      zero_based=True, dtype=np.float32)

        # interleaved runs, best of each: both readers see the same load on the shared machine
        X1, Y1 = read_xc_bow(path)  # warm-up
        t_xmr = t_sk = float("inf")
        for i in range(max(args.repeat, args.repeat_sklearn)):
            if i < args.repeat:
                t_xmr = min(t_xmr, best_time(lambda: read_xc_bow(path), repeat=1, warmup=0))
            if i < args.repeat_sklearn:
                t_sk = min(t_sk, best_time(sk, repeat=1, warmup=0))
        X2, y2 = sk()

    # same matrices?
    X2 = sp.csr_matrix(X2)
    X2.sort_indices()
    same_x = (X1.shape == X2.shape and np.array_equal(X1.indptr, X2.indptr)
              and np.array_equal(X1.indices, X2.indices) and np.array_equal(X1.data, X2.data))
    lab_ind = np.fromiter((int(v) for row in y2 for v in row), np.int64)
    lab_ptr = np.concatenate([[0], np.cumsum([len(r) for r in y2])])
    same_y = np.array_equal(Y1.indptr, lab_ptr) and np.array_equal(Y1.indices, lab_ind)
    same_as_written = (abs(X1 - X).nnz == 0) and (Y1 != Y).nnz == 0
    results = {
        "file_mb": round(mb, 1),
        "nnz_x": int(X.nnz),
        "nnz_y": int(Y.nnz),
        "xmr_read_s": round(t_xmr, 3),
        "xmr_read_mb_s": round(mb / t_xmr, 1),
        "sklearn_read_s": round(t_sk, 3),
        "sklearn_read_mb_s": round(mb_bare / t_sk, 1),
        "read_speedup_vs_sklearn": round((mb / t_xmr) / (mb_bare / t_sk), 2),
        "xmr_write_s": round(t_write, 3),
        "xmr_write_mb_s": round(mb / t_write, 1),
        "compile_cold_s": round(t_cold, 2),
        "compile_cached_s": round(t_warm, 2),
        "same_as_sklearn": bool(same_x and same_y),
        "same_as_written": bool(same_as_written),
    }
    config = {"rows": args.rows, "features": args.features, "labels": args.labels,
              "nnz_x_per_row": args.nnz_x, "nnz_y_per_row": args.nnz_y, "repeat": args.repeat,
              "repeat_sklearn": args.repeat_sklearn, "chunk_bytes": 64 << 20}
    out = write_result("bench_io", config, results)
    for k, v in results.items():
        print(f"{k:>26}: {v}")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
