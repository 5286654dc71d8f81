"""export_teacher: K-fold cross-fitting — every point is scored by a teacher that did not see it."""

from __future__ import annotations

import numpy as np
import pytest
from _helpers import planted_matrices

from xmr.data.dataset import XMCDataset
from xmr.teachers.export import export_teacher, fold_assignment
from xmr.teachers.store import TeacherStore
from xmr.train.config import TrainConfig
from xmr.train.loop import Trainer


def _cfg():
    cfg = TrainConfig(seed=3, eval_every=0)
    cfg.loss.preset = "softmax"
    cfg.model.dim = 8
    cfg.optim.epochs = 1
    cfg.optim.batch_size = 32
    cfg.data.valid_fraction = 0.0
    return cfg


@pytest.fixture(scope="module")
def ds():
    return XMCDataset(name="planted", **planted_matrices(n_trn=90, n_tst=10, D=30, L=8))


def test_fold_rule_is_the_demos():
    """The demo's cross-fitting (its numbers must not move): default_rng([seed, 31]).integers."""
    f = fold_assignment(1000, 2, 0)
    assert np.array_equal(f, np.random.default_rng([0, 31]).integers(0, 2, 1000))
    assert np.array_equal(fold_assignment(7, 1, 0), np.zeros(7))
    with pytest.raises(ValueError, match="folds: expected an integer >= 1, got 0"):
        fold_assignment(7, 0, 0)


def test_each_fold_is_scored_by_the_teacher_trained_on_the_others(ds, tmp_path):
    cfg = _cfg()
    seen = []
    res = export_teacher(cfg, ds, k=4, folds=3, out=tmp_path / "store", progress=False,
                         on_fold=lambda f, r: seen.append(f))
    assert seen == [0, 1, 2]
    store = TeacherStore.load(tmp_path / "store")
    assert store.meta["folds"] == 3 and store.meta["out_of_fold"] and store.num_rows == 90
    assert np.array_equal(res.fold_of, fold_assignment(90, 3, cfg.seed))
    for f in range(3):
        fit, held = np.flatnonzero(res.fold_of != f), np.flatnonzero(res.fold_of == f)
        ref = Trainer(cfg, ds.X_trn[fit], ds.Y_trn[fit], progress=False).fit().model
        scores, ids = ref.predict(ds.X_trn[held], 4)
        _, got_ids, got_logits = store.rows(held)
        assert np.array_equal(got_ids.reshape(-1, 4), ids)
        np.testing.assert_allclose(got_logits.reshape(-1, 4), scores, rtol=2e-3, atol=2e-3)
        # ... and not by a teacher that saw them (that one differs)
        if f == 0:
            own = Trainer(cfg, ds.X_trn, ds.Y_trn, progress=False).fit().model
            assert not np.array_equal(own.predict(ds.X_trn[held], 4)[1], ids)


def test_one_fold_warns_and_scores_own_points(ds):
    with pytest.warns(UserWarning, match="folds=1: the teacher scores its own training points"):
        res = export_teacher(_cfg(), ds, k=4, folds=1, progress=False)
    own = Trainer(_cfg(), ds.X_trn, ds.Y_trn, progress=False).fit().model
    _, ids = own.predict(ds.X_trn, 4)
    assert np.array_equal(res.store.rows(np.arange(90))[1].reshape(-1, 4), ids)
    assert res.path is None and res.store.meta["out_of_fold"] is False


def test_a_teacher_preset_needing_a_teacher_is_refused(ds):
    cfg = _cfg()
    cfg.loss.preset = "distill"
    with pytest.raises(ValueError, match="loss preset 'distill' needs one"):
        export_teacher(cfg, ds, k=4, folds=2)
