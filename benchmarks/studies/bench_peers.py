"""xmr's presets against omikuji and napkinXC on debian-deps, measured side by side.

Each method runs in its own process on the same seeded split; each peer runs in the current
environment if it imports there, else in a virtual environment the script creates for it under
``benchmarks/.peer-venvs/`` (pip install by name), else it is skipped with the reason. Reports
P@1/3/5, PSP@1/3/5, training time, prediction ms/query and peak memory (max RSS of the process).

    python -m benchmarks.studies.bench_peers            # default sizes (~10 minutes on 2 cores)
    python -m benchmarks.studies.bench_peers --quick    # tiny epochs, for a smoke run

The workers (``benchmarks/studies/peers/``) run as modules from the repository root; the peer
worker imports only numpy, scipy and the peer, so it runs in a peer's own venv too.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import venv
from pathlib import Path

from benchmarks._common import RESULTS, ROOT, python_env, run_worker, write_result

PEER_WORKER = "benchmarks.studies.peers.run_peer"
XMR_WORKER = "benchmarks.studies.peers.run_xmr"

PEERS = {"omikuji": "omikuji", "napkinxc-plt": "napkinxc"}


def peer_python(module: str, pip_name: str) -> "tuple[str | None, str]":
    """An interpreter that can import ``module``: this one, or a fresh venv with it installed."""
    probe = subprocess.run([sys.executable, "-c", f"import {module}"], capture_output=True)
    if probe.returncode == 0:
        return sys.executable, "current environment"
    env_dir = ROOT / "benchmarks" / ".peer-venvs" / pip_name
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
    ap.add_argument("--presets", default="softmax,distill,double-distill")
    ap.add_argument("--folds", type=int, default=3, help="cross-fitting folds of the teachers")
    ap.add_argument("--wide-dim", type=int, default=192,
                    help="also train softmax and distill (chosen teacher) students of this d "
                         "(0: skip) — does a teacher let a wider student pay?")
    ap.add_argument("--out", default=None)
    args = ap.parse_args(argv)

    import numpy as np

    from xmr.data.debian import load_debian_deps
    from xmr.eval import evaluate
    from xmr.eval.propensity import inverse_propensity

    ds = load_debian_deps()
    inv = inverse_propensity(ds.Y_trn, A=ds.prop_a, B=ds.prop_b)
    epochs, sdim = (1, 32) if args.quick else (8, 96)  # at most 8 epochs, early-stopped
    rows, skipped = [], {}
    with tempfile.TemporaryDirectory(prefix="xmr-peers-") as tmp:
        tmp = Path(tmp)
        export(ds, tmp / "data")
        env = python_env(OMP_NUM_THREADS=str(args.threads))

        def record(out: Path, extra=None):
            res = json.loads((out / "result.json").read_text())
            ids = np.load(out / "ids.npy")
            m = evaluate(ds.Y_tst, ids, ks=(1, 3, 5), inv_prop=inv)
            res.update({k: m[k] for k in ("P@1", "P@3", "P@5", "PSP@1", "PSP@3", "PSP@5")})
            from xmr.eval.frequency import by_frequency

            res["by_frequency"] = by_frequency(ds.Y_trn, ds.Y_tst, ids, inv)
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
            r = run_worker(PEER_WORKER, [method, tmp / "data", out, "--threads", args.threads],
                           env=env, python=py)
            if r.returncode != 0:
                skipped[method] = f"failed: {r.stderr.strip()[-300:]}"
                print(f"{method} failed: {r.stderr[-500:]}", flush=True)
                continue
            record(out, {"environment": where})

        common = ["--threads", str(args.threads)]
        recipe = [f"model.dim={sdim}", f"optim.epochs={epochs}"] + (
            ["data.valid_fraction=0.05", "eval_every=1", "early_stopping_patience=2"]
            if not args.quick else [])
        from xmr.teachers.combine import combine_stores
        from xmr.teachers.report import calibrate_temperature, teacher_report
        from xmr.teachers.store import TeacherStore, from_topk

        # --- teachers, each cross-fitted on the same folds (every training point scored by a
        # model that did not see it): the student recipe itself, a tree, and their ensemble
        folds, K = args.folds, 32
        n_trn = ds.X_trn.shape[0]
        teachers, reports = {}, {}
        parts, t_train = [], 0.0
        for f in range(folds):
            t_out = tmp / f"xmr-teacher{f}"
            run_worker(XMR_WORKER, ["softmax", t_out, "--export-k", K, "--folds", folds,
                                    "--fold", f, "--name", f"xmr teacher (fold {f})"]
                       + sum((["--set", o] for o in recipe), []) + common, env=env, check=True,
                       capture_output=False)
            parts.append(np.load(t_out / "teacher_part.npz"))
            t_train += json.loads((t_out / "result.json").read_text())["train_s"]
        ids, scores = np.full((n_trn, K), -1, np.int64), np.full((n_trn, K), -np.inf, np.float32)
        for p in parts:
            ids[p["rows"]], scores[p["rows"]] = p["ids"], p["scores"]
        teachers["neural"] = from_topk(ids, scores, ds.num_labels, {
            "source": f"xmr softmax (student recipe), {folds}-fold", "folds": folds,
            "out_of_fold": True, "fit_seconds": t_train}).save(tmp / "t-neural")
        if subprocess.run([sys.executable, "-c", "import omikuji"]).returncode == 0:
            r = subprocess.run([sys.executable, "-m", "xmr", "teacher", "fit", "--backend", "omikuji", "--dataset",
                                "debian-deps", "--folds", str(folds), "-k", str(K), "--threads",
                                str(args.threads), "--out", str(tmp / "t-tree")], env=env,
                               capture_output=True, text=True)
            if r.returncode == 0:
                teachers["tree"] = tmp / "t-tree"
                teachers["ensemble"] = combine_stores(
                    [TeacherStore.load(teachers["neural"]), TeacherStore.load(teachers["tree"])],
                    k=K, meta={"out_of_fold": True}).save(tmp / "t-ensemble")
            else:
                skipped["tree teacher"] = r.stderr.strip()[-300:]
        else:
            skipped["tree teacher"] = "omikuji does not import here (pip install 'xmr[peers]')"
        for name, path in teachers.items():
            st = TeacherStore.load(path)
            reports[name] = teacher_report(st, ds.Y_trn)
            reports[name]["fit_seconds"] = st.meta.get("fit_seconds")
            # τ_t for the students: temperature scaling on the same out-of-fold points
            reports[name]["calibration"] = calibrate_temperature(st, ds.Y_trn)
            print(f"teacher {name:<9s} out-of-fold log-loss={reports[name]['log_loss']:.3f} "
                  f"ECE={reports[name]['ece']:.3f} P@1={reports[name]['P@1']:.3f} "
                  f"calibrated tau_t={reports[name]['calibration']['tau']:g}", flush=True)
        # the paper's criterion picks the teacher: lowest out-of-fold log-loss (training points only)
        best_t = min(reports, key=lambda n: reports[n]["log_loss"])

        def student(preset, name, teacher=None, extra=()):
            out = tmp / f"xmr-{name.replace(' ', '_')}"
            cmd = [preset, str(out), "--name", name] + sum(
                (["--set", o] for o in recipe + list(extra)), []) + common
            if teacher is not None:
                cmd += ["--teacher-store", str(teachers[teacher]), "--set",
                        f"loss.tau_t={reports[teacher]['calibration']['tau']}"]
            run_worker(XMR_WORKER, cmd, env=env, check=True, capture_output=False)
            record(out, {"role": "student", "teacher": teacher})

        for preset in [p for p in args.presets.split(",") if p]:
            if preset in ("distill", "double-distill", "teacher-negatives"):
                for t in (teachers if preset == "distill" else [best_t]):
                    student(preset, f"xmr {preset} ({t} teacher)", t)
            else:
                student(preset, f"xmr {preset}")
        if args.wide_dim and not args.quick:
            wide = [f"model.dim={args.wide_dim}"]
            student("softmax", f"xmr softmax d={args.wide_dim}", extra=wide)
            student("distill", f"xmr distill d={args.wide_dim} ({best_t} teacher)", best_t,
                    extra=wide)
        results_extra = {"teachers": reports, "teacher_chosen": best_t}
    if not args.quick:
        from xmr.eval.frequency import plot_by_frequency

        keep = {r["method"]: r["by_frequency"] for r in rows if r.get("role") != "teacher"}
        plot_by_frequency(keep, RESULTS / "bench_peers_frequency.png",
                          title="debian-deps test points by their most frequent positive")
    path = write_result("bench_peers" if not args.quick else "bench_peers_quick",
                        {"dataset": "debian-deps", "split": "seeded 80/20 (seed 0)", "epochs": epochs,
                         "student_dim": sdim, "threads": args.threads, "folds": args.folds,
                         "recipe": "library defaults (loss, schedule, regularisation) + the "
                                   "overrides in each row; early stopping on 5 % of the "
                                   "training points"},
                        {"rows": rows, "skipped": skipped, **results_extra}, path=args.out)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
