"""Resume is a contract, not a coincidence: a fixed-seed restart from scratch also reaches the
same weights, so these tests check *where* the resumed run starts and *how many* steps it runs,
and that ``--resume`` without a usable checkpoint is an error, never a silent fresh start."""

import os

import pytest
import torch

from xmr.errors import CheckpointError
from xmr.train.config import TrainConfig
from xmr.train.loop import Trainer


def _cfg(epochs=2):
    cfg = TrainConfig(seed=3, eval_every=0)
    cfg.model.dim = 16
    cfg.optim.epochs = epochs
    cfg.optim.batch_size = 64
    cfg.data.valid_fraction = 0.1
    cfg.loss.preset = "sampled"
    cfg.loss.num_random = 16
    cfg.checkpoint_every = 4
    return cfg


def _record_steps(monkeypatch):
    """Wrap Trainer.train_step to record the step counter before every call."""
    seen = []
    orig = Trainer.train_step

    def wrapped(self, rows):
        seen.append(self.step)
        return orig(self, rows)

    monkeypatch.setattr(Trainer, "train_step", wrapped)
    return seen


def test_resumed_run_starts_at_the_saved_step_and_runs_only_the_rest(planted, tmp_path,
                                                                     monkeypatch):
    X, Y = planted
    cfg = _cfg()
    full = Trainer(cfg, X, Y, out_dir=tmp_path / "full", progress=False).fit()
    Trainer(cfg, X, Y, out_dir=tmp_path / "part", progress=False).fit(stop_after_steps=6)
    seen = _record_steps(monkeypatch)
    resumed = Trainer(cfg, X, Y, out_dir=tmp_path / "part", progress=False).fit(resume=True)
    assert seen[0] == 4  # the checkpoint was written at step 4; steps 5-6 were lost
    assert len(seen) == full.steps - 4
    assert seen == list(range(4, full.steps))
    a, b = full.model.state_dict(), resumed.model.state_dict()
    assert set(a) == set(b)
    for k in a:  # by key, not by zip order
        torch.testing.assert_close(a[k], b[k], rtol=0, atol=0, msg=k)


def test_resume_without_a_checkpoint_is_an_error(planted, tmp_path):
    X, Y = planted
    with pytest.raises(CheckpointError, match="no checkpoint folder"):
        Trainer(_cfg(), X, Y, out_dir=tmp_path / "none", progress=False).fit(resume=True)


def test_resume_with_a_checkpoint_missing_state_pt_is_an_error(planted, tmp_path):
    X, Y = planted
    (tmp_path / "r" / "checkpoint").mkdir(parents=True)
    with pytest.raises(CheckpointError, match="no state.pt"):
        Trainer(_cfg(), X, Y, out_dir=tmp_path / "r", progress=False).fit(resume=True)


def test_resume_recovers_the_old_folder_of_an_interrupted_swap(planted, tmp_path, monkeypatch):
    X, Y = planted
    cfg = _cfg()
    Trainer(cfg, X, Y, out_dir=tmp_path / "r", progress=False).fit(stop_after_steps=4)
    ck = tmp_path / "r" / "checkpoint"
    os.replace(ck, tmp_path / "r" / ".checkpoint.abc12345.old")  # killed between the renames
    seen = _record_steps(monkeypatch)
    Trainer(cfg, X, Y, out_dir=tmp_path / "r", progress=False).fit(resume=True)
    assert seen[0] == 4
    assert (ck / "state.pt").is_file()


def test_checkpoint_cleans_leftovers_of_killed_writes(planted, tmp_path):
    X, Y = planted
    out = tmp_path / "r"
    (out / ".checkpoint.dead1xyz.tmp").mkdir(parents=True)
    (out / ".checkpoint.dead2xyz.old").mkdir()
    (out / ".model.dead3xyz.tmp").mkdir()
    (out / ".model.v2.other123.tmp").mkdir()  # another artefact's (model.v2): left alone
    Trainer(_cfg(epochs=1), X, Y, out_dir=out, progress=False).fit()
    assert sorted(p.name for p in out.iterdir() if p.name.startswith(".")) == \
        [".model.v2.other123.tmp"]
