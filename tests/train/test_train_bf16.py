"""Training with the label table in bf16 (``model.dtype=bfloat16``), on the CPU: the same run
as fp32 end to end, close to it, saved and loaded back in bf16, resumed bit for bit, through the
CLI. The same checks on CUDA are in test_train_bf16_gpu.py (marker ``gpu``)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from xmr.models import XMRModel
from xmr.train.loop import Trainer

import _bf16  # noqa: E402  (tests/ is on pytest's pythonpath)


@pytest.fixture(scope="module")
def ds():
    return _bf16.planted_dataset()


@pytest.mark.parametrize("preset", ["softmax", "sampled", "mined"])
def test_bf16_training_from_the_config_is_close_to_fp32(ds, tmp_path, preset):
    r32 = _bf16.train(_bf16.config(preset, "float32"), ds)
    r16 = _bf16.train(_bf16.config(preset, "bfloat16"), ds, out=tmp_path / "run")
    _bf16.check_bf16_against_fp32(r32, r16, "cpu")
    # saved and loaded back in bf16; predictions (float32 scores) those of the trained model
    model = r16["res"].model
    meta = json.loads((tmp_path / "run" / "model" / "config.json").read_text())
    assert meta["model"]["dtype"] == "bfloat16"
    back = XMRModel.load(tmp_path / "run" / "model")
    assert back.label_table.weight.dtype == torch.bfloat16
    for k, v in model.state_dict().items():
        assert torch.equal(back.state_dict()[k], v), k
    s1, i1 = model.predict(ds.X_tst, 5)
    s2, i2 = back.predict(ds.X_tst, 5)
    assert s2.dtype == np.float32 and i2.dtype == np.int64
    np.testing.assert_array_equal(i1, i2)
    np.testing.assert_array_equal(s1, s2)


@pytest.mark.parametrize("preset", ["sampled", "mined"])
def test_bf16_resume_reaches_the_same_weights(ds, tmp_path, preset):
    """test_trainer.py's resume test with the table in bf16: the fp32 optimizer state (the
    accumulators and master rows) must come back as fp32, not rounded to the table's dtype."""
    cfg = _bf16.config(preset, "bfloat16").with_overrides(["optim.epochs=2",
                                                           "checkpoint_every=4"])
    X, Y = ds.X_trn, ds.Y_trn
    full = Trainer(cfg, X, Y, out_dir=tmp_path / "full", progress=False).fit()
    Trainer(cfg, X, Y, out_dir=tmp_path / "part", progress=False).fit(stop_after_steps=6)
    tr = Trainer(cfg, X, Y, out_dir=tmp_path / "part", progress=False)
    tr.load_checkpoint()
    states = list(tr.opt_tab.state.values())
    assert states and all(v.dtype == torch.float32 for s in states for v in s.values())
    resumed = Trainer(cfg, X, Y, out_dir=tmp_path / "part", progress=False).fit(resume=True)
    assert resumed.steps == full.steps
    a, b = full.model.state_dict(), resumed.model.state_dict()
    assert a.keys() == b.keys() and a["label_table.weight"].dtype == torch.bfloat16
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=0, atol=0, msg=k)


def test_bf16_lse_is_accumulated_in_fp32_on_cpu():
    """At L = 2^20 labels of nearly equal logits the loss is within the logits' bf16 rounding
    of float64, where a bf16 running sum is off by ≈ 0.1 (measured: 2.5e-4 vs 0.098)."""
    _bf16.check_lse_in_fp32("cpu", 1 << 20)


def test_xmr_train_with_bf16_then_evaluate_and_index_build(ds, tmp_path, monkeypatch, capsys):
    """``xmr train --set model.dtype=bfloat16``, ``xmr evaluate`` and ``xmr index build
    --model`` on the bf16 model folder (the index holds the table as float32)."""
    pytest.importorskip("faiss")
    from xmr.cli.main import main
    from xmr.data.formats import write_npz
    from xmr.index import LabelIndex, exact_search
    from xmr.models.xmr_model import load_label_table

    monkeypatch.chdir(tmp_path)
    d = tmp_path / "data"
    d.mkdir()
    for k in ("X_trn", "Y_trn", "X_tst", "Y_tst"):
        write_npz(d / f"{k}.npz", getattr(ds, k))
    assert main(["train", "--set", f"data.dataset={d}", "--set", "loss.preset=sampled",
                 "--set", "loss.num_random=16", "--set", "model.dim=16", "--set",
                 "model.dtype=bfloat16", "--set", "optim.epochs=3", "--set", "optim.lr_table=0.2",
                 "--set", "optim.lr_encoder=0.01", "--set", "device=cpu",
                 "--no-progress", "--out", "run"]) == 0
    out = capsys.readouterr().out
    summary = json.loads(out[out.index("{\n"):])
    assert summary["test"]["P@1"] > 0.5
    model = XMRModel.load("run/model")
    assert model.cfg.dtype == "bfloat16" and model.label_table.weight.dtype == torch.bfloat16
    assert main(["evaluate", "--model", "run/model", "--dataset", str(d)]) == 0
    out = capsys.readouterr().out
    assert json.loads(out[out.index("{"):])["P@1"] == pytest.approx(summary["test"]["P@1"])
    assert main(["index", "build", "--model", "run/model", "--out", "idx", "--factory", "Flat",
                 "--no-mips", "--gpu", "no"]) == 0
    W = load_label_table("run/model")
    assert W.dtype == np.float32
    np.testing.assert_array_equal(W, model.label_table.weight_numpy())
    from xmr.api import embed

    Q = embed(model, ds.X_tst)
    s, i = LabelIndex.load("idx").search(Q, 5)
    _, ref = exact_search(W, Q, 5)
    np.testing.assert_allclose(s, np.einsum("nd,nkd->nk", Q, W[i]), rtol=1e-4, atol=1e-4)
    assert (i[:, 0] == ref[:, 0]).mean() >= 0.98


def test_miner_and_label_index_take_a_bf16_table_tensor():
    """A bf16 (or CUDA) tensor has no numpy view: the miner and the label index convert it."""
    pytest.importorskip("faiss")
    from xmr.index import LabelIndex
    from xmr.models import ShardedLabelTable
    from xmr.negatives.miner import HardNegativeMiner

    t = ShardedLabelTable(50, 8, dtype=torch.bfloat16)
    W = t.weight_numpy()
    Q = np.random.default_rng(0).standard_normal((6, 8)).astype(np.float32)
    a = LabelIndex.build(t.weight, factory="Flat", use_gpu=False).search(Q, 5)
    b = LabelIndex.build(W, factory="Flat", use_gpu=False).search(Q, 5)
    np.testing.assert_array_equal(a[1], b[1])
    np.testing.assert_array_equal(a[0], b[0])
    pos = (np.arange(7, dtype=np.int64), np.arange(6, dtype=np.int64))
    m1 = HardNegativeMiner(50, k=4, factory="Flat", use_gpu=False, seed=0).refresh(t.weight)
    m2 = HardNegativeMiner(50, k=4, factory="Flat", use_gpu=False, seed=0).refresh(W)
    for x, y in zip(m1.mine(Q, *pos), m2.mine(Q, *pos)):
        np.testing.assert_array_equal(x, y)


def test_table_master_weights_false_updates_the_bf16_rows_in_place(ds):
    """``optim.table_master_weights=false``: no fp32 master rows (2 bytes per table entry)."""
    cfg = _bf16.config("sampled", "bfloat16").with_overrides(["optim.epochs=1",
                                                              "optim.table_master_weights=false"])
    tr = Trainer(cfg, ds.X_trn, ds.Y_trn, progress=False)
    w0 = tr.model.label_table.weight.detach().clone()
    tr.fit()
    assert tr.model.label_table.weight.dtype == torch.bfloat16
    assert not torch.equal(tr.model.label_table.weight.detach(), w0)
    states = list(tr.opt_tab.state.values())
    assert states and all(set(s) == {"sum"} and s["sum"].dtype == torch.float32 for s in states)
