"""Smoke test of benchmarks/studies/bias_variance.py at tiny size: the study's code runs in CI and its
outputs have the documented shape; the variance identity holds within a loose MC tolerance."""

from __future__ import annotations

import json

import pytest

pytest.importorskip("matplotlib")
pytest.importorskip("threadpoolctl")


def test_bias_variance_quick(tmp_path):
    from benchmarks.studies import bias_variance

    bias_variance.main(["--quick", "--out", str(tmp_path)])
    payload = json.loads((tmp_path / "bias_variance.json").read_text())
    assert (tmp_path / "bias_variance.png").stat().st_size > 10_000
    assert {"name", "machine", "commit", "date", "config", "results"} <= payload.keys()
    res = payload["results"]

    ident = res["variance_identity"]
    assert [r["N"] for r in ident["per_N"]] == payload["config"]["identity"]["Ns"]
    for r in ident["per_N"]:
        # Same mean for both estimators (unbiasedness), and Var[one-hot] >= Var[Bayes].
        assert r["var_onehot"] > r["var_bayes"] > 0
        assert abs(r["mean_onehot"] - r["mean_bayes"]) < 5 * (r["var_onehot"] ** 0.5 / 10)
        assert abs(r["ratio"] - 1) < 5 * r["ratio_se"] + 0.05

    sweep = res["teacher_sweep"]["per_N"]
    cfg = payload["config"]["sweep"]
    for N in cfg["Ns"]:
        rows = sweep[str(N)]
        kinds = [(r["teacher"], r["param"]) for r in rows]
        assert kinds[:2] == [("onehot", None), ("bayes", None)]
        assert len(rows) == 2 + len(cfg["temperatures"]) + len(cfg["noise_sigmas"])
        bayes = rows[1]
        assert bayes["teacher_l1"] == 0.0
        for r in rows:
            assert r["student_kl"] > 0 and 0 < r["student_p1"] <= res["teacher_sweep"]["bayes_p1"]
            assert r["lambda"] in cfg["lambdas"]
        # Temperature keeps the argmax: such a teacher has the Bayes P@1 on its inputs.
        t_rows = [r for r in rows if r["teacher"] == "temperature"]
        assert all(abs(r["teacher_p1"] - bayes["teacher_p1"]) < 1e-9 for r in t_rows)
