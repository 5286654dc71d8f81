"""Helpers shared by the benchmark scripts: machine description, commit, JSON results.

Every benchmark writes ``benchmarks/results/<name>.json`` with the keys ``name``, ``machine``,
``commit``, ``date``, ``config`` and ``results``. README tables are rendered from those files
(``python benchmarks/render_readme.py``); nothing in the README is typed by hand.
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable

RESULTS = Path(__file__).resolve().parent / "results"
ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # allow `python benchmarks/x.py` from a checkout
    sys.path.insert(0, str(ROOT))


def git_commit() -> str:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True,
                             text=True, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=ROOT,
                               capture_output=True, text=True).stdout.strip()
        return out + ("+dirty" if dirty else "")
    except Exception:
        return "unknown"


def machine_info() -> dict:
    info = {
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "python": platform.python_version(),
        "cpu_count": os.cpu_count(),
    }
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    info["cpu_model"] = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    for mod in ("numpy", "scipy", "torch", "numba", "faiss", "sklearn"):
        try:
            m = __import__(mod)
            info[f"{mod}_version"] = getattr(m, "__version__", "?")
        except Exception:
            pass
    try:
        import torch

        info["torch_threads"] = torch.get_num_threads()
        if torch.cuda.is_available():
            info["gpu"] = torch.cuda.get_device_name(0)
    except Exception:
        pass
    return info


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
