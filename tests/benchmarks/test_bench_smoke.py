"""Smoke test of the step / GPU / scaling benchmark scripts at tiny sizes (CPU).

Each script runs as a subprocess with ``--tiny`` writing to a temporary folder; the test checks
that the JSON has the expected keys and that its figures are finite and positive. Timings are
never asserted. The three scripts run concurrently to keep the wall time down.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SCRIPTS = ("bench_step", "bench_gpu", "scaling_run")


def _positive(x) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x) and x > 0


@pytest.fixture(scope="module")
def results(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("bench")
    procs = {}
    for name in SCRIPTS:
        out = tmp / f"{name}.json"
        procs[name] = (out, subprocess.Popen(
            [sys.executable, "-m", f"benchmarks.throughput.{name}", "--tiny", "--out", str(out)],
            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
    loaded = {}
    for name, (out, p) in procs.items():
        stdout, stderr = p.communicate(timeout=300)
        assert p.returncode == 0, f"{name} failed:\n{stderr[-3000:]}"
        loaded[name] = json.loads(out.read_text())
    return loaded


def _common_keys(payload, name):
    for key in ("name", "machine", "commit", "date", "config", "results"):
        assert key in payload, key
    assert payload["name"].startswith(name)


def test_bench_step_tiny(results):
    payload = results["bench_step"]
    _common_keys(payload, "bench_step")
    rows = payload["results"]["rows"]
    assert {r["preset"] for r in rows} == {"softmax", "sampled", "mined", "double-distill"}
    for r in rows:
        for key in ("step_s", "samples_per_s", "x_floor", "floor_s", "candidates_A",
                    "flop_output", "flop_encoder", "matmul_gflops", "achieved_gflops"):
            assert _positive(r[key]), (r["preset"], key, r[key])
        assert r["peak_extra_bytes"] >= 0
        assert set(r["breakdown_s"]) == {"encoder", "assembly", "mining", "logits_loss", "optimizer"}
        assert all(v >= 0 and math.isfinite(v) for v in r["breakdown_s"].values())
        assert math.isclose(sum(r["breakdown_s"].values()), r["step_s"], rel_tol=1e-9)
    by = {r["preset"]: r for r in rows}
    L = by["softmax"]["labels"]
    assert by["softmax"]["candidates_A"] == L  # the exact softmax scores every label
    for p in ("sampled", "mined", "double-distill"):
        assert by[p]["candidates_A"] < L
    for p in ("mined", "double-distill"):  # the miner searched and its rebuild is amortised
        assert _positive(by[p]["refresh_s"]) and by[p]["breakdown_s"]["mining"] > 0
    assert "softmax" in payload["results"]["summary"]


def test_bench_gpu_tiny(results):
    payload = results["bench_gpu"]
    _common_keys(payload, "bench_gpu")
    res = payload["results"]
    assert _positive(res["matmul"]["bf16"]["tflops"])
    assert res["anchors"]["renee_samples_per_s_2.8M_labels_V100_64d"] == 24_500
    assert "status" in res["faiss_gpu"]
    rows = [r for r in res["rows"] if "skipped" not in r]
    assert {r["preset"] for r in rows} == {"softmax", "double-distill"}
    for r in rows:
        for key in ("step_s", "samples_per_s", "fraction_of_matmul_rate",
                    "matmul_bound_samples_per_s", "achieved_tflops", "candidates_A"):
            assert _positive(r[key]), (r["preset"], key, r[key])


def test_scaling_run_tiny(results):
    payload = results["scaling_run"]
    _common_keys(payload, "scaling_run")
    res = payload["results"]
    for key in ("samples_per_s", "train_seconds", "peak_rss_gib", "P@1_bayes",
                "expected_P@1", "expected_P@1_bayes", "KL_topK"):
        assert _positive(res[key]), (key, res[key])
    assert 0.0 <= res["P@1"] <= 1.0
    # no rule beats the Bayes-optimal one in expectation (exact identity, up to rounding)
    assert res["expected_P@1"] <= res["expected_P@1_bayes"] + 1e-6
    assert res["steps"] == payload["config"]["epochs"] * math.ceil(
        payload["config"]["n_train"] / payload["config"]["batch"])
    # training reduced the loss
    hist = res["history"]
    assert hist[-1]["mean_loss"] < hist[0]["mean_loss"]
