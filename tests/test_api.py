"""The top-level API is lazy: `import xmr` stays cheap, the names resolve on first use."""

import json
import subprocess
import sys


def _run(code: str):
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return json.loads(out.stdout)


def test_api_names_are_lazy_and_resolve():
    got = _run("import sys, json, xmr; before = [m for m in ('torch', 'faiss', 'numba', 'sklearn', "
               "'scipy') if m in sys.modules]; names = sorted(n for n in xmr.__all__ if n != "
               "'__version__'); ok = all(callable(getattr(xmr, n)) for n in names); "
               "import xmr.train.config; print(json.dumps([before, names, ok, callable(xmr.train)]))")
    before, names, ok, train_callable = got
    assert before == []
    assert {"load_dataset", "train", "export_teacher", "evaluate", "load_model", "load_predictor",
            "build_index", "embed", "TrainConfig"} <= set(names)
    assert ok and train_callable  # xmr.train is the subpackage and the function at once


def test_unknown_attribute():
    import pytest

    import xmr

    with pytest.raises(AttributeError, match="module 'xmr' has no attribute 'nope'"):
        xmr.nope


def test_make_config_sources(tmp_path):
    import pytest

    import xmr
    from xmr.errors import ConfigError

    assert xmr.make_config("softmax", ["optim.epochs=2"]).loss.preset == "softmax"
    cfg = xmr.make_config(None, ["model.dim=12"])
    p = tmp_path / "c.json"
    p.write_text(cfg.to_json())
    assert xmr.make_config(str(p)).model.dim == 12
    assert xmr.make_config(cfg.to_dict()).model.dim == 12
    with pytest.raises(ConfigError, match="expected None, a TrainConfig, a dict, a JSON file or a preset"):
        xmr.make_config("no-such-preset")
