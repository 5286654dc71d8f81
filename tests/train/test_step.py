"""TrainStep is the trainer's step: the same weights bit for bit, phase timings, and the
dense-input / bf16 model the step benchmarks build."""

import math

import numpy as np
import pytest
import torch

from xmr.models import RowAdagrad, XMRModel
from xmr.models.config import ModelConfig
from xmr.negatives.sources import CandidateSources
from xmr.objectives.config import LossConfig
from xmr.objectives.loss import UnifiedObjective
from xmr.train.config import TrainConfig
from xmr.train.loop import Trainer, _csr_rows, _encoder_optimizer, split_valid
from xmr.train.step import PHASES, TrainStep

STEPS = 4
B = 32


def _cfg(preset):
    cfg = TrainConfig(seed=5, eval_every=0)
    cfg.model.dim = 16
    cfg.optim.batch_size = B
    cfg.data.valid_fraction = 0.1
    cfg.loss.preset = preset
    if preset != "softmax":
        cfg.loss.num_random = 12
    cfg.miner.k = 8
    cfg.miner.num_negatives = 4
    cfg.miner.refresh_every = 2  # refreshes inside the few steps
    cfg.miner.factory = "Flat"
    return cfg


def _bare_step(cfg, X, Y):
    """What the trainer builds, from the public pieces: model, optimizers, miner, sources,
    objective, TrainStep."""
    L = Y.shape[1]
    loss_cfg = cfg.loss.resolved()
    train_rows, _ = split_valid(X.shape[0], cfg.data.valid_fraction, cfg.seed)
    torch.manual_seed(cfg.seed)
    model = XMRModel(X.shape[1], L, cfg.model)
    opt_enc = _encoder_optimizer(model.encoder, cfg)
    opt_tab = RowAdagrad(model.label_table.parameters(), lr=cfg.optim.lr_table)
    miner = None
    if loss_cfg.needs_miner:
        from xmr.negatives.miner import HardNegativeMiner

        m = cfg.miner
        miner = HardNegativeMiner(L, k=m.k, refresh_every=m.refresh_every, skip_top=m.skip_top,
                                  num_negatives=m.num_negatives, factory=m.factory, seed=cfg.seed)
    counts = np.asarray(Y[train_rows].sum(0)).ravel().astype(np.int64)
    sources = CandidateSources(loss_cfg, L, label_counts=counts, seed=cfg.seed, miner=miner,
                               label_rows=model.label_table.weight_numpy)
    objective = UnifiedObjective(loss_cfg, L, full_softmax_chunk=cfg.optim.full_softmax_chunk,
                                 sources=sources)
    return model, TrainStep(model, sources, objective, [opt_enc, opt_tab]), train_rows


@pytest.mark.parametrize("preset", ["softmax", "sampled", "mined"])
def test_trainer_step_and_a_bare_train_step_reach_the_same_weights(planted, preset):
    X, Y = planted
    cfg = _cfg(preset)
    tr = Trainer(cfg, X, Y, progress=False)
    model, step, train_rows = _bare_step(cfg, X.astype(np.float32).tocsr(), Y.tocsr())
    np.testing.assert_array_equal(train_rows, tr.train_rows)
    for t in range(STEPS):
        rows = train_rows[t * B:(t + 1) * B]
        want = tr.train_step(rows)
        got = step(tr.X, rows, _csr_rows(tr.Y, rows), t)
        assert got.loss == want, (preset, t)
    a, b = tr.model.state_dict(), model.state_dict()
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), (preset, k)
    if preset == "mined":
        assert tr.miner.stats()["refreshes"] == STEPS // cfg.miner.refresh_every


def test_train_step_reports_disjoint_phase_timings(planted):
    X, Y = planted
    cfg = _cfg("mined")
    model, step, rows = _bare_step(cfg, X, Y)
    rows = rows[:B]
    res = step(X, rows, _csr_rows(Y, rows), 0)
    assert set(res.timings) == set(PHASES)
    assert all(v >= 0 and math.isfinite(v) for v in res.timings.values())
    assert res.timings["mining"] > 0 and res.timings["encoder_backward"] == 0
    assert res.num_candidates == res.candidates.num_candidates < Y.shape[1]
    assert math.isfinite(res.loss)


def test_split_backward_gives_the_same_gradients(planted):
    X, Y = planted
    cfg = _cfg("sampled")
    states = []
    for split in (False, True):
        model, step, rows = _bare_step(cfg, X, Y)
        step.split_backward = split
        for t in range(2):
            r = rows[t * B:(t + 1) * B]
            res = step(X, r, _csr_rows(Y, r), t)
        assert (res.timings["encoder_backward"] > 0) == split
        states.append(model.state_dict())
    for k in states[0]:
        torch.testing.assert_close(states[0][k], states[1][k], rtol=1e-6, atol=1e-7)


def test_non_finite_loss_raises_before_any_update(planted):
    X, Y = planted
    model, step, rows = _bare_step(_cfg("sampled"), X, Y)
    real = step.objective.score

    def nan_score(emb, table, cands):
        loss, info = real(emb, table, cands)
        return loss * float("nan"), info

    step.objective.score = nan_score
    before = {k: v.clone() for k, v in model.state_dict().items()}
    rows = rows[:B]
    with pytest.raises(FloatingPointError, match="non-finite loss .* at step 7"):
        step(X, rows, _csr_rows(Y, rows), 7)
    for k, v in model.state_dict().items():
        torch.testing.assert_close(v, before[k], rtol=0, atol=0, equal_nan=True)


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_dense_encoder_model_trains_with_train_step(dtype):
    """The model the step benchmarks build: dense inputs, the table in float32 or bfloat16."""
    rng = np.random.default_rng(0)
    n, D, L = 64, 12, 40
    X = rng.standard_normal((n, D)).astype(np.float32)
    y = rng.integers(0, L, n)
    mcfg = ModelConfig(dim=8, encoder="dense", dtype=dtype)
    model = XMRModel(D, L, mcfg, seed=0)
    assert model.label_table.weight.dtype == getattr(torch, dtype)
    assert not hasattr(model.encoder, "bag")
    loss_cfg = LossConfig(preset="sampled", num_random=10, proposal="uniform").resolved()
    sources = CandidateSources(loss_cfg, L, seed=0)
    step = TrainStep(model, sources, UnifiedObjective(loss_cfg, L, sources=sources),
                     [torch.optim.Adam(model.encoder.parameters(), lr=1e-2),
                      RowAdagrad(model.label_table.parameters(), lr=0.1)])
    w0 = model.label_table.weight.detach().clone()
    for t in range(3):
        rows = np.arange(t * 16, (t + 1) * 16)
        res = step(X, rows, (np.arange(17, dtype=np.int64), y[rows]), t)
        assert math.isfinite(res.loss)
    assert not torch.equal(model.label_table.weight, w0)
    # the same rows as a tensor, and as a sparse matrix, embed alike
    torch.testing.assert_close(model.embed(torch.from_numpy(X), np.arange(5)),
                               model.embed(X, np.arange(5)))
    import scipy.sparse as sp

    torch.testing.assert_close(model.embed(sp.csr_matrix(X), np.arange(5)),
                               model.embed(X, np.arange(5)))
    scores, ids = model.predict(X[:4], k=3)
    assert ids.shape == (4, 3) and ((ids >= 0) & (ids < L)).all()


def test_dense_model_config_is_checked_and_saved(tmp_path):
    from xmr.errors import ConfigError

    with pytest.raises(ConfigError, match="model.encoder: expected one of sparse, dense"):
        ModelConfig(encoder="bag").validate()
    with pytest.raises(ConfigError, match="model.dtype: expected one of float32, bfloat16"):
        ModelConfig(dtype="float16").validate()
    with pytest.raises(ConfigError, match="model.input_dropout: the dense encoder"):
        ModelConfig(encoder="dense", input_dropout=0.1).validate()
    model = XMRModel(6, 9, ModelConfig(dim=4, encoder="dense", dtype="bfloat16"), seed=1)
    back = XMRModel.load(model.save(tmp_path / "m"))
    assert back.cfg.encoder == "dense" and back.label_table.weight.dtype == torch.bfloat16
    for k, v in model.state_dict().items():
        assert torch.equal(v, back.state_dict()[k]), k


def test_a_run_resolves_its_loss_config_once(planted, monkeypatch):
    """The trainer, its candidate sources, objective and step share one resolved config, and
    building it and training a few steps validates (resolves) it once."""
    X, Y = planted
    calls = []
    real = LossConfig._check_values  # the value checks of resolved()
    monkeypatch.setattr(LossConfig, "_check_values", lambda self: calls.append(1) or real(self))
    cfg = _cfg("mined")
    tr = Trainer(cfg, X, Y, progress=False)
    for t in range(2):
        tr.train_step(tr.train_rows[t * B:(t + 1) * B])
    assert len(calls) == 1
    assert tr.loss_cfg is cfg.loss.resolved() is tr.sources.cfg is tr.objective.cfg
    assert tr.step_fn.sources is tr.sources and tr.step_fn.objective is tr.objective
