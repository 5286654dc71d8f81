"""Regularised, scheduled training: the schedule's values, decoupled weight decay on touched
rows only, input dropout, early stopping that ends on the best held-out weights, and an exact
resume through all of them."""

import math

import numpy as np
import torch

from xmr.models import RowAdagrad
from xmr.train.config import TrainConfig
from xmr.train.loop import Trainer, _SparseAdamW, lr_factor


def _cfg(epochs=3, **optim):
    cfg = TrainConfig(seed=5, eval_every=1)
    cfg.model.dim = 16
    cfg.optim.epochs = epochs
    cfg.optim.batch_size = 64
    cfg.optim.lr_table = 0.2
    cfg.optim.lr_encoder = 1e-2
    cfg.data.valid_fraction = 0.2
    cfg.loss.preset = "softmax"
    for k, v in optim.items():
        setattr(cfg.optim, k, v)
    return cfg


def test_lr_factor_warmup_then_decay():
    f = [lr_factor(s, 10, "linear", 0.2, 0.1) for s in range(10)]
    assert f[:2] == [0.5, 1.0]  # 2 warm-up steps
    assert f[2] == 1.0 and math.isclose(f[-1], 0.1)
    assert all(a >= b for a, b in zip(f[2:], f[3:]))
    c = [lr_factor(s, 11, "cosine", 0.0, 0.0) for s in range(11)]
    assert c[0] == 1.0 and math.isclose(c[5], 0.5) and abs(c[-1]) < 1e-12
    assert [lr_factor(s, 7, "constant", 0.0, 0.0) for s in range(7)] == [1.0] * 7


def test_trainer_applies_the_schedule(planted):
    X, Y = planted
    tr = Trainer(_cfg(epochs=2, schedule="linear", lr_final_ratio=0.25), X, Y, progress=False)
    tr.fit()
    # the last step ran at 0.25 of the base rates
    assert math.isclose(tr.opt_tab.param_groups[0]["lr"], 0.2 * 0.25, rel_tol=1e-9)
    for o in tr.opt_enc.opts.values():
        assert math.isclose(o.param_groups[0]["lr"], 1e-2 * 0.25, rel_tol=1e-9)


def test_row_adagrad_decays_only_touched_rows():
    torch.manual_seed(0)
    W = torch.nn.Parameter(torch.randn(6, 3))
    before = W.detach().clone()
    opt = RowAdagrad([W], lr=0.1, weight_decay=0.5)
    g = torch.sparse_coo_tensor(torch.tensor([[1, 4]]), torch.zeros(2, 3), (6, 3), check_invariants=True)
    W.grad = g
    opt.step()
    after = W.detach()
    untouched = [0, 2, 3, 5]
    torch.testing.assert_close(after[untouched], before[untouched], rtol=0, atol=0)
    # zero gradient: the update is pure decay, p (1 − lr·wd)
    torch.testing.assert_close(after[[1, 4]], before[[1, 4]] * (1 - 0.05))


def test_sparse_adamw_decays_only_touched_rows():
    torch.manual_seed(0)
    emb = torch.nn.Embedding(8, 4, sparse=True)
    before = emb.weight.detach().clone()
    opt = _SparseAdamW([emb.weight], lr=0.1, weight_decay=0.1)
    emb(torch.tensor([2, 5])).sum().backward()
    opt.step()
    ref = torch.optim.SparseAdam([torch.nn.Parameter(before.clone())], lr=0.1)
    p = ref.param_groups[0]["params"][0]
    p.data[[2, 5]] *= 1 - 0.01
    p.grad = emb.weight.grad
    ref.step()
    torch.testing.assert_close(emb.weight.detach(), p.detach())
    untouched = [0, 1, 3, 4, 6, 7]
    torch.testing.assert_close(emb.weight.detach()[untouched], before[untouched], rtol=0, atol=0)


def test_input_dropout_only_in_training(planted):
    X, Y = planted
    cfg = _cfg()
    cfg.model.input_dropout = 0.5
    tr = Trainer(cfg, X, Y, progress=False)
    m = tr.model
    rows = np.arange(32)
    m.eval()
    a, b = m.embed(X, rows), m.embed(X, rows)
    torch.testing.assert_close(a, b, rtol=0, atol=0)
    m.train()
    torch.manual_seed(0)
    c = m.embed(X, rows)
    assert not torch.allclose(a, c)
    # each feature is either dropped or kept scaled by 1/(1 − p): on one-feature rows the
    # embedding (a linear bag, no hidden layer) is the bias alone or bias + 2·(x·e_f)
    import scipy.sparse as sp

    one = sp.csr_matrix((np.full(40, 0.7, np.float32), (np.arange(40), np.arange(40) % 7)),
                        shape=(40, X.shape[1]))
    m.eval()
    full = m.embed(one) - m.encoder.bag_bias
    m.train()
    draws = torch.stack([m.embed(one) - m.encoder.bag_bias for _ in range(50)])  # [50, 40, d]
    dropped = draws.abs().amax(-1) < 1e-7
    kept = torch.isclose(draws, 2 * full.expand_as(draws), rtol=1e-5, atol=1e-6).all(-1)
    assert bool((dropped | kept).all())
    assert 0.4 < float(dropped.float().mean()) < 0.6


def test_early_stopping_ends_on_the_best_held_out_weights(planted, tmp_path):
    X, Y = planted
    cfg = _cfg(epochs=30, lr_encoder=0.05)  # a long run on a small set: held-out P@1 peaks early
    cfg.early_stopping_patience = 2
    tr = Trainer(cfg, X, Y, out_dir=tmp_path / "es", progress=False)
    res = tr.fit()
    hist = [h["P@1"] for h in res.history]
    assert len(hist) < 30, "never stopped"
    best = int(np.argmax(hist))
    assert len(hist) == best + 1 + 2  # stopped after `patience` evaluations without progress
    for k, v in tr.best["model"].items():
        torch.testing.assert_close(res.model.state_dict()[k], v, rtol=0, atol=0, msg=k)
    from xmr.train.loop import evaluate_model

    m = evaluate_model(res.model, X[tr.valid_rows], Y[tr.valid_rows])
    assert math.isclose(m["P@1"], max(hist))


def test_resume_with_schedule_decay_dropout_and_early_stopping(planted, tmp_path):
    X, Y = planted
    cfg = _cfg(epochs=4, schedule="cosine", warmup_fraction=0.1, weight_decay=0.01,
               table_weight_decay=0.01)
    cfg.model.input_dropout = 0.2
    cfg.early_stopping_patience = 3
    cfg.checkpoint_every = 5
    full = Trainer(cfg, X, Y, out_dir=tmp_path / "full", progress=False).fit()
    part = Trainer(cfg, X, Y, out_dir=tmp_path / "part", progress=False)
    part.fit(stop_after_steps=12)  # after the first evaluation (5 steps an epoch)
    resumed_tr = Trainer(cfg, X, Y, out_dir=tmp_path / "part", progress=False)
    resumed_tr.load_checkpoint()
    assert resumed_tr.step == 10 and resumed_tr.best is not None
    resumed = Trainer(cfg, X, Y, out_dir=tmp_path / "part", progress=False).fit(resume=True)
    assert resumed.steps == full.steps
    a, b = full.model.state_dict(), resumed.model.state_dict()
    assert a.keys() == b.keys()
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=0, atol=0, msg=k)


def test_glas_pulls_label_norms_toward_one(planted):
    """GLaS's target has a unit diagonal: with it on, the trained label rows' norms sit closer
    to 1 than without it (the same run otherwise)."""
    X, Y = planted
    norms = {}
    for lam in (0.0, 1.0):
        cfg = _cfg(epochs=2)
        cfg.loss.glas = lam
        res = Trainer(cfg, X, Y, progress=False).fit()
        W = res.model.label_table.weight.detach()
        assert torch.isfinite(W).all()
        norms[lam] = float((W.norm(dim=1) - 1).abs().mean())
    assert norms[1.0] < 0.8 * norms[0.0], norms  # measured: 0.275 -> 0.189
