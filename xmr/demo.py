"""``xmr demo``: the whole pipeline on the embedded real dataset ``debian-deps``.

1. baselines: label popularity and TF-IDF k-NN;
2. a **cross-fitted teacher**: every training point is scored by a model that did not see it —
   a tree (omikuji, one per fold; the data-efficient estimator of p*(y|x) on sparse text) when
   the optional extra ``xmr[peers]`` is installed, else the student recipe itself (neural);
3. its top-K stored (memory-mapped during training);
4. the same small student trained with each loss preset — ``softmax``, ``sampled``, ``mined``,
   ``distill``, ``double-distill`` — under the library's default recipe (decoupled reduction,
   schedule, early stopping on 5 % of the training points), the same epoch budget each;
5. a table of P@1/3/5, PSP@1/3/5, training time and prediction ms/query next to omikuji's and
   napkinXC's scores **measured side by side by** ``python -m benchmarks.studies.bench_peers``
   (read from its committed results when the checkout has them), written as JSON.
"""

from __future__ import annotations

import json
import logging
import tempfile
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional, Tuple

from xmr.utils.config import ConfigBase
from xmr.utils.validation import check_choice, check_int, check_number

log = logging.getLogger(__name__)

STUDENT_PRESETS = ("softmax", "sampled", "mined", "distill", "double-distill")
_PEERS_RESULTS = Path(__file__).resolve().parent.parent / "benchmarks" / "results" / "bench_peers.json"


@dataclass
class DemoSettings(ConfigBase):
    """What ``xmr demo`` runs (its flags and ``--set KEY=VALUE`` set these fields)."""

    student_dim: int = 96
    student_epochs: int = 6  #: at most; early stopping on 5 % of the training points may end sooner
    teacher: str = "auto"  #: "tree" (omikuji), "neural" (the student recipe), "auto": tree if installed
    teacher_dim: int = 96  #: the neural teacher's d
    teacher_k: int = 32
    teacher_folds: int = 3  #: cross-fitting folds (1: the teacher scores its own training points)
    #: teacher temperature of the distilling students; None: calibrated on the teacher's
    #: out-of-fold training points (lowest ECE, :func:`xmr.teachers.report.calibrate_temperature`)
    tau_t: Optional[float] = None
    batch_size: int = 256
    presets: Tuple[str, ...] = STUDENT_PRESETS  #: one student per loss preset, in this order
    baselines_only: bool = False
    seed: int = 0
    threads: int = 0  #: torch and tree threads (0: torch's default; the trees then use 2)

    def validate(self, prefix: str = "") -> "DemoSettings":
        from xmr.objectives.config import PRESETS

        for name in ("student_dim", "student_epochs", "teacher_dim", "teacher_k", "teacher_folds",
                     "batch_size"):
            check_int(prefix + name, getattr(self, name), 1)
        check_choice(prefix + "teacher", self.teacher, ("auto", "tree", "neural"))
        if self.tau_t is not None:
            check_number(prefix + "tau_t", self.tau_t, 0.0, lo_open=True)
        for i, p in enumerate(self.presets):
            check_choice(f"{prefix}presets[{i}]", p, tuple(PRESETS))
        check_int(prefix + "seed", self.seed, 0)
        check_int(prefix + "threads", self.threads, 0)
        return self

    @classmethod
    def quick(cls) -> "DemoSettings":
        return cls(teacher="neural", teacher_dim=32, student_dim=32, student_epochs=1, teacher_k=16,
                   teacher_folds=2)


def peers_rows() -> List[Dict]:
    """omikuji's and napkinXC's rows of the committed ``bench_peers`` results (same split and
    features, measured side by side), labelled as such; [] when the checkout has none."""
    try:
        res = json.loads(_PEERS_RESULTS.read_text())
    except (OSError, ValueError):
        return []
    out = []
    for r in res.get("results", {}).get("rows", []):
        if r.get("method") in ("omikuji", "napkinxc-plt"):
            row = {k: r.get(k) for k in ("P@1", "P@3", "P@5", "PSP@1", "PSP@3", "PSP@5")}
            row.update(method=f"{r['method']} (bench_peers, commit {str(res.get('commit'))[:7]})",
                       train_s=r.get("train_s"), predict_ms_per_query=r.get("predict_ms_per_query"))
            out.append(row)
    return out


def _timed_predict(predict, n: int):
    t0 = time.perf_counter()
    scores, ids = predict()
    return scores, ids, 1000.0 * (time.perf_counter() - t0) / max(n, 1)


def _row(name: str, metrics: Dict[str, float], train_s: Optional[float], ms_q: Optional[float]) -> Dict:
    r = {"method": name, "train_s": train_s, "predict_ms_per_query": ms_q}
    r.update({k: float(v) for k, v in metrics.items()})
    return r


def run_demo(settings: DemoSettings, workdir: Optional[Path] = None, progress: bool = True) -> Dict:
    """Run the demo; returns ``{"dataset": stats, "rows": [...], "settings": ...}``."""
    settings.validate()  # a bad value fails here, before any data is loaded
    import torch

    from xmr.data.debian import load_debian_deps
    from xmr.eval import evaluate
    from xmr.eval.baselines import knn, popularity
    from xmr.eval.propensity import inverse_propensity

    t_all = time.perf_counter()
    ds = load_debian_deps(seed=settings.seed)
    stats = ds.stats()
    inv_prop = inverse_propensity(ds.Y_trn, A=ds.prop_a, B=ds.prop_b)
    n_tst = ds.Y_tst.shape[0]
    rows: List[Dict] = []

    def score(name, ids, train_s, ms_q):
        m = evaluate(ds.Y_tst, ids, ks=(1, 3, 5), inv_prop=inv_prop)
        keep = {k: m[k] for k in ("P@1", "P@3", "P@5", "PSP@1", "PSP@3", "PSP@5", "nDCG@5")}
        rows.append(_row(name, keep, train_s, ms_q))
        log.info("%s: %s", name, keep)
        if progress:
            print(f"  {name:<28s} P@1={keep['P@1']:.3f} P@3={keep['P@3']:.3f} P@5={keep['P@5']:.3f} "
                  f"PSP@1={keep['PSP@1']:.3f}", flush=True)

    if progress:
        print(f"debian-deps: {stats['n_train']} train / {stats['n_test']} test points, "
              f"D={stats['num_features']}, L={stats['num_labels']}", flush=True)
    _, ids, ms = _timed_predict(lambda: popularity(ds.Y_trn, n_tst, 5), n_tst)
    score("popularity", ids, 0.0, ms)
    _, ids, ms = _timed_predict(lambda: knn(ds.X_trn, ds.Y_trn, ds.X_tst, 5), n_tst)
    score("tf-idf 20-NN", ids, 0.0, ms)

    if not settings.baselines_only:
        import importlib.util

        from xmr.teachers.trees import fit_tree_teacher
        from xmr.train.config import TrainConfig
        from xmr.train.run import run_training

        tmp = tempfile.TemporaryDirectory(prefix="xmr-demo-") if workdir is None else None
        work = Path(workdir) if workdir is not None else Path(tmp.name)
        torch.manual_seed(settings.seed)
        if settings.threads:
            torch.set_num_threads(settings.threads)

        def config(preset: str, dim: int, teacher: Optional[str]) -> TrainConfig:
            cfg = TrainConfig(seed=settings.seed, teacher=teacher, eval_every=1)
            cfg.model.dim = dim
            cfg.optim.epochs = settings.student_epochs
            cfg.optim.batch_size = settings.batch_size
            cfg.loss.preset = preset
            cfg.loss.teacher_k = settings.teacher_k
            if tau_t is not None:
                cfg.loss.tau_t = tau_t
            cfg.data.valid_fraction = 0.05 if settings.student_epochs > 1 else 0.0
            cfg.early_stopping_patience = 1
            return cfg

        tau_t = None  # the neural teacher's own folds train without a teacher
        kind = settings.teacher
        if kind == "auto":
            kind = "tree" if importlib.util.find_spec("omikuji") is not None else "neural"
        folds, K = max(1, settings.teacher_folds), settings.teacher_k
        t0 = time.perf_counter()
        if kind == "tree":
            if progress:
                print(f"teacher: omikuji, {folds}-fold cross-fitted", flush=True)
            store = fit_tree_teacher(ds.X_trn, ds.Y_trn, "omikuji", folds=folds, k=K,
                                     seed=settings.seed, threads=settings.threads or 2,
                                     progress=progress)
            t_name = f"teacher (omikuji, {folds}-fold, out-of-fold on train)"
        elif kind == "neural":
            # every training point is scored by the fold model that did not see it
            from xmr.teachers.export import export_teacher

            tcfg = config("softmax", settings.teacher_dim, None)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # folds=1 is an ablation, asked for knowingly
                store = export_teacher(tcfg, ds, k=K, folds=folds, seed=settings.seed,
                                       workdir=None, progress=progress).store
            t_name = f"teacher (xmr softmax d={settings.teacher_dim}, {folds}-fold)"
        else:  # validate() admits auto, tree and neural only
            raise AssertionError(kind)
        teacher_s = time.perf_counter() - t0
        from xmr.teachers.report import teacher_report

        rep = teacher_report(store, ds.Y_trn)
        tau_t = settings.tau_t
        if tau_t is None:
            from xmr.teachers.report import calibrate_temperature

            tau_t = calibrate_temperature(store, ds.Y_trn)["tau"]
        rows.append(_row(t_name + " [train points]", {"P@1": rep["P@1"], "P@5": rep["P@5"]},
                         teacher_s, None))
        rows[-1].update(log_loss=rep["log_loss"], ece=rep["ece"], tau_t=tau_t)
        if progress:
            print(f"  {t_name}: out-of-fold P@1={rep['P@1']:.3f} log-loss={rep['log_loss']:.3f} "
                  f"ECE={rep['ece']:.3f}, students' tau_t={tau_t:g} ({teacher_s:.0f} s)", flush=True)
        store_dir = store.save(work / "teacher_store")

        # --- students, same size and epoch budget, one per preset
        for preset in settings.presets:
            scfg = config(preset, settings.student_dim, str(store_dir))
            # the library's entry point, as `xmr train` (in memory; the demo scores the test
            # split itself, with its own timing of prediction)
            res = run_training(scfg, None, dataset=ds, progress=progress, test_eval=False)
            _, ids, ms = _timed_predict(lambda: res.model.predict(ds.X_tst, 5), n_tst)
            score(f"student {preset} (d={settings.student_dim})", ids,
                  res.summary["train_seconds"], ms)
        if tmp is not None:
            tmp.cleanup()

    rows.extend(peers_rows())
    return {
        "name": "demo",
        "machine": _machine(),
        "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "dataset": stats,
        "settings": settings.to_dict(),
        "rows": rows,
        "total_seconds": time.perf_counter() - t_all,
    }


def _machine() -> Dict:
    """:func:`xmr.utils.machine.machine_info` plus xmr's version and the checkout's commit."""
    import xmr
    from xmr.utils.machine import git_commit, machine_info

    return {**machine_info(), "xmr_version": xmr.__version__,
            "commit": git_commit(Path(__file__).resolve().parent, dirty=False)}


def format_table(result: Dict) -> str:
    cols = ["P@1", "P@3", "P@5", "PSP@1", "PSP@3", "PSP@5", "train_s", "predict_ms_per_query"]
    head = f"{'method':<30s}" + "".join(f"{c if c != 'predict_ms_per_query' else 'ms/query':>10s}" for c in cols)
    lines = [head, "-" * len(head)]
    for r in result["rows"]:
        cells = []
        for c in cols:
            v = r.get(c)
            cells.append(f"{'–':>10s}" if v is None else (f"{v:>10.1f}" if c == "train_s" else f"{v:>10.3f}"))
        lines.append(f"{r['method']:<30s}" + "".join(cells))
    return "\n".join(lines)
