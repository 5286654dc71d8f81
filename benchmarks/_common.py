"""Helpers shared by the benchmark scripts: machine description, commit, JSON results.

Every benchmark writes ``benchmarks/results/<name>.json`` with the keys ``name``, ``machine``,
``commit``, ``date``, ``config`` and ``results``. README tables are rendered from those files
(``python benchmarks/render_readme.py``); nothing in the README is typed by hand. Every script
runs as a module from the repository root (``python -m benchmarks.<kind>.<name>``) and starts
its workers with :func:`run_worker`.
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable, Sequence

from xmr.utils.machine import git_commit as _git_commit
from xmr.utils.machine import machine_info

__all__ = ["RESULTS", "ROOT", "best_time", "git_commit", "machine_info", "python_env",
           "run_worker", "vmhwm_bytes", "write_result"]

RESULTS = Path(__file__).resolve().parent / "results"
ROOT = Path(__file__).resolve().parent.parent


def git_commit() -> str:
    """``HEAD`` of this checkout (``+dirty`` when tracked files differ), else ``"unknown"``."""
    return _git_commit(ROOT) or "unknown"


def python_env(**extra: str) -> dict:
    """This process's environment with the repository root first on ``PYTHONPATH`` (so that a
    worker started anywhere imports this checkout's ``benchmarks`` and ``xmr``), plus ``extra``."""
    path = os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH", "")) if p)
    return dict(os.environ, PYTHONPATH=path, **extra)


def run_worker(module: str, args: Sequence[str], env: "dict | None" = None,
               python: "str | None" = None, **kwargs) -> subprocess.CompletedProcess:
    """Run ``python -m MODULE ARGS`` in a fresh process from the repository root (the one way the
    benchmarks launch their workers); stdout and stderr are captured as text unless ``kwargs``
    says otherwise. ``python`` defaults to this interpreter; ``env`` to :func:`python_env`."""
    kwargs.setdefault("capture_output", True)
    kwargs.setdefault("text", True)
    return subprocess.run([python or sys.executable, "-m", module, *map(str, args)], cwd=ROOT,
                          env=python_env() if env is None else env, **kwargs)


def write_result(name: str, config: dict, results, path: "Path | None" = None) -> Path:
    """Write a results file atomically and return its path."""
    from xmr.utils.atomic import atomic_open

    # XMR_BENCH_RESULTS redirects every results file (the smoke tests use it so that a tiny run
    # never overwrites a committed measurement)
    folder = Path(os.environ["XMR_BENCH_RESULTS"]) if os.environ.get("XMR_BENCH_RESULTS") \
        else RESULTS
    path = Path(path) if path else folder / f"{name}.json"
    payload = {
        "name": name,
        "machine": machine_info(),
        "commit": git_commit(),
        "date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "config": config,
        "results": results,
    }
    with atomic_open(path, "w") as f:
        json.dump(payload, f, indent=2, sort_keys=False)
        f.write("\n")
    return path


def vmhwm_bytes() -> int:
    """Peak resident memory of this process so far (Linux ``VmHWM``), in bytes."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError("no VmHWM in /proc/self/status")


def reset_vmhwm() -> bool:
    """Reset this process's peak resident memory to its current size (Linux >= 4.0: writing 5
    to ``/proc/self/clear_refs``), so that a transient before a baseline does not hide the
    peak after it. Returns False where that is not possible."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def best_time(fn: Callable[[], object], repeat: int = 3, warmup: int = 1) -> float:
    """Minimum wall time of ``fn()`` over ``repeat`` runs after ``warmup`` runs (seconds)."""
    for _ in range(warmup):
        fn()
    best = float("inf")
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best
