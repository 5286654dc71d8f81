"""Run the whole double-distillation recipe on one prepared public benchmark.

    python -m benchmarks.recipes.run_public NAME [--root DIR] [--out runs/NAME] [--folds K]
                                            [--set key=value ...] [--skip-teacher]

Stages (each through the library's entry points, the ones ``xmr train`` and ``xmr teacher
export`` call; the dataset is loaded once and shared by the stages):

1. :func:`xmr.train.run.run_training` with ``benchmarks/recipes/configs/NAME/teacher.json`` →
   ``OUT/teacher/model``: the larger teacher (exact ``softmax``, or ``sampled`` where a full
   softmax is too slow; see ``benchmarks/recipes/configs/README.md``);
2. :func:`xmr.teachers.export.export_teacher` with the same config, ``folds=F``, ``k=K`` →
   ``OUT/teacher_store``: the **cross-fitted** teacher — F teachers of the same config, each
   trained on the training points outside its fold, export the top-K labels and raw logits of
   the points in it, so that no training point is scored by a model that saw it; F =
   ``--folds`` (default 5), K the student's ``loss.teacher_k``. The full-data teacher of stage 1
   is the one scored on the test set;
3. :func:`~xmr.train.run.run_training` with ``benchmarks/recipes/configs/NAME/student.json`` and
   ``teacher=OUT/teacher_store`` → ``OUT/student/model``: the smaller ``double-distill`` student
   (Menon et al. 2020, §5: the teacher's probabilities as soft targets and its top labels as
   negatives);
4. both models are evaluated on the test set by :func:`xmr.eval.evaluate_model` (the test
   metrics that ``run_training`` returns; a reused teacher is loaded and evaluated) — P@k,
   nDCG@k, PSP@k, PSnDCG@k at k = 1, 3, 5, with the registry's propensity constants (A, B) and,
   for the LF datasets, the reciprocal ``filter_labels_test.txt`` pairs removed before scoring —
   and ``OUT/results.json`` is written (atomically). Training seconds, samples/s and the mining
   share are read from ``run_training``'s summary.

``--set key=value`` overrides apply to both configs (``--teacher-set`` / ``--student-set`` to
one of them); ``data.dataset`` and ``data.root`` are always set from NAME and ``--root``.
``--skip-teacher`` reuses ``OUT/teacher/model`` (and ``OUT/teacher_store`` when it was exported
with the same K and F). The dataset must have been prepared with ``xmr data prepare NAME``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import sys
import time
from pathlib import Path
from typing import Optional, Sequence


CONFIGS = Path(__file__).resolve().parent / "configs"
KS = (1, 3, 5)
FOLDS = 5  # cross-fitting folds of the exported teacher

log = logging.getLogger("run_public")


class RecipeError(RuntimeError):
    """A stage of the recipe failed (the message names the stage and the cause)."""


def config_paths(name: str) -> dict:
    """``{"teacher": Path, "student": Path}`` of the configs shipped for dataset ``name``."""
    from xmr.data.registry import get_dataset

    canon = get_dataset(name).name
    return {role: CONFIGS / canon / f"{role}.json" for role in ("teacher", "student")}


@contextlib.contextmanager
def _stage(stage: str):
    """A user error of a stage (bad config, data, teacher store) as :class:`RecipeError`
    naming the stage."""
    from xmr.errors import XMRError

    log.info("%s", stage)
    try:
        yield
    except (XMRError, ValueError, OSError) as exc:
        raise RecipeError(f"{stage} failed: {exc}") from exc


def _resolved_config(config: Path, overrides: Sequence[str]):
    from xmr.train.config import TrainConfig

    return TrainConfig.from_json(config).with_overrides(list(overrides))


def _train_summary(summary: dict) -> dict:
    """Train time, samples/s and mining share from :func:`run_training`'s summary."""
    return {k: summary[k] for k in ("train_seconds", "samples_per_second", "mining_share")
            if k in summary}


def evaluate_model(model_dir: Path, ds, inv_prop) -> dict:
    """Test-set metrics of a saved model at k = 1, 3, 5 (filter pairs removed first), by
    :func:`xmr.eval.evaluate_model` (it ranks ``5 + (most filtered pairs of any test row)``
    labels, so that after the filter pairs are dropped every row still has a full top-5)."""
    from xmr.eval import evaluate_model as _evaluate_model
    from xmr.models import XMRModel

    model = XMRModel.load(model_dir, expect_num_labels=ds.num_labels,
                          expect_num_features=ds.num_features)
    return _evaluate_model(model, ds, ks=KS, split="test", inv_prop=inv_prop)


def run(name: str, root: Optional[str] = None, out: Optional[str] = None,
        overrides: Sequence[str] = (), teacher_overrides: Sequence[str] = (),
        student_overrides: Sequence[str] = (), skip_teacher: bool = False,
        progress: bool = True, folds: int = FOLDS) -> dict:
    """Run the recipe (see the module docstring); return what was written to results.json."""
    from benchmarks._common import git_commit, machine_info
    from xmr.data.prepare import NotPreparedError, dataset_dir, is_prepared
    from xmr.data.registry import get_dataset
    from xmr.utils.atomic import atomic_open

    info = get_dataset(name)
    name = info.name
    if isinstance(folds, bool) or not isinstance(folds, int) or folds < 2:
        raise ValueError(f"--folds: expected an integer >= 2 (a cross-fitted teacher), got {folds}")
    if not is_prepared(name, root):
        folder = dataset_dir(name, root)
        root_arg = f" --root {folder.parent}" if root is not None else ""
        raise NotPreparedError(f"{name} is not prepared in {folder}; run "
                               f"`xmr data prepare {name}{root_arg}` first")
    if root is not None:
        root = str(Path(root).resolve())
    out_dir = Path(out if out is not None else f"runs/{name}").resolve()
    out_dir.mkdir(parents=True, exist_ok=True)
    cfgs = config_paths(name)
    data_over = [f"data.dataset={name}"] + ([f"data.root={root}"] if root is not None else [])
    t_over = [*overrides, *teacher_overrides]
    store = out_dir / "teacher_store"
    s_over = [*overrides, *student_overrides, f"teacher={store}"]
    t_cfg = _resolved_config(cfgs["teacher"], [*data_over, *t_over])
    s_cfg = _resolved_config(cfgs["student"], [*data_over, *s_over])
    teacher_k = s_cfg.loss.resolved().teacher_k
    stages = {}

    from xmr.data.loaders import load_from_config
    from xmr.teachers.export import export_teacher
    from xmr.train.run import run_training

    loaded = {}

    def data_of(cfg):
        """The dataset of ``cfg.data``, loaded once per distinct data section (as ``xmr
        train`` loads it: :func:`~xmr.data.loaders.load_from_config`)."""
        key = json.dumps(cfg.data.to_dict(), sort_keys=True)
        if key not in loaded:
            loaded[key] = load_from_config(cfg.data)
        return loaded[key]

    test = {}
    # 1. teacher
    t_model = out_dir / "teacher" / "model"
    if skip_teacher:
        if not (t_model / "config.json").is_file():
            raise RecipeError(f"--skip-teacher: no trained teacher in {t_model}; run without "
                              "--skip-teacher first")
        stages["teacher_train"] = {"skipped": True}
    else:
        t0 = time.perf_counter()
        with _stage("teacher training"):
            res = run_training(t_cfg, out_dir / "teacher", dataset=data_of(t_cfg),
                               progress=progress, test_eval=True, ks=KS)
        stages["teacher_train"] = {"wall_s": time.perf_counter() - t0,
                                   **_train_summary(res.summary)}
        test["teacher"] = res.summary["test"]
        del res

    # 2. cross-fitted teacher: out-of-fold top-K on the training set
    reuse = False
    if skip_teacher and (store / "meta.json").is_file():
        meta = json.loads((store / "meta.json").read_text())
        reuse = meta.get("k") == teacher_k and meta.get("folds") == folds \
            and bool(meta.get("out_of_fold"))
    if reuse:
        stages["teacher_export"] = {"skipped": True}
    else:
        t0 = time.perf_counter()
        with _stage("teacher export"):
            export_teacher(t_cfg, data_of(t_cfg), k=teacher_k, folds=folds, out=store,
                           progress=progress)
        stages["teacher_export"] = {"wall_s": time.perf_counter() - t0, "k": teacher_k,
                                    "folds": folds, "out_of_fold": True}

    # 3. student
    t0 = time.perf_counter()
    with _stage("student training"):
        res = run_training(s_cfg, out_dir / "student", dataset=data_of(s_cfg),
                           progress=progress, test_eval=True, ks=KS)
    stages["student_train"] = {"wall_s": time.perf_counter() - t0, **_train_summary(res.summary)}
    test["student"] = res.summary["test"]
    del res

    # 4. test-set evaluation: run_training's; a reused teacher is evaluated here
    ds = data_of(s_cfg)
    if "teacher" not in test:
        from xmr.eval.propensity import inverse_propensity

        t_ds = data_of(t_cfg)
        inv = inverse_propensity(t_ds.Y_trn, A=t_ds.prop_a, B=t_ds.prop_b)
        with _stage("teacher evaluation"):
            test["teacher"] = evaluate_model(t_model, t_ds, inv)
    test = {"teacher": test["teacher"], "student": test["student"]}
    n_filter = 0 if ds.filter_pairs is None else int(len(ds.filter_pairs))

    results = {
        "dataset": name,
        "kind": info.kind,
        "propensity": {"A": info.prop_a, "B": info.prop_b},
        "filter_pairs_removed": n_filter,
        "stats": ds.info.get("stats", {}),
        "configs": {"teacher": str(cfgs["teacher"]), "student": str(cfgs["student"])},
        "overrides": {"teacher": t_over, "student": s_over},
        "resolved_configs": {"teacher": t_cfg.to_dict(), "student": s_cfg.to_dict()},
        "teacher_store": str(store),
        "stages": stages,
        "test": test,
        "machine": machine_info(),
        "commit": git_commit(),
        "date": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    with atomic_open(out_dir / "results.json", "w") as f:
        json.dump(results, f, indent=2)
        f.write("\n")
    return results


def _summary_line(results: dict) -> str:
    rows = []
    for role in ("teacher", "student"):
        m = results["test"][role]
        rows.append(f"{role:<8} " + "  ".join(f"{k}={m[k]:.4f}" for k in
                                              ("P@1", "P@3", "P@5", "PSP@1", "PSP@3", "PSP@5")))
    return "\n".join(rows)


def main(argv: Optional[Sequence[str]] = None) -> int:
    from xmr.data.registry import dataset_names

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter,
                                 epilog="datasets: " + ", ".join(
                                     n for n in dataset_names() if n != "debian-deps"))
    ap.add_argument("name", help="registry name of a prepared dataset")
    ap.add_argument("--root", default=None, help="data root ($XMR_DATA or ~/xmr_data)")
    ap.add_argument("--out", default=None, help="output folder (default: runs/NAME)")
    ap.add_argument("--set", dest="overrides", action="append", default=[],
                    metavar="KEY=VALUE", help="override in both configs (repeatable)")
    ap.add_argument("--teacher-set", action="append", default=[], metavar="KEY=VALUE",
                    help="override in the teacher's config only")
    ap.add_argument("--student-set", action="append", default=[], metavar="KEY=VALUE",
                    help="override in the student's config only")
    ap.add_argument("--folds", type=int, default=FOLDS,
                    help=f"cross-fitting folds of the exported teacher (default {FOLDS})")
    ap.add_argument("--skip-teacher", action="store_true",
                    help="reuse OUT/teacher/model instead of training the teacher")
    ap.add_argument("--no-progress", action="store_true", help="no progress bars")
    ap.add_argument("-v", "--verbose", action="store_true", help="log each stage")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(asctime)s %(name)s %(levelname)s: %(message)s")
    from xmr.errors import XMRError

    try:
        res = run(args.name, root=args.root, out=args.out, overrides=args.overrides,
                  teacher_overrides=args.teacher_set, student_overrides=args.student_set,
                  skip_teacher=args.skip_teacher, progress=not args.no_progress,
                  folds=args.folds)
    except (XMRError, RecipeError, ValueError) as exc:
        print(f"run_public: error: {exc}", file=sys.stderr)
        return 1
    print(_summary_line(res))
    out = Path(args.out if args.out is not None else f"runs/{res['dataset']}")
    print(f"wrote {out / 'results.json'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
