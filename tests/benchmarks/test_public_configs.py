"""The public-benchmark recipes (benchmarks/recipes/configs/NAME/{teacher,student}.json) run end to end.

For every registry dataset a miniature in the dataset's own raw format (``_miniatures.py``) is
placed in ``ROOT/NAME/raw/``, prepared offline by ``xmr data prepare``, and the whole recipe —
teacher training, the cross-fitted ``xmr teacher export --folds``, double-distill student, test
evaluation — is run by ``python -m benchmarks.recipes.run_public`` with overrides that only
shrink the run:

* ``optim.epochs=1``, ``model.dim=16``, ``miner.refresh_every=2``, ``--folds 2`` (default 5): size;
* ``loss.num_random=32``: a miniature has 96 labels, fewer than the configured |R| (512 … 32768;
  the unigram proposal can only draw labels seen in training). ``test_configs_fit_their_dataset``
  checks that every configured |R| fits the real dataset's label count.

Everything else (presets, teacher_k, miner factory, batch size, learning rates, the teacher
store's wiring) is the shipped configuration, so a wrong key, a wrong preset or a broken
teacher path fails here.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest

from benchmarks.recipes import run_public
from xmr.data.registry import KIND_EMBEDDED, get_dataset, list_datasets
from xmr.train.config import TrainConfig

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _miniatures import N_TRAIN, write_miniature  # noqa: E402

CONFIGS = Path(run_public.__file__).resolve().parent / "configs"
PUBLIC = [d.name for d in list_datasets() if d.kind != KIND_EMBEDDED]
SHRINK = ["optim.epochs=1", "model.dim=16", "miner.refresh_every=2", "loss.num_random=32"]
FOLDS = ["--folds", "2"]
METRICS = ("P@1", "P@3", "P@5", "PSP@1", "PSP@3", "PSP@5")


def _load(name: str, role: str) -> TrainConfig:
    return TrainConfig.from_json(CONFIGS / name / f"{role}.json")


# --------------------------------------------------------------------------------------------
# the configs themselves
# --------------------------------------------------------------------------------------------

def test_every_public_dataset_has_both_configs_and_a_readme_row():
    folders = sorted(p.name for p in CONFIGS.iterdir() if p.is_dir())
    assert folders == sorted(PUBLIC)
    readme = (CONFIGS / "README.md").read_text()
    for name in PUBLIC:
        assert (CONFIGS / name / "teacher.json").is_file()
        assert (CONFIGS / name / "student.json").is_file()
        assert f"| {name} |" in readme, f"{name} missing from the README table"


@pytest.mark.parametrize("name", PUBLIC)
def test_configs_fit_their_dataset(name):
    info = get_dataset(name)
    L = info.stats.num_labels
    t, s = _load(name, "teacher"), _load(name, "student")
    tl, sl = t.loss.resolved(), s.loss.resolved()
    for cfg in (t, s):
        assert cfg.data.dataset == name
        assert cfg.data.root is None  # the runner (or --set data.root=...) decides
    assert tl.preset in ("softmax", "sampled")
    assert tl.alpha == 0.0 and not tl.needs_teacher
    assert sl.preset == "double-distill" and sl.alpha > 0 and sl.teacher_negatives and sl.mined
    assert s.teacher == f"runs/{name}/teacher_store"  # run_public's default store
    assert t.teacher is None
    assert t.model.dim > s.model.dim
    # every negative count fits the real label set
    for lc in (tl, sl):
        if not lc.all_labels:
            assert 0 < lc.num_random <= L // 2
    assert sl.teacher_k <= s.miner.k * 2 and sl.teacher_k < L
    assert s.miner.num_negatives <= s.miner.k < L
    # a teacher top-K longer than an average positive set, so it adds negatives
    assert sl.teacher_k > info.stats.labels_per_point


# --------------------------------------------------------------------------------------------
# end to end on miniatures
# --------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def root(tmp_path_factory):
    from xmr.cli.main import main

    root = tmp_path_factory.mktemp("xmr_data")
    for name in PUBLIC:
        write_miniature(name, root, seed=len(name))
        assert main(["data", "prepare", name, "--root", str(root)]) == 0
    return root


def test_unprepared_dataset_says_to_run_prepare(tmp_path, capsys):
    rc = run_public.main(["Amazon-670K", "--root", str(tmp_path), "--out", str(tmp_path / "o")])
    assert rc == 1
    err = capsys.readouterr().err
    assert err == (f"run_public: error: Amazon-670K is not prepared in {tmp_path / 'Amazon-670K'}; "
                   f"run `xmr data prepare Amazon-670K --root {tmp_path}` first\n")
    assert not (tmp_path / "o").exists()


def test_unknown_dataset_lists_the_valid_names(capsys):
    assert run_public.main(["Amazon-700K"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("run_public: error: unknown dataset 'Amazon-700K'; expected one of: ")
    assert "Amazon-670K" in err


@pytest.mark.parametrize("name", PUBLIC)
def test_recipe_runs_end_to_end(name, root, tmp_path):
    out = tmp_path / "run"
    rc = run_public.main([name, "--root", str(root), "--out", str(out), "--no-progress", *FOLDS,
                          *[a for o in SHRINK for a in ("--set", o)]])
    assert rc == 0
    res = json.loads((out / "results.json").read_text())
    info = get_dataset(name)
    assert res["dataset"] == name
    assert res["propensity"] == {"A": info.prop_a, "B": info.prop_b}
    for role in ("teacher", "student"):
        m = res["test"][role]
        for key in METRICS:
            assert 0.0 <= m[key] <= 1.0, (role, key, m[key])

    # the teacher was trained with its shipped preset
    t_meta = json.loads((out / "teacher" / "model" / "config.json").read_text())
    t_cfg = _load(name, "teacher")
    assert t_meta["train_config"]["loss"]["preset"] == t_cfg.loss.preset
    assert t_meta["train_config"]["data"]["dataset"] == name

    # the store covers every training row with the student's teacher_k
    s_cfg = _load(name, "student")
    store = json.loads((out / "teacher_store" / "meta.json").read_text())
    assert store["k"] == s_cfg.loss.resolved().teacher_k
    # cross-fitted: every training point scored by a fold teacher that did not see it
    assert store["folds"] == 2 and store["out_of_fold"] is True
    assert store["train_config"]["loss"]["preset"] == t_cfg.loss.preset
    assert res["stages"]["teacher_export"]["folds"] == 2
    from xmr.teachers.store import TeacherStore

    ts = TeacherStore.load(out / "teacher_store")
    assert ts.num_rows == N_TRAIN
    assert np.all(np.diff(ts.indptr) == min(store["k"], 96))

    # the student was trained against that store, with the double-distill preset
    s_meta = json.loads((out / "student" / "model" / "config.json").read_text())
    assert s_meta["train_config"]["teacher"] == str(out.resolve() / "teacher_store")
    assert s_meta["train_config"]["loss"]["preset"] == "double-distill"
    assert s_meta["train_config"]["miner"]["factory"] == s_cfg.miner.factory
    assert s_meta["num_labels"] == t_meta["num_labels"] == 96

    # LF sets: the reciprocal pairs were removed before scoring
    if info.kind == "lf":
        n_pairs = len((root / name / "filter_labels_test.txt").read_text().splitlines())
        assert res["filter_pairs_removed"] == n_pairs > 0
    else:
        assert res["filter_pairs_removed"] == 0


def test_skip_teacher_reuses_the_teacher_and_its_store(root, tmp_path):
    name = "EURLex-4K"
    out = tmp_path / "run"
    args = [name, "--root", str(root), "--out", str(out), "--no-progress", *FOLDS,
            *[a for o in SHRINK for a in ("--set", o)]]
    assert run_public.main(args) == 0
    weights = (out / "teacher" / "model" / "weights.pt").read_bytes()
    ids = (out / "teacher_store" / "ids.npy").read_bytes()
    assert run_public.main(args + ["--skip-teacher", "--student-set", "optim.epochs=2"]) == 0
    res = json.loads((out / "results.json").read_text())
    assert res["stages"]["teacher_train"] == {"skipped": True}
    assert res["stages"]["teacher_export"] == {"skipped": True}
    assert res["resolved_configs"]["student"]["optim"]["epochs"] == 2
    assert (out / "teacher" / "model" / "weights.pt").read_bytes() == weights
    assert (out / "teacher_store" / "ids.npy").read_bytes() == ids


def test_a_failing_stage_is_named(root, tmp_path, capsys):
    """The stages call the library (run_training, export_teacher): a user error in one is a
    one-line error naming the stage, and a bad --set is refused before any stage runs."""
    args = ["EURLex-4K", "--root", str(root), "--out", str(tmp_path / "run"), "--no-progress",
            *FOLDS, *[a for o in SHRINK for a in ("--set", o)]]
    assert run_public.main(args + ["--teacher-set", "loss.preset=distill"]) == 1
    assert capsys.readouterr().err == (
        "run_public: error: teacher training failed: loss preset 'distill' needs a teacher "
        "store (set `teacher` to a folder written by `xmr teacher export`)\n")
    assert run_public.main(args + ["--set", "optim.epochz=1"]) == 1
    assert capsys.readouterr().err.startswith(
        "run_public: error: unknown config key 'optim.epochz'; valid keys here: ")
    assert not (tmp_path / "run" / "teacher").exists()


def test_one_fold_is_refused(capsys):
    assert run_public.main(["EURLex-4K", "--folds", "1"]) == 1
    assert capsys.readouterr().err == ("run_public: error: --folds: expected an integer >= 2 "
                                       "(a cross-fitted teacher), got 1\n")


def test_skip_teacher_without_a_teacher_is_a_clear_error(root, tmp_path, capsys):
    out = tmp_path / "fresh"
    rc = run_public.main(["EURLex-4K", "--root", str(root), "--out", str(out), "--skip-teacher"])
    assert rc == 1
    assert capsys.readouterr().err == (
        f"run_public: error: --skip-teacher: no trained teacher in {out / 'teacher' / 'model'}; "
        "run without --skip-teacher first\n")


# --------------------------------------------------------------------------------------------
# the cost model behind benchmarks/recipes/configs/README.md
# --------------------------------------------------------------------------------------------

RATES = {"matmul_flops": 100e9, "efficiency": 0.5, "bandwidth": 10e9}


@pytest.mark.parametrize("name", PUBLIC)
def test_cost_model_counts_the_documented_flop(name):
    from benchmarks.recipes.estimate_costs import device_estimate, model_cost

    info = get_dataset(name)
    L = info.stats.num_labels
    for role in ("teacher", "student"):
        cfg = _load(name, role)
        c = model_cost(name, info, cfg, role, f=50.0)
        B, d = cfg.optim.batch_size, cfg.model.dim
        lc = cfg.loss.resolved()
        if lc.all_labels:
            assert c["output_flop"] == 6.0 * B * d * L
        else:
            assert c["candidates"] <= L
            assert c["output_flop"] == 6.0 * B * d * c["candidates"]
        assert c["encoder_flop"] == 4.0 * B * 50.0 * d
        assert 0 <= c["steps_per_epoch"] - info.stats.n_train * (1 - cfg.data.valid_fraction) / B < 1
        e = device_estimate(c, RATES, gpu=False)
        step_flop = (c["output_flop"] + c["encoder_flop"] + c["search_flop"]
                     + c["rebuild_flop_per_step"])
        assert e["compute_s_per_step"] == pytest.approx(step_flop / 50e9)
        assert e["epoch_s"] >= c["steps_per_epoch"] * e["step_s"]
        # the table's parameters alone are a lower bound on the peak
        assert e["peak_bytes"] > 4.0 * L * d


def test_readme_table_is_generated_for_every_dataset(tmp_path):
    from benchmarks.recipes.estimate_costs import BEGIN, END, render_table, update_readme

    readme = (CONFIGS / "README.md").read_text()
    assert BEGIN in readme and END in readme
    est = {"rates": {"cpu": {**RATES, "source": "s", "bandwidth_source": "b"},
                     "gpu": {**RATES, "source": "s", "bandwidth_source": "b"}},
           "datasets": {}}
    from benchmarks.recipes.estimate_costs import device_estimate, model_cost

    for name in PUBLIC:
        info = get_dataset(name)
        models = {}
        for role in ("teacher", "student"):
            c = model_cost(name, info, _load(name, role), role, f=50.0)
            models[role] = {"work": c, "cpu": device_estimate(c, RATES, False),
                            "gpu": device_estimate(c, RATES, True)}
        est["datasets"][name] = {"models": models}
    table = render_table(est)
    for name in PUBLIC:
        assert f"| {name} | teacher |" in table and f"| {name} | student |" in table
    copy = tmp_path / "README.md"
    copy.write_text(f"intro\n{BEGIN}\nold\n{END}\nafter\n")
    assert update_readme(table, copy)
    assert copy.read_text() == f"intro\n{BEGIN}\n{table}\n{END}\nafter\n"
