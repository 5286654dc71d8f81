"""`import xmr` must stay cheap: no torch, no faiss, no Numba compilation at import time."""

import json
import subprocess
import sys


def _modules_after(stmt: str) -> set:
    code = f"import sys; {stmt}; import json; print(json.dumps(sorted(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return set(json.loads(out.stdout))


def test_import_xmr_is_cheap():
    mods = _modules_after("import xmr")
    for heavy in ("torch", "faiss", "numba", "sklearn", "scipy"):
        assert heavy not in mods, f"`import xmr` imported {heavy}"


def test_import_kernels_compiles_nothing():
    mods = _modules_after("import xmr.kernels")
    assert "numba" not in mods and "faiss" not in mods


def test_cli_help_imports_no_faiss_or_torch():
    mods = _modules_after("from xmr.cli.main import build_parser; build_parser()")
    assert "faiss" not in mods
    assert "torch" not in mods


def test_python_dash_m_xmr_version():
    out = subprocess.run([sys.executable, "-m", "xmr", "--version"], capture_output=True, text=True)
    assert out.returncode == 0
    import xmr

    assert out.stdout.strip() == f"xmr {xmr.__version__}"
