"""The one config base of xmr: strict reading, JSON round trip and ``--set key=value``.

Every settings object of the package is a dataclass that mixes in :class:`ConfigBase` — the
training config and its sections (:class:`~xmr.train.config.TrainConfig`), the loss
(:class:`~xmr.objectives.config.LossConfig`), the model (:class:`~xmr.models.config.ModelConfig`),
the demo (:class:`~xmr.demo.DemoSettings`) and the label index
(:class:`~xmr.index.config.IndexConfig`) — so they are read, written and overridden the same way:

* :meth:`ConfigBase.from_dict` builds the dataclass strictly from a JSON object (:func:`from_dict`:
  an unknown key, a wrong type or a section that is not an object is a one-line
  :class:`~xmr.errors.ConfigError` naming the dotted key) and then checks the value ranges with
  the class's :meth:`~ConfigBase.validate` (``KEY: expected X, got Y``, from
  :mod:`xmr.utils.validation`);
* :meth:`~ConfigBase.to_dict` / :meth:`~ConfigBase.to_json` write plain JSON that
  :meth:`~ConfigBase.from_dict` reads back equal; :meth:`~ConfigBase.from_json` reads a file
  (errors name it);
* :meth:`~ConfigBase.with_overrides` applies ``--set`` strings, ``"optim.epochs=3"`` (dotted keys
  into nested sections; values are JSON, a bare word is a string) and returns a new, checked
  config.

Plain data: importing this module imports only the validation helpers (numpy).
"""

from __future__ import annotations

import dataclasses
import json
import typing
from typing import Any, Dict, Iterable, List, Tuple, Type, TypeVar

from xmr.errors import ConfigError
from xmr.utils.validation import PathLike, read_json

C = TypeVar("C", bound="ConfigBase")

__all__ = ["ConfigBase", "from_dict", "parse_assignment"]


def from_dict(cls, d: Any, prefix: str = ""):
    """The dataclass ``cls`` built strictly from a JSON object ``d``: an unknown key, a value
    of the wrong type or a section that is not an object is a one-line :class:`ConfigError`
    naming the dotted key (``prefix`` + name); nested dataclass fields are read recursively.
    Values are type-checked only; ranges are the dataclass's own ``validate``."""
    if not isinstance(d, dict):
        raise ConfigError(f"config section {prefix or '<root>'!r} must be an object, got {type(d).__name__}")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = set(d) - set(fields)
    if unknown:
        raise ConfigError(f"unknown config key(s) {sorted(prefix + k for k in unknown)}; "
                         f"valid keys: {sorted(prefix + k for k in fields)}")
    hints = typing.get_type_hints(cls)
    kwargs = {}
    for name, value in d.items():
        tp = hints[name]
        if dataclasses.is_dataclass(tp):
            kwargs[name] = from_dict(tp, value, f"{prefix}{name}.")
        else:
            kwargs[name] = _coerce(tp, value, prefix + name)
    return cls(**kwargs)


_WANT = {bool: "true or false", int: "an integer", float: "a number", str: "a string"}


def _coerce(tp, value, key):
    origin = typing.get_origin(tp) or (tp if tp in (list, tuple, dict) else None)
    args = typing.get_args(tp)
    if origin is typing.Union and type(None) in args:
        if value is None:
            return None
        rest = tuple(a for a in args if a is not type(None))
        tp = rest[0] if len(rest) == 1 else typing.Union[rest]
        origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin is typing.Union:  # e.g. Union[str, bool]: the first arm that takes the value
        for arm in args:
            try:
                return _coerce(arm, value, key)
            except ConfigError:
                continue
        want = " or ".join(_WANT.get(a, getattr(a, "__name__", str(a))) for a in args)
        raise ConfigError(f"config key {key!r}: expected {want}, got {value!r}")
    if origin in (list, List, tuple, Tuple):
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"config key {key!r}: expected a list, got {value!r}")
        item = args[0] if args else None
        out = [v if item is None else _coerce(item, v, key) for v in value]
        return tuple(out) if origin in (tuple, Tuple) else out
    if origin in (dict, Dict):
        if not isinstance(value, dict) or not all(isinstance(k, str) for k in value):
            raise ConfigError(f"config key {key!r}: expected an object, got {value!r}")
        item = args[1] if len(args) == 2 else None
        return {k: v if item is None else _coerce(item, v, f"{key}.{k}") for k, v in value.items()}
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(f"config key {key!r}: expected true or false, got {value!r}")
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"config key {key!r}: expected an integer, got {value!r}")
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"config key {key!r}: expected a number, got {value!r}")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"config key {key!r}: expected a string, got {value!r}")
        return value
    return value


def parse_assignment(text: str) -> Tuple[List[str], Any]:
    """``"a.b=VALUE"`` → ``(["a", "b"], value)``: the value parsed as JSON (``3``, ``0.5``,
    ``true``, ``null``, ``[1, 2]``), else kept as the string (``HNSW32``, ``runs/t``)."""
    if not isinstance(text, str) or "=" not in text:
        raise ConfigError(f"--set: expected key=value, got {text!r}")
    key, raw = text.split("=", 1)
    try:
        value = json.loads(raw)
    except json.JSONDecodeError:
        value = raw
    return key.strip().split("."), value


def _plain(v):
    """JSON-ready copy: tuples become lists (as JSON writes them), dicts and lists copied."""
    if isinstance(v, dict):
        return {k: _plain(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_plain(x) for x in v]
    return v


class ConfigBase:
    """Mixin of xmr's dataclass configs (see the module docstring).

    A subclass is a ``@dataclass`` whose fields are JSON values (bool, int, float, str, None,
    lists, tuples, string-keyed dicts) or nested ``ConfigBase`` dataclasses (sections). It
    extends :meth:`validate` with its range checks (calling ``super().validate(prefix)`` first
    when it has sections) and sets ``_JSON_WHAT`` to name its files in messages.
    """

    #: what a config file holds, in the message for a file that is not a JSON object
    _JSON_WHAT = "a JSON object of settings"

    def validate(self: C, prefix: str = "") -> C:
        """Check every value's range; raise :class:`ConfigError` ``KEY: expected X, got Y``
        with ``prefix`` + name as the key. The base checks the nested sections (each with
        ``prefix + name + "."``); returns ``self``."""
        for f in dataclasses.fields(self):
            v = getattr(self, f.name)
            if isinstance(v, ConfigBase):
                v.validate(f"{prefix}{f.name}.")
        return self

    # ------------------------------------------------------------------ JSON round trip
    @classmethod
    def from_dict(cls: Type[C], d: Dict[str, Any], prefix: str = "") -> C:
        """Strictly from a JSON object (:func:`from_dict`), then :meth:`validate` ``(prefix)``."""
        obj = from_dict(cls, d, prefix)
        obj.validate(prefix)
        return obj

    def to_dict(self) -> Dict[str, Any]:
        """Plain JSON data: every field, sections as nested objects, tuples as lists."""
        return _plain(dataclasses.asdict(self))

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2) + "\n"

    @classmethod
    def from_json(cls: Type[C], path: PathLike) -> C:
        """Read a config file; errors name the file (and the line, for bad JSON)."""
        d = read_json(path, cls._JSON_WHAT)
        try:
            return cls.from_dict(d)
        except ConfigError as exc:
            raise ConfigError(f"{path}: {exc}") from None

    def with_overrides(self: C, assignments: Iterable[str]) -> C:
        """A copy with ``key=value`` overrides applied (dotted keys into sections, JSON values,
        bare words as strings; see :func:`parse_assignment`), read and checked as
        :meth:`from_dict` reads a file. An unknown key names the keys valid at that level."""
        d = self.to_dict()
        for a in assignments:
            parts, value = parse_assignment(a)
            key = ".".join(parts)
            node = d
            for p in parts[:-1]:
                if not isinstance(node.get(p), dict):
                    raise ConfigError(f"unknown config key {key!r}: {p!r} is not a section; "
                                     f"sections are {sorted(k for k, v in d.items() if isinstance(v, dict))}")
                node = node[p]
            if parts[-1] not in node:
                raise ConfigError(f"unknown config key {key!r}; valid keys here: {sorted(node)}")
            node[parts[-1]] = value
        return type(self).from_dict(d)
