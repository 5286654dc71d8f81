"""Tree teachers (cross-fitted), ensembles and the teacher report."""

import math
import sys

import numpy as np
import pytest
import scipy.sparse as sp
from _helpers import planted_sparse

from xmr.errors import MissingDependencyError
from xmr.teachers.combine import combine_stores, store_probabilities
from xmr.teachers.report import teacher_report
from xmr.teachers.store import TeacherStore, from_topk
from xmr.teachers.trees import fit_tree_teacher, fold_assignment



@pytest.fixture(scope="module")
def data():
    return planted_sparse(n=400, D=300, L=150, seed=1)  # few rows per label: folds matter



def test_napkinxc_teacher_out_of_fold_is_honest(data):
    pytest.importorskip("napkinxc")
    X, Y = data
    oof = fit_tree_teacher(X, Y, "napkinxc", folds=3, k=8, seed=0)
    own = fit_tree_teacher(X, Y, "napkinxc", folds=1, k=8, seed=0)
    assert oof.num_rows == 400 and oof.meta["out_of_fold"] and not own.meta["out_of_fold"]
    r_oof, r_own = teacher_report(oof, Y), teacher_report(own, Y)
    assert r_oof["P@1"] > 0.8  # planted data: a tree learns it from two thirds of the rows
    # scoring its own training points is optimistic: far lower log-loss on the same labels
    assert r_own["log_loss"] < 0.6 * r_oof["log_loss"]
    # the logits are log-probabilities: softmax at tau = 1 renormalises them over the top-K
    ptr, ids, logits = oof.rows(np.arange(5))
    assert np.all(logits <= 1e-3)


def test_fold_assignment_is_the_demo_rule():
    a = fold_assignment(1000, 5, 0)
    np.testing.assert_array_equal(a, np.random.default_rng([0, 31]).integers(0, 5, 1000))
    assert set(np.unique(a)) == {0, 1, 2, 3, 4}


def test_missing_backend_names_the_extra(data, monkeypatch):
    monkeypatch.setitem(sys.modules, "omikuji", None)  # import omikuji now raises ImportError
    X, Y = data
    with pytest.raises(MissingDependencyError, match=r"pip install 'xmr\[peers\]'"):
        fit_tree_teacher(X, Y, "omikuji", folds=2)


def test_bad_arguments():
    X, Y = planted_sparse(n=20, D=30, L=5)
    with pytest.raises(ValueError, match="backend: expected one of omikuji, napkinxc, got 'xgb'"):
        fit_tree_teacher(X, Y, "xgb")
    with pytest.raises(ValueError, match="folds: expected an integer >= 1, got 0"):
        fit_tree_teacher(X, Y, "napkinxc", folds=0)


def _store(rows, L=6):
    k = max(len(r) for r in rows)
    ids = np.full((len(rows), k), -1)
    lg = np.full((len(rows), k), -np.inf, np.float32)
    for i, r in enumerate(rows):
        for j, (l, v) in enumerate(r):
            ids[i, j], lg[i, j] = l, v
    return from_topk(ids, lg, L)


def test_combine_averages_probabilities():
    a = _store([[(0, 2.0), (1, 0.0)], [(3, 1.0), (4, 1.0)]])
    b = _store([[(1, 1.0), (2, 1.0)], [(3, 0.0), (5, 0.5)]])
    out = combine_stores([a, b], weights=[3, 1], k=3)
    P = store_probabilities(out).toarray()
    want = 0.75 * store_probabilities(a).toarray() + 0.25 * store_probabilities(b).toarray()
    # the top 3 of each row kept, renormalised
    for i in range(2):
        top = np.argsort(-want[i], kind="stable")[:3]
        w = np.zeros(6)
        w[top] = want[i, top] / want[i, top].sum()
        np.testing.assert_allclose(P[i], w, atol=2e-3)  # fp16 logits
    with pytest.raises(ValueError, match=r"weights: expected 2 non-negative finite numbers"):
        combine_stores([a, b], weights=[1, -1])


def test_report_prefers_the_better_teacher():
    Y = sp.csr_matrix(np.array([[1, 1, 0, 0, 0, 0], [0, 0, 0, 1, 0, 0], [0, 0, 0, 0, 0, 1]], np.float32))
    good = _store([[(0, 2.0), (1, 2.0), (2, -3.0)], [(3, 3.0), (4, 0.0)], [(5, 2.0), (0, 0.0)]])
    bad = _store([[(2, 2.0), (0, 0.0)], [(4, 3.0), (3, 0.0)], [(0, 2.0), (1, 0.0)]])
    g, b = teacher_report(good, Y), teacher_report(bad, Y)
    assert g["P@1"] == 1.0 and b["P@1"] == 0.0
    assert g["log_loss"] < b["log_loss"]
    assert g["top_k_recall"] == 1.0 and math.isclose(b["top_k_recall"], 2 / 4)
    assert 0.0 <= g["ece"] <= 1.0 and b["ece"] > g["ece"]


def test_calibrated_temperature_sharpens_an_underconfident_teacher_and_softens_an_overconfident_one():
    from xmr.teachers.report import calibrate_temperature

    n = 40
    Y = sp.csr_matrix((np.ones(n, np.float32), (np.arange(n), np.zeros(n, int))), shape=(n, 6))
    # always right, but flat: top-1 confidence ~0.3 at τ = 1 against a hit rate of 1
    flat = _store([[(0, 0.3), (1, 0.0), (2, 0.0), (3, 0.0)] for _ in range(n)])
    # right half the time, and sure of it: confidence ~0.98 against a hit rate of 0.5
    sharp = _store([[(0, 5.0), (1, 0.0)] if i % 2 else [(1, 5.0), (0, 0.0)] for i in range(n)])
    cf, cs = calibrate_temperature(flat, Y), calibrate_temperature(sharp, Y)
    assert cf["tau"] == 0.25 and cs["tau"] == 2.0
    assert [e["tau"] for e in cf["grid"]] == [0.25, 0.35, 0.5, 0.7, 1.0, 1.4, 2.0]
    ece = {e["tau"]: e["ece"] for e in cf["grid"]}
    assert ece[0.25] < ece[1.0]
    with pytest.raises(ValueError, match=r"grid: expected positive temperatures, got \[1.0, 0.0\]"):
        calibrate_temperature(flat, Y, grid=(1.0, 0.0))


def test_cli_combine(tmp_path, capsys):
    from xmr.cli.main import main

    a = _store([[(0, 2.0), (1, 0.0)], [(3, 1.0), (4, 1.0)]]).save(tmp_path / "a")
    b = _store([[(1, 1.0), (2, 1.0)], [(3, 0.0), (5, 0.5)]]).save(tmp_path / "b")
    assert main(["teacher", "combine", str(a), str(b), "-k", "2", "--out", str(tmp_path / "e")]) == 0
    e = TeacherStore.load(tmp_path / "e")
    assert e.num_rows == 2 and np.diff(e.indptr).tolist() == [2, 2]
    assert main(["teacher", "combine", str(a), str(b), "--weights", "1", "--out",
                 str(tmp_path / "f")]) == 1
    assert "--weights: expected 2 values (one per store), got 1" in capsys.readouterr().err


def test_cli_report_calibrate(tmp_path, capsys):
    """`xmr teacher report --calibrate` on a user's TSV folder prints the τ grid and the pick."""
    from _helpers import tsv_folder

    from xmr.cli.main import main
    from xmr.data.loaders import load_dataset

    folder = tsv_folder(tmp_path / "own", n=60)
    ds = load_dataset(str(folder), root=str(tmp_path / "root"))
    n, L = ds.Y_trn.shape
    Y = ds.Y_trn.tocsr()
    rows = [[(int(Y.indices[Y.indptr[i]]), 0.3), (int((Y.indices[Y.indptr[i]] + 1) % L), 0.0)]
            for i in range(n)]
    st = _store(rows, L=L).save(tmp_path / "t")
    assert main(["teacher", "report", str(st), "--dataset", str(folder), "--root",
                 str(tmp_path / "root"), "--calibrate"]) == 0
    out = capsys.readouterr().out
    assert "τ_t by out-of-fold ECE: 0.25:" in out and "-> loss.tau_t=0.25" in out
