"""One training step hands the loss the batch's own teacher rows, targets and candidates.

A trainer that fed the teacher rows of the wrong points (the batch shifted by one) trains fine
and passes every end-to-end test; here each point's teacher row encodes the point's index, so a
misalignment cannot hide. α ≠ 0.5 and τ_t ≠ 1 so that swapped weights or a missing temperature
show as well."""

import numpy as np
import pytest
import scipy.sparse as sp
import torch

import xmr.negatives.candidates as C
from xmr.teachers.store import TeacherStore, from_topk
from xmr.train.config import TrainConfig
from xmr.train.loop import Trainer

ALPHA, TAU_T = 0.3, 2.0
TEACHER_LOGITS = np.array([3.0, 1.0, 0.0], np.float32)


def _teacher_ids(i, L):
    return [(7 * i + j) % L for j in range(3)]


def _setup(planted, tmp_path, preset, reduction="pal-n"):
    X, Y = planted
    n, L = Y.shape
    ids = np.array([_teacher_ids(i, L) for i in range(n)])
    store = TeacherStore.load(from_topk(ids, np.tile(TEACHER_LOGITS, (n, 1)), L, {"k": 3})
                              .save(tmp_path / "store"))
    cfg = TrainConfig(seed=1, eval_every=0)
    cfg.model.dim = 8
    cfg.optim.batch_size = 16
    cfg.optim.epochs = 1
    cfg.data.valid_fraction = 0.0
    cfg.loss.preset = preset
    cfg.loss.alpha = ALPHA
    cfg.loss.tau_t = TAU_T
    cfg.loss.reduction = reduction
    if preset == "double-distill":
        cfg.loss.mined = False  # keep the step free of FAISS; H is tested by the miner's tests
    return X, Y, store, Trainer(cfg, X, Y, teacher=store, progress=False)


def _expected_targets(Y, r, L):
    t = np.zeros(L)
    pos = Y[r].indices
    t[pos] += (1 - ALPHA) / len(pos)
    q = np.exp(TEACHER_LOGITS / TAU_T)
    q /= q.sum()
    for j, lab in enumerate(_teacher_ids(r, L)):
        t[lab] += ALPHA * q[j]
    return t


def test_distill_step_targets_are_the_batch_points_own(planted, tmp_path, monkeypatch):
    X, Y, store, tr = _setup(planted, tmp_path, "distill")
    L = Y.shape[1]
    seen = {}
    real = type(tr.model.label_table).full_softmax_loss

    def spy(self, emb, ptr, ids, vals, **kw):
        seen["targets"] = (ptr.numpy().copy(), ids.numpy().copy(), vals.numpy().copy())
        seen["emb"] = emb.detach().clone()
        return real(self, emb, ptr, ids, vals, **kw)

    monkeypatch.setattr(type(tr.model.label_table), "full_softmax_loss", spy)
    rows = np.array([5, 0, 33, 2, 17, 399, 128, 64])
    with torch.no_grad():
        want_emb = tr.model.embed(X, rows)
    tr.train_step(rows)
    ptr, ids, vals = seen["targets"]
    got = sp.csr_matrix((vals, ids, ptr), shape=(len(rows), L)).toarray()
    for b, r in enumerate(rows):
        np.testing.assert_allclose(got[b], _expected_targets(Y, r, L), atol=2e-6, err_msg=str(r))
    torch.testing.assert_close(seen["emb"], want_emb)


def test_decoupled_distill_step_gets_the_batch_points_positives(planted, tmp_path, monkeypatch):
    """Decoupled reduction, decoupled teacher term (the defaults): the soft targets are
    alpha·q^t of the batch's own teacher rows off the positives, and the positives are the
    batch's own labels with weights (1 − alpha)/|P| plus alpha·q^t where the teacher lists them."""
    X, Y, store, tr = _setup(planted, tmp_path, "distill", reduction="decoupled")
    L = Y.shape[1]
    seen = {}
    real = type(tr.model.label_table).full_softmax_loss

    def spy(self, emb, ptr, ids, vals, **kw):
        seen["soft"] = sp.csr_matrix((vals.numpy(), ids.numpy(), ptr.numpy()), shape=(len(ptr) - 1, L))
        p_ptr, p_ids, p_w = (a.numpy() for a in kw["positives"])
        seen["pos"] = sp.csr_matrix((p_w, p_ids, p_ptr), shape=(len(p_ptr) - 1, L))
        return real(self, emb, ptr, ids, vals, **kw)

    monkeypatch.setattr(type(tr.model.label_table), "full_softmax_loss", spy)
    rows = np.array([7, 1, 250, 3, 99])
    tr.train_step(rows)
    q = np.exp(TEACHER_LOGITS / TAU_T)
    q /= q.sum()
    on_pos = 0
    for b, r in enumerate(rows):
        want_soft = np.zeros(L)
        for j, lab in enumerate(_teacher_ids(r, L)):
            want_soft[lab] += ALPHA * q[j]
        want_pos = np.zeros(L)
        P = Y[r].indices
        want_pos[P] = (1 - ALPHA) / len(P) + want_soft[P]
        on_pos += int((want_soft[P] > 0).sum())
        want_soft[P] = 0.0
        np.testing.assert_allclose(seen["soft"][b].toarray().ravel(), want_soft, atol=2e-6)
        np.testing.assert_allclose(seen["pos"][b].toarray().ravel(), want_pos, atol=2e-6)
    assert on_pos > 0  # the planted teacher lists some positives: the move is exercised


@pytest.mark.parametrize("preset", ["teacher-negatives", "double-distill"])
def test_candidate_step_gets_the_batch_points_teacher_rows(planted, tmp_path, monkeypatch,
                                                          preset):
    X, Y, store, tr = _setup(planted, tmp_path, preset)
    L = Y.shape[1]
    seen = {}
    real = C.assemble_batch

    def spy(pos_indptr, pos_ids, **kw):
        seen["pos"] = (np.asarray(pos_indptr).copy(), np.asarray(pos_ids).copy())
        seen["teacher"] = kw.get("teacher")
        batch = real(pos_indptr, pos_ids, **kw)
        seen["cand"] = np.asarray(batch.cand_ids).copy()
        return batch

    monkeypatch.setattr(C, "assemble_batch", spy)
    rows = np.array([9, 1, 250, 3, 44])
    tr.train_step(rows)
    p_ptr, p_ids = seen["pos"]
    t_ptr, t_ids, t_logits = seen["teacher"]
    for b, r in enumerate(rows):
        assert sorted(p_ids[p_ptr[b]:p_ptr[b + 1]]) == sorted(Y[r].indices), r
        assert list(t_ids[t_ptr[b]:t_ptr[b + 1]]) == _teacher_ids(r, L), r
        np.testing.assert_array_equal(t_logits[t_ptr[b]:t_ptr[b + 1]], TEACHER_LOGITS)
        assert set(_teacher_ids(r, L)) <= set(seen["cand"].tolist())  # T(x) ⊆ A(x)
        assert set(Y[r].indices) <= set(seen["cand"].tolist())  # P(x) ⊆ A(x)
