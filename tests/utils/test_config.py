"""The config base (xmr.utils.config.ConfigBase): strict reading, JSON round trip, ``--set``.

Every message is pinned exactly: the key named in full (dotted through the sections), what was
expected and what came. The last part checks that each of xmr's configs is a ConfigBase and
round-trips through JSON.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Tuple, Union

import pytest

from xmr.errors import ConfigError, FormatError
from xmr.utils.config import ConfigBase, from_dict, parse_assignment
from xmr.utils.validation import check_int


@dataclass
class _Inner(ConfigBase):
    width: int = 1
    ratio: float = 0.5

    def validate(self, prefix: str = "") -> "_Inner":
        check_int(prefix + "width", self.width, 1)
        return self


@dataclass
class _Middle(ConfigBase):
    inner: _Inner = field(default_factory=_Inner)
    name: str = "m"


@dataclass
class _Outer(ConfigBase):
    middle: _Middle = field(default_factory=_Middle)
    flag: bool = False
    sizes: List[int] = field(default_factory=list)
    names: Tuple[str, ...] = ("a", "b")
    limit: Optional[int] = None
    gpu: Union[bool, str] = "auto"
    extra: Dict[str, float] = field(default_factory=dict)

    def validate(self, prefix: str = "") -> "_Outer":
        super().validate(prefix)
        if self.limit is not None:
            check_int(prefix + "limit", self.limit, 0)
        return self


def _err(fn, *args):
    with pytest.raises(ConfigError) as e:
        fn(*args)
    return str(e.value)


# ---- reading ------------------------------------------------------------------------------------

def test_unknown_key_is_named_with_its_section():
    assert _err(_Outer.from_dict, {"middle": {"inner": {"widht": 2}}}) == (
        "unknown config key(s) ['middle.inner.widht']; valid keys: "
        "['middle.inner.ratio', 'middle.inner.width']")
    assert _err(_Outer.from_dict, {"colour": 1, "flag": True}) == (
        "unknown config key(s) ['colour']; valid keys: ['extra', 'flag', 'gpu', 'limit', "
        "'middle', 'names', 'sizes']")
    # a prefix given by the caller (a section read on its own) leads every key
    assert _err(_Inner.from_dict, {"x": 1}, "model.") == (
        "unknown config key(s) ['model.x']; valid keys: ['model.ratio', 'model.width']")


@pytest.mark.parametrize("d, message", [
    ({"middle": {"inner": {"width": "3"}}},
     "config key 'middle.inner.width': expected an integer, got '3'"),
    ({"middle": {"inner": {"width": 2.0}}},
     "config key 'middle.inner.width': expected an integer, got 2.0"),
    ({"middle": {"inner": {"width": True}}},  # a bool is not an integer
     "config key 'middle.inner.width': expected an integer, got True"),
    ({"middle": {"inner": {"ratio": "half"}}},
     "config key 'middle.inner.ratio': expected a number, got 'half'"),
    ({"flag": 1}, "config key 'flag': expected true or false, got 1"),
    ({"middle": {"name": 3}}, "config key 'middle.name': expected a string, got 3"),
    ({"sizes": 3}, "config key 'sizes': expected a list, got 3"),
    ({"sizes": [1, "2"]}, "config key 'sizes': expected an integer, got '2'"),
    ({"limit": "none"}, "config key 'limit': expected an integer, got 'none'"),
    ({"gpu": 3}, "config key 'gpu': expected true or false or a string, got 3"),
    ({"extra": [1]}, "config key 'extra': expected an object, got [1]"),
    ({"extra": {"k": "x"}}, "config key 'extra.k': expected a number, got 'x'"),
    ({"middle": [1]}, "config section 'middle.' must be an object, got list"),
])
def test_wrong_type_is_named_with_its_section(d, message):
    assert _err(_Outer.from_dict, d) == message


def test_values_are_coerced_to_the_field_types():
    c = _Outer.from_dict({"names": ["x"], "middle": {"inner": {"ratio": 1}}, "limit": None,
                          "gpu": False, "extra": {"k": 2}})
    assert c.names == ("x",) and isinstance(c.names, tuple)
    assert c.middle.inner.ratio == 1.0 and isinstance(c.middle.inner.ratio, float)
    assert c.gpu is False and c.limit is None
    assert c.extra == {"k": 2.0} and isinstance(c.extra["k"], float)


def test_from_dict_checks_ranges_in_nested_sections():
    # the base's validate visits every section with its dotted prefix
    assert _err(_Outer.from_dict, {"middle": {"inner": {"width": 0}}}) == (
        "middle.inner.width: expected an integer >= 1, got 0")
    assert _err(_Outer.from_dict, {"limit": -1}) == "limit: expected an integer >= 0, got -1"
    # the plain parser checks types only
    assert from_dict(_Outer, {"limit": -1}).limit == -1


# ---- writing and reading back -------------------------------------------------------------------

def test_to_json_from_dict_round_trip_is_equal(tmp_path):
    c = _Outer(middle=_Middle(inner=_Inner(width=7, ratio=0.25), name="n"), flag=True,
               sizes=[3, 1], names=("p", "q", "r"), limit=4, gpu=True, extra={"a": 1.5})
    d = json.loads(c.to_json())
    assert d["names"] == ["p", "q", "r"] and d["middle"]["inner"] == {"width": 7, "ratio": 0.25}
    back = _Outer.from_dict(d)
    assert back == c and back.to_dict() == c.to_dict() == d
    p = tmp_path / "c.json"
    p.write_text(c.to_json())
    assert _Outer.from_json(p) == c
    # to_dict is a copy: changing it leaves the config alone
    c.to_dict()["sizes"].append(9)
    assert c.sizes == [3, 1]


def test_from_json_names_the_file(tmp_path):
    p = tmp_path / "c.json"
    p.write_text('{"middle": {"inner": {"width": 0}}}')
    assert _err(_Outer.from_json, p) == f"{p}: middle.inner.width: expected an integer >= 1, got 0"
    p.write_text("[1]")
    with pytest.raises(FormatError) as e:
        _Outer.from_json(p)
    assert str(e.value) == f"{p}: expected a JSON object of settings, got a JSON list"


# ---- --set --------------------------------------------------------------------------------------

def test_with_overrides_reaches_nested_sections_and_returns_a_new_config():
    c = _Outer()
    o = c.with_overrides(["middle.inner.width=5", "middle.name=hello world", "sizes=[2, 3]",
                          "limit=null", "flag=true", "names=[\"z\"]", "extra={\"k\": 1}"])
    assert o.middle.inner.width == 5 and o.middle.name == "hello world"
    assert o.sizes == [2, 3] and o.limit is None and o.flag is True and o.names == ("z",)
    assert o.extra == {"k": 1.0}
    assert c == _Outer()  # the original is untouched
    assert c.with_overrides([]) == c and c.with_overrides([]) is not c
    # the later of two assignments to one key wins
    assert c.with_overrides(["limit=1", "limit=2"]).limit == 2


def test_with_overrides_errors_name_the_key():
    c = _Outer()
    assert _err(c.with_overrides, ["middle.inner.widht=5"]) == (
        "unknown config key 'middle.inner.widht'; valid keys here: ['ratio', 'width']")
    assert _err(c.with_overrides, ["flag.x=1"]) == (
        "unknown config key 'flag.x': 'flag' is not a section; sections are ['extra', 'middle']")
    assert _err(c.with_overrides, ["middle.inner.width=wide"]) == (
        "config key 'middle.inner.width': expected an integer, got 'wide'")
    assert _err(c.with_overrides, ["middle.inner.width=0"]) == (
        "middle.inner.width: expected an integer >= 1, got 0")
    assert _err(c.with_overrides, ["middle.inner.width"]) == (
        "--set: expected key=value, got 'middle.inner.width'")


def test_parse_assignment_values_are_json_else_strings():
    assert parse_assignment("a.b=3") == (["a", "b"], 3)
    assert parse_assignment(" a = 0.5") == (["a"], 0.5)  # the key is stripped, the value JSON
    assert parse_assignment("f=IVF{nlist},Flat") == (["f"], "IVF{nlist},Flat")
    assert parse_assignment("p=runs/t=1") == (["p"], "runs/t=1")  # split at the first '='
    assert parse_assignment('s="3"') == (["s"], "3")  # a quoted number stays a string


# ---- every config of xmr is one ---------------------------------------------------------------

def _configs():
    from xmr.demo import DemoSettings
    from xmr.index.config import IndexConfig
    from xmr.models.config import ModelConfig
    from xmr.objectives.config import LossConfig
    from xmr.train.config import DataConfig, MinerConfig, OptimConfig, TrainConfig

    return [TrainConfig, DataConfig, MinerConfig, OptimConfig, LossConfig, ModelConfig,
            DemoSettings, IndexConfig]


@pytest.mark.parametrize("cls", _configs(), ids=lambda c: c.__name__)
def test_every_config_is_a_config_base_and_round_trips(cls):
    assert issubclass(cls, ConfigBase)
    c = cls()
    assert cls.from_dict(json.loads(c.to_json())) == c
    assert _err(cls.from_dict, {"bogus": 1}).startswith(
        "unknown config key(s) ['bogus']; valid keys: ")


def test_index_config_maps_onto_label_index_build():
    from xmr.index.config import IndexConfig

    c = IndexConfig().with_overrides(["factory=IVF{nlist},Flat", "nlist=8", "nprobe=3",
                                      "use_gpu=false"])
    assert c.faiss_params() == {"nlist": 8, "nprobe": 3}
    assert c.build_kwargs() == {"factory": "IVF{nlist},Flat", "metric": "ip", "mips": None,
                                "shards": 1, "use_gpu": False, "seed": 0, "nlist": 8,
                                "nprobe": 3}
    assert _err(c.with_overrides, ["use_gpu=yes"]) == (
        "use_gpu: expected one of auto, True, False, got 'yes'")
    assert _err(c.with_overrides, ["metric=cos"]) == "metric: expected one of ip, l2, got 'cos'"


def test_demo_settings_from_the_command_line():
    from xmr.cli.cmd_demo import settings_from_args
    from xmr.cli.main import build_parser
    from xmr.demo import DemoSettings

    def parse(*argv):
        return settings_from_args(build_parser().parse_args(["demo", *argv]))

    assert parse() == DemoSettings()
    s = parse("--quick", "--presets", "softmax, distill", "--epochs", "2", "--set",
              "batch_size=64", "--set", "tau_t=0.5")
    assert s == DemoSettings.quick().with_overrides(
        ['presets=["softmax", "distill"]', "student_epochs=2", "batch_size=64", "tau_t=0.5"])
    assert s.presets == ("softmax", "distill") and s.batch_size == 64
    assert s.to_dict()["presets"] == ["softmax", "distill"]  # the results JSON's settings
    assert _err(parse, "--presets", "softmax,bogus") == (
        "presets[1]: expected one of softmax, sampled, mined, distill, teacher-negatives, "
        "double-distill, got 'bogus'")
    assert _err(parse, "--epochs", "0") == "student_epochs: expected an integer >= 1, got 0"
    assert _err(parse, "--set", "teacher=forest") == (
        "teacher: expected one of auto, tree, neural, got 'forest'")
