import json

import numpy as np
import pytest
import torch

from xmr.eval import evaluate
from xmr.eval.baselines import popularity
from xmr.models import XMRModel
from xmr.teachers.store import TeacherStore, from_topk
from xmr.train.config import TrainConfig
from xmr.train.loop import Trainer


def _cfg(preset, epochs=3, **loss):
    cfg = TrainConfig(seed=3, eval_every=0)
    cfg.model.dim = 32
    cfg.optim.epochs = epochs
    cfg.optim.batch_size = 64
    cfg.optim.lr_table = 0.2
    cfg.optim.lr_encoder = 1e-2
    cfg.data.valid_fraction = 0.1
    cfg.loss.preset = preset
    for k, v in loss.items():
        setattr(cfg.loss, k, v)
    cfg.miner.k = 8
    cfg.miner.num_negatives = 4
    cfg.miner.refresh_every = 3
    cfg.miner.factory = "Flat"
    return cfg


def _teacher(X, Y, tmp_path):
    tr = Trainer(_cfg("softmax", epochs=4), X, Y, progress=False)
    res = tr.fit()
    s, i = res.model.predict(X, 10)
    return TeacherStore.load(from_topk(i, s, Y.shape[1]).save(tmp_path / "store"))


@pytest.mark.parametrize("preset", ["softmax", "sampled"])
def test_training_beats_popularity(planted, preset):
    X, Y = planted
    res = Trainer(_cfg(preset, epochs=4, num_random=20), X, Y, progress=False).fit()
    _, ids = res.model.predict(X, 5)
    _, pop = popularity(Y, X.shape[0], 5)
    assert evaluate(Y, ids)["P@1"] > evaluate(Y, pop)["P@1"] + 0.3


@pytest.mark.parametrize("preset", ["sampled", "mined"])
def test_resume_reaches_the_same_weights(planted, tmp_path, preset):
    """Interrupt a run, resume it, and compare with an uninterrupted run of the same seed."""
    X, Y = planted
    cfg = _cfg(preset, epochs=2, num_random=16)
    cfg.checkpoint_every = 4
    full = Trainer(cfg, X, Y, out_dir=tmp_path / "full", progress=False).fit()
    part = Trainer(cfg, X, Y, out_dir=tmp_path / "part", progress=False)
    part.fit(stop_after_steps=6)  # mid-epoch; checkpoint at step 4, steps 5-6 are lost
    resumed = Trainer(cfg, X, Y, out_dir=tmp_path / "part", progress=False).fit(resume=True)
    assert resumed.steps == full.steps
    for (k, a), (_, b) in zip(full.model.state_dict().items(), resumed.model.state_dict().items()):
        torch.testing.assert_close(a, b, rtol=0, atol=0, msg=k)


@pytest.mark.parametrize("swap_lag", [1, 2])
def test_resume_reaches_the_same_weights_with_async_refresh(planted, tmp_path, swap_lag):
    """miner.async_refresh: the checkpoint at step 4 falls between the snapshot of step 3 and
    its swap (step 3 + lag); the resumed run swaps the saved pending index in at the same step."""
    X, Y = planted
    cfg = _cfg("mined", epochs=2, num_random=16)
    cfg.miner.async_refresh = True
    cfg.miner.swap_lag = swap_lag
    cfg.checkpoint_every = 4
    full_tr = Trainer(cfg, X, Y, out_dir=tmp_path / "full", progress=False)
    full = full_tr.fit()
    st = full_tr.miner.stats()
    assert st["async_builds"] > 0 and st["staleness_max"] == cfg.miner.refresh_every + swap_lag - 1
    part = Trainer(cfg, X, Y, out_dir=tmp_path / "part", progress=False)
    part.fit(stop_after_steps=6)  # mid-epoch; checkpoint at step 4, steps 5-6 are lost
    ck = tmp_path / "part" / "checkpoint" / "miner"
    saved = json.loads((ck / "state.json").read_text())
    # written before step 4 ran: the snapshot of step 3 is pending (swap at 3 + lag >= 4)
    assert (saved["pending_step"], saved["index_step"]) == (3, 0)
    assert (ck / "pending_index" / "meta.json").is_file()
    resumed = Trainer(cfg, X, Y, out_dir=tmp_path / "part", progress=False).fit(resume=True)
    assert resumed.steps == full.steps
    a, b = full.model.state_dict(), resumed.model.state_dict()
    assert set(a) == set(b)
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=0, atol=0, msg=k)
    # and the asynchronous run is not the synchronous one (the lag changes the negatives)
    sync_cfg = _cfg("mined", epochs=2, num_random=16)
    sync = Trainer(sync_cfg, X, Y, progress=False).fit()
    assert any(not torch.equal(a[k], sync.model.state_dict()[k]) for k in a)


def test_resume_refuses_a_different_config(planted, tmp_path):
    X, Y = planted
    cfg = _cfg("sampled", epochs=1, num_random=16)
    cfg.checkpoint_every = 1
    Trainer(cfg, X, Y, out_dir=tmp_path / "r", progress=False).fit(stop_after_steps=2)
    cfg2 = _cfg("sampled", epochs=1, num_random=17)
    cfg2.checkpoint_every = 1
    with pytest.raises(ValueError, match="cannot resume from .* different config"):
        Trainer(cfg2, X, Y, out_dir=tmp_path / "r", progress=False).fit(resume=True)


def test_saved_model_round_trip(planted, tmp_path):
    X, Y = planted
    res = Trainer(_cfg("softmax", epochs=1), X, Y, out_dir=tmp_path / "o", progress=False).fit()
    meta = json.loads((tmp_path / "o" / "model" / "config.json").read_text())
    assert meta["format"] == "xmr-model" and meta["train_config"]["loss"]["preset"] == "softmax"
    back = XMRModel.load(tmp_path / "o" / "model")
    s1, i1 = res.model.predict(X, 5)
    s2, i2 = back.predict(X, 5)
    np.testing.assert_array_equal(i1, i2)
    np.testing.assert_allclose(s1, s2)


def test_trainer_model_starts_from_the_seeded_model(planted):
    """The trainer seeds torch's global RNG with cfg.seed and builds the model unseeded; that is
    the same initial model as ``XMRModel(..., seed=cfg.seed)``, which leaves the RNG alone."""
    X, Y = planted
    cfg = _cfg("softmax", epochs=1)
    tr = Trainer(cfg, X, Y, progress=False)
    ref = XMRModel(X.shape[1], Y.shape[1], cfg.model, seed=cfg.seed)
    for k, v in ref.state_dict().items():
        assert torch.equal(tr.model.state_dict()[k], v), k


def test_run_training_restores_the_thread_count(planted):
    """``cfg.threads`` applies to the run only: the trainer sets it, run_training restores it."""
    from xmr.data.dataset import XMCDataset
    from xmr.train.run import run_training

    X, Y = planted
    before = torch.get_num_threads()
    cfg = _cfg("softmax", epochs=1)
    cfg.threads = 1 if before != 1 else 2
    ds = XMCDataset("planted", X[:300], Y[:300], X[300:], Y[300:])
    res = run_training(cfg, dataset=ds, progress=False)
    assert torch.get_num_threads() == before
    assert res.summary["test"]["P@1"] > 0


def test_teacher_presets_need_a_store(planted):
    X, Y = planted
    with pytest.raises(ValueError, match="loss preset 'distill' needs a teacher store"):
        Trainer(_cfg("distill"), X, Y, progress=False)


@pytest.mark.parametrize("preset", ["distill", "teacher-negatives", "mined", "double-distill"])
def test_every_preset_trains(planted, tmp_path, preset):
    X, Y = planted
    teacher = _teacher(X, Y, tmp_path)
    res = Trainer(_cfg(preset, epochs=3, num_random=16), X, Y, teacher=teacher, progress=False).fit()
    _, ids = res.model.predict(X, 5)
    _, pop = popularity(Y, X.shape[0], 5)
    assert evaluate(Y, ids)["P@1"] > evaluate(Y, pop)["P@1"] + 0.2
