"""Smoke tests of the micro benchmarks (kernels, I/O, metrics, exact softmax, index) at tiny
sizes on CPU: each script runs to completion and writes a results file whose figures are finite.
Results go to a temporary folder (``XMR_BENCH_RESULTS``), never over the committed ones; timings
are never asserted."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
RUNS = {
    "bench_kernels": (["--quick", "--repeat", "1"], "bench_kernels.json"),
    "bench_io": (["--rows", "300", "--features", "500", "--labels", "60", "--nnz-x", "5",
                  "--nnz-y", "2", "--repeat", "1", "--repeat-sklearn", "1"], "bench_io.json"),
    "bench_metrics": (["--quick", "--repeat", "1"], "metrics.json"),
    "bench_softmax": (["--tiny", "--out", "{tmp}/bench_softmax.json"], "bench_softmax.json"),
    "bench_index": (["--sizes", "2000", "--dims", "16", "--factories", "Flat", "--queries", "20",
                     "--large-queries", "10", "--repeat", "1"], "bench_index.json"),
    "bench_mining_index": (["--tiny"], "bench_mining_index.json"),
}


def _numbers(x):
    if isinstance(x, bool):
        return
    if isinstance(x, (int, float)):
        yield x
    elif isinstance(x, dict):
        for v in x.values():
            yield from _numbers(v)
    elif isinstance(x, list):
        for v in x:
            yield from _numbers(v)


@pytest.mark.parametrize("name", sorted(RUNS))
def test_micro_benchmark_runs_at_tiny_size(name, tmp_path):
    args, out = RUNS[name]
    env = dict(os.environ, XMR_BENCH_RESULTS=str(tmp_path), OMP_NUM_THREADS="1")
    p = subprocess.run([sys.executable, "-m", f"benchmarks.micro.{name}",
                        *[a.format(tmp=tmp_path) for a in args]], cwd=ROOT, env=env,
                       capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr[-3000:]
    payload = json.loads((tmp_path / out).read_text())
    for key in ("name", "machine", "commit", "date", "config", "results"):
        assert key in payload, key
    nums = list(_numbers(payload["results"]))
    assert nums, "no figures in the results"
    assert all(math.isfinite(v) for v in nums if isinstance(v, float)), name
    if name == "bench_mining_index":  # recall is a fraction, and the exact index finds all
        res = payload["results"]["5000"]
        assert all(0.0 <= r["recall_at_k"] <= 1.0 for r in res["rows"])
        assert res["choice"] in res["rows"]
