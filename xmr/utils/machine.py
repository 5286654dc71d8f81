"""The machine a measurement ran on, and the commit it ran at: written once, for the benchmark
results files (``benchmarks/_common.py``) and ``xmr demo``'s report."""

from __future__ import annotations

import os
import platform
import subprocess
from pathlib import Path
from typing import Optional

#: the checkout this package lives in (the commit of a measurement is read from here)
REPO = Path(__file__).resolve().parents[2]


def git_commit(cwd: "Path | str | None" = None, dirty: bool = True) -> Optional[str]:
    """``HEAD`` of the checkout at ``cwd`` (default: this package's), with ``+dirty`` when
    tracked files differ (``dirty=True``); ``None`` when git cannot tell."""
    cwd = REPO if cwd is None else cwd
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=cwd, capture_output=True,
                             text=True, check=True, timeout=10).stdout.strip()
        if not out:
            return None
        if dirty and subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"],
                                    cwd=cwd, capture_output=True, text=True,
                                    timeout=10).stdout.strip():
            out += "+dirty"
        return out
    except Exception:
        return None


def machine_info() -> dict:
    """Platform, CPU model and count, library versions, torch threads (and the GPU, if any)."""
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
