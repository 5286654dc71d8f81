"""xmr's presets against omikuji and napkinXC on debian-deps, measured side by side.

Each method runs in its own process on the same seeded split; each peer runs in the current
environment if it imports there, else in a virtual environment the script creates for it under
``benchmarks/.peer-venvs/`` (pip install by name), else it is skipped with the reason. Reports
P@1/3/5, PSP@1/3/5, training time, prediction ms/query and peak memory (max RSS of the process).

    python benchmarks/bench_peers.py            # default sizes (~10 minutes on 2 cores)
    python benchmarks/bench_peers.py --quick    # tiny epochs, for a smoke run
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import venv
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from benchmarks._common import write_result  # noqa: E402

PEERS = {"omikuji": "omikuji", "napkinxc-plt": "napkinxc"}


def peer_python(module: str, pip_name: str) -> "tuple[str | None, str]":
    """An interpreter that can import ``module``: this one, or a fresh venv with it installed."""
    probe = subprocess.run([sys.executable, "-c", f"import {module}"], capture_output=True)
    if probe.returncode == 0:
        return sys.executable, "current environment"
    env_dir = HERE / ".peer-venvs" / pip_name
    py = env_dir / "bin" / "python"
    if not py.exists():
        venv.create(env_dir, with_pip=True)
    r = subprocess.run([str(py), "-m", "pip", "install", "-q", pip_name, "numpy", "scipy"],
                       capture_output=True, text=True)
    if r.returncode != 0:
        return None, f"pip install {pip_name} failed: {r.stderr.strip().splitlines()[-1:]}"
    return str(py), f"venv {env_dir}"


def export(ds, d: Path):
    import scipy.sparse as sp

    from xmr.data.formats import write_xc_bow

    d.mkdir(parents=True, exist_ok=True)
    for name, M in (("X_trn", ds.X_trn), ("Y_trn", ds.Y_trn), ("X_tst", ds.X_tst), ("Y_tst", ds.Y_tst)):
        sp.save_npz(d / f"{name}.npz", sp.csr_matrix(M))
    write_xc_bow(d / "trn.txt", ds.X_trn, ds.Y_trn)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--presets", default="softmax,mined,double-distill")
    ap.add_argument("--out", default=None)
    args = ap.parse_args(argv)

    import numpy as np

    from xmr.data.debian import load_debian_deps
    from xmr.eval import evaluate
    from xmr.eval.propensity import inverse_propensity

    ds = load_debian_deps()
    inv = inverse_propensity(ds.Y_trn, A=ds.prop_a, B=ds.prop_b)
    epochs, tdim, sdim = (1, 64, 32) if args.quick else (4, 256, 96)  # the demo's sizes
    rows, skipped = [], {}
    with tempfile.TemporaryDirectory(prefix="xmr-peers-") as tmp:
        tmp = Path(tmp)
        export(ds, tmp / "data")
        env = dict(os.environ, OMP_NUM_THREADS=str(args.threads), PYTHONPATH=str(HERE.parent.parent))

        def record(out: Path, extra=None):
            res = json.loads((out / "result.json").read_text())
            ids = np.load(out / "ids.npy")
            m = evaluate(ds.Y_tst, ids, ks=(1, 3, 5), inv_prop=inv)
            res.update({k: m[k] for k in ("P@1", "P@3", "P@5", "PSP@1", "PSP@3", "PSP@5")})
            res.update(extra or {})
            rows.append(res)
            print(f"{res['method']:<34s} P@1={res['P@1']:.3f} P@5={res['P@5']:.3f} PSP@1={res['PSP@1']:.3f} "
                  f"train={res['train_s']:.1f}s pred={res['predict_ms_per_query']:.3f}ms/q "
                  f"rss={res['peak_rss_mb']:.0f}MB", flush=True)

        for method, mod in PEERS.items():
            py, where = peer_python(mod, mod)
            if py is None:
                skipped[method] = where
                print(f"skipping {method}: {where}", flush=True)
                continue
            out = tmp / method
            r = subprocess.run([py, str(HERE / "peers" / "run_peer.py"), method, str(tmp / "data"), str(out),
                                "--threads", str(args.threads)], env=env, capture_output=True, text=True)
            if r.returncode != 0:
                skipped[method] = f"failed: {r.stderr.strip()[-300:]}"
                print(f"{method} failed: {r.stderr[-500:]}", flush=True)
                continue
            record(out, {"environment": where})

        worker = [sys.executable, str(HERE / "peers" / "run_xmr.py")]
        common = ["--epochs", str(epochs), "--threads", str(args.threads)]
        # the teacher is cross-fitted as in `xmr demo`: each training point is scored by the
        # teacher (of two) that did not see it
        folds, parts, t_rows = 2, [], []
        for f in range(folds):
            t_out = tmp / f"xmr-teacher{f}"
            subprocess.run(worker + ["softmax", str(t_out), "--dim", str(tdim), "--export-k", "32",
                                     "--folds", str(folds), "--fold", str(f)] + common, env=env, check=True)
            parts.append(np.load(t_out / "teacher_part.npz"))
            t_rows.append(json.loads((t_out / "result.json").read_text()))
        train_total = sum(r["train_s"] for r in t_rows)
        t_out = tmp / "xmr-teacher0"
        res0 = json.loads((t_out / "result.json").read_text())
        res0.update(method=f"xmr teacher softmax (d={tdim}, 1 of {folds} folds)", train_s=train_total)
        (t_out / "result.json").write_text(json.dumps(res0))
        record(t_out, {"role": "teacher", "note": f"train_s sums the {folds} fold teachers"})
        from xmr.teachers.store import from_topk

        n_trn, K = ds.X_trn.shape[0], 32
        ids, scores = np.full((n_trn, K), -1, np.int64), np.full((n_trn, K), -np.inf, np.float32)
        for p in parts:
            ids[p["rows"]], scores[p["rows"]] = p["ids"], p["scores"]
        store_dir = from_topk(ids, scores, ds.num_labels, {"source": "bench_peers cross-fitted teacher",
                                                           "folds": folds}).save(tmp / "teacher_store")
        for preset in [p for p in args.presets.split(",") if p]:
            out = tmp / f"xmr-{preset}"
            subprocess.run(worker + [preset, str(out), "--dim", str(sdim),
                                     "--teacher-store", str(store_dir)] + common,
                           env=env, check=True)
            record(out, {"role": "student"})
    path = write_result("bench_peers" if not args.quick else "bench_peers_quick",
                        {"dataset": "debian-deps", "split": "seeded 80/20 (seed 0)", "epochs": epochs,
                         "teacher_dim": tdim, "student_dim": sdim, "threads": args.threads},
                        {"rows": rows, "skipped": skipped})
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
