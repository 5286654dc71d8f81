"""Worker run in its own process (and, for a peer, its own virtual environment): train one
method on a dataset exported by ``benchmarks.studies.bench_peers``, predict the test set's
top-5, and report training time, prediction ms/query and the process's peak resident memory.

Usage: python -m benchmarks.studies.peers.run_peer METHOD DATA_DIR OUT_DIR [--threads N]
METHOD: omikuji | napkinxc-plt

Only numpy and scipy beside the peer are needed (nothing from ``benchmarks`` or ``xmr``), so the
same module runs in a peer's venv (launched from the repository root).
"""

import argparse
import json
import resource
import sys
import time
from pathlib import Path

import numpy as np
import scipy.sparse as sp


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # Linux: KiB


def run_omikuji(data: Path, out: Path, threads: int):
    import omikuji

    hp = omikuji.Model.default_hyper_param()  # Parabel-like defaults (PLT, balanced 2-means)
    t0 = time.perf_counter()
    model = omikuji.Model.train_on_data(str(data / "trn.txt"), hp, n_threads=threads)
    train_s = time.perf_counter() - t0
    X = sp.load_npz(data / "X_tst.npz").tocsr()
    rows = [list(zip(X.indices[X.indptr[i]:X.indptr[i + 1]].tolist(),
                     X.data[X.indptr[i]:X.indptr[i + 1]].tolist())) for i in range(X.shape[0])]
    ids = np.full((X.shape[0], 5), -1, np.int64)
    t0 = time.perf_counter()
    for i, r in enumerate(rows):
        pred = model.predict(r, top_k=5)
        ids[i, :len(pred)] = [p[0] for p in pred]
    pred_s = time.perf_counter() - t0
    return ids, train_s, pred_s


def run_napkinxc(data: Path, out: Path, threads: int):
    from napkinxc.models import PLT

    X = sp.load_npz(data / "X_trn.npz").tocsr()
    Y = sp.load_npz(data / "Y_trn.npz").tocsr()
    Ylists = [Y.indices[Y.indptr[i]:Y.indptr[i + 1]].tolist() for i in range(Y.shape[0])]
    model = PLT(str(out / "napkinxc-model"), threads=threads, seed=0)
    t0 = time.perf_counter()
    model.fit(X, Ylists)
    train_s = time.perf_counter() - t0
    Xt = sp.load_npz(data / "X_tst.npz").tocsr()
    t0 = time.perf_counter()
    preds = model.predict(Xt, top_k=5)
    pred_s = time.perf_counter() - t0
    ids = np.full((Xt.shape[0], 5), -1, np.int64)
    for i, p in enumerate(preds):
        ids[i, :len(p)] = p[:5]
    return ids, train_s, pred_s


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("method", choices=["omikuji", "napkinxc-plt"])
    ap.add_argument("data", type=Path)
    ap.add_argument("out", type=Path)
    ap.add_argument("--threads", type=int, default=2)
    a = ap.parse_args()
    a.out.mkdir(parents=True, exist_ok=True)
    fn = run_omikuji if a.method == "omikuji" else run_napkinxc
    ids, train_s, pred_s = fn(a.data, a.out, a.threads)
    np.save(a.out / "ids.npy", ids)
    n = ids.shape[0]
    (a.out / "result.json").write_text(json.dumps({
        "method": a.method, "train_s": train_s, "predict_ms_per_query": 1000 * pred_s / n,
        "peak_rss_mb": peak_rss_mb(), "python": sys.version.split()[0]}))


if __name__ == "__main__":
    main()
