"""The one reader of self-describing artefacts (xmr.utils.artefacts): format, format_version,
xmr_version and strict settings sections, through the model, the teacher store and the
vectorizer that use it."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import List

import numpy as np
import pytest
import scipy.sparse as sp
import torch

import xmr
from xmr.errors import FormatError
from xmr.models import ModelConfig, XMRModel
from xmr.utils.artefacts import read_meta, read_section

V = xmr.__version__


def _write(path, obj):
    path.write_text(json.dumps(obj))
    return path


def _edit(path, **changes):
    meta = json.loads(path.read_text())
    meta.update(changes)
    path.write_text(json.dumps(meta))


@pytest.fixture
def saved_model(tmp_path):
    model = XMRModel(20, 7, ModelConfig(dim=4, hidden=[6]), seed=1)
    model.save(tmp_path / "m")
    return model, tmp_path / "m"


# ---- read_meta ----------------------------------------------------------------------------------

def test_read_meta_returns_the_object(tmp_path):
    p = _write(tmp_path / "meta.json", {"format": "x", "format_version": 1, "xmr_version": V,
                                        "n": 3})
    assert read_meta(p, "x", 1) == {"format": "x", "format_version": 1, "xmr_version": V, "n": 3}


def test_read_meta_accepts_older_and_equal_versions(tmp_path):
    p = _write(tmp_path / "meta.json", {"format": "x", "format_version": 2})
    assert read_meta(p, "x", 2)["format_version"] == 2  # equal
    assert read_meta(p, "x", 3)["format_version"] == 2  # older than what this reader writes


def test_read_meta_refuses_a_newer_version_with_one_line(tmp_path):
    p = _write(tmp_path / "meta.json", {"format": "x", "format_version": 3, "xmr_version": "9.0"})
    with pytest.raises(FormatError) as e:
        read_meta(p, "x", 2)
    assert str(e.value) == (f"{p}: expected format_version <= 2 (the newest xmr {V} reads; "
                            f"upgrade xmr), got 3 (written by xmr 9.0)")


@pytest.mark.parametrize("meta, message", [
    ({"format": "y", "format_version": 1}, "expected format 'x', got 'y'"),
    ({"format_version": 1}, "expected format 'x', got None"),
    ({"format": "x"}, "expected format_version: an integer >= 1, got None"),
    ({"format": "x", "format_version": True}, "expected format_version: an integer >= 1, got True"),
    ({"format": "x", "format_version": "1"}, "expected format_version: an integer >= 1, got '1'"),
    ({"format": "x", "format_version": 0}, "expected format_version: an integer >= 1, got 0"),
    ({"format": "x", "format_version": 1, "xmr_version": 1},
     "expected xmr_version: a version string, got 1"),
])
def test_read_meta_refusals_name_the_file_and_key(tmp_path, meta, message):
    p = _write(tmp_path / "meta.json", meta)
    with pytest.raises(FormatError) as e:
        read_meta(p, "x", 1)
    assert str(e.value) == f"{p}: {message}"


def test_read_meta_missing_file_and_bad_json(tmp_path):
    with pytest.raises(FormatError) as e:
        read_meta(tmp_path / "meta.json", "x", 1, "an xmr thing")
    assert str(e.value) == f"{tmp_path / 'meta.json'}: expected the meta.json of an xmr thing, got no such file"
    (tmp_path / "meta.json").write_text("[1, 2]")
    with pytest.raises(FormatError, match="expected the JSON object of an xmr thing, got a JSON list"):
        read_meta(tmp_path / "meta.json", "x", 1, "an xmr thing")


# ---- read_section -------------------------------------------------------------------------------

@dataclass
class _Settings:
    width: int = 1
    names: List[str] = field(default_factory=list)

    def validate(self, prefix: str = "s.") -> None:
        if self.width < 1:
            from xmr.errors import ConfigError

            raise ConfigError(f"{prefix}width: expected an integer >= 1, got {self.width!r}")


def test_read_section_is_strict(tmp_path):
    p = tmp_path / "meta.json"
    assert read_section(p, {"s": {"width": 3}}, "s", _Settings) == _Settings(width=3)
    cases = [
        ({"s": {"width": 3, "colour": 1}},
         "expected valid s settings, got unknown config key(s) ['s.colour']; valid keys: "
         "['s.names', 's.width']"),
        ({"s": {"width": "3"}},
         "expected valid s settings, got config key 's.width': expected an integer, got '3'"),
        ({"s": {"width": 0}}, "expected valid s settings, got s.width: expected an integer >= 1, got 0"),
        ({"s": [1]}, "expected s: an object of s settings, got [1]"),
        ({}, "expected s: an object of s settings, got None"),
    ]
    for meta, message in cases:
        with pytest.raises(FormatError) as e:
            read_section(p, meta, "s", _Settings)
        assert str(e.value) == f"{p}: {message}"


# ---- the artefacts that use it ------------------------------------------------------------------

def test_model_with_a_newer_format_version_is_refused(saved_model):
    _, path = saved_model
    _edit(path / "config.json", format_version=2)
    with pytest.raises(FormatError) as e:
        XMRModel.load(path)
    assert str(e.value) == (f"{path / 'config.json'}: expected format_version <= 1 (the newest "
                            f"xmr {V} reads; upgrade xmr), got 2 (written by xmr {V})")


def test_model_with_an_unknown_model_key_is_refused(saved_model):
    _, path = saved_model
    meta = json.loads((path / "config.json").read_text())
    _edit(path / "config.json", model={**meta["model"], "colour": "red"})
    with pytest.raises(FormatError) as e:
        XMRModel.load(path)
    valid = sorted("model." + k for k in vars(ModelConfig()))
    assert str(e.value) == (f"{path / 'config.json'}: expected valid model settings, got unknown "
                            f"config key(s) ['model.colour']; valid keys: {valid}")


def test_model_of_an_older_or_equal_version_loads(saved_model, monkeypatch):
    import xmr.models.xmr_model as xm

    model, path = saved_model
    XMRModel.load(path)  # equal: version 1 read by a version-1 reader
    monkeypatch.setattr(xm, "FORMAT_VERSION", 2)  # a newer xmr reading a version-1 folder
    back = XMRModel.load(path)
    for k, v in model.state_dict().items():
        torch.testing.assert_close(back.state_dict()[k], v, rtol=0, atol=0, msg=k)


def test_model_round_trip_is_bit_identical(saved_model, tmp_path):
    model, path = saved_model
    back = XMRModel.load(path)
    assert list(back.state_dict()) == list(model.state_dict())
    for k, v in model.state_dict().items():
        assert torch.equal(back.state_dict()[k], v), k
    X = sp.random(9, 20, density=0.3, format="csr", random_state=0, dtype=np.float32)
    s1, i1 = model.predict(X, 3)
    s2, i2 = back.predict(X, 3)
    np.testing.assert_array_equal(i1, i2)
    np.testing.assert_array_equal(s1, s2)
    back.save(tmp_path / "again")  # saving the loaded model writes the same folder
    assert json.loads((tmp_path / "again" / "config.json").read_text()) == \
        json.loads((path / "config.json").read_text())
    again = torch.load(tmp_path / "again" / "weights.pt", weights_only=True)
    first = torch.load(path / "weights.pt", weights_only=True)
    assert all(torch.equal(again[k], first[k]) for k in first) and set(again) == set(first)


def test_teacher_store_with_a_newer_format_version_is_refused(tmp_path):
    from xmr.teachers.store import TeacherStore, from_topk

    ids = np.array([[0, 1], [2, 0]])
    store = from_topk(ids, np.array([[2.0, 1.0], [3.0, 0.5]], np.float32), 3, {"k": 2})
    store.save(tmp_path / "s")
    assert TeacherStore.load(tmp_path / "s").num_rows == 2
    _edit(tmp_path / "s" / "meta.json", format_version=2)
    with pytest.raises(FormatError) as e:
        TeacherStore.load(tmp_path / "s")
    assert str(e.value) == (f"{tmp_path / 's' / 'meta.json'}: expected format_version <= 1 (the "
                            f"newest xmr {V} reads; upgrade xmr), got 2 (written by xmr {V})")


def test_vectorizer_with_a_newer_format_version_is_refused(tmp_path):
    from xmr.data.text import TextVectorizer

    vec = TextVectorizer(min_df=1)
    vec.fit_transform(["apples and pears", "pears and plums"])
    vec.save(tmp_path / "v")
    assert TextVectorizer.load(tmp_path / "v").num_features == vec.num_features
    _edit(tmp_path / "v" / "vectorizer.json", format_version=2)
    with pytest.raises(FormatError) as e:
        TextVectorizer.load(tmp_path / "v")
    assert str(e.value) == (f"{tmp_path / 'v' / 'vectorizer.json'}: expected format_version <= 1 "
                            f"(the newest xmr {V} reads; upgrade xmr), got 2")
