"""The one reader of a self-describing artefact's metadata file (``config.json``, ``meta.json``).

Every artefact xmr writes (a model folder, a teacher store, ...) carries a small JSON object with

* ``format``          the artefact's kind, e.g. ``"xmr-model"``;
* ``format_version``  an integer ≥ 1, raised when the layout changes incompatibly;
* ``xmr_version``     the version of xmr that wrote it (informational).

:func:`read_meta` checks those three and returns the object; :func:`read_section` reads one
nested settings object into its dataclass with the configs' strict parser
(:func:`xmr.utils.config.from_dict`). A file written by this or an older format version is
read; a newer one is refused, as is an unknown key. Every refusal is a one-line
:class:`~xmr.errors.FormatError` naming the file, the key, what was expected and what was found::

    run/model/config.json: expected format_version <= 1 (the newest xmr 0.1.0 reads; upgrade xmr), got 2 (written by xmr 0.2.0)
    run/model/config.json: expected valid model settings, got unknown config key(s) ['model.colour']; valid keys: [...]
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, Type, TypeVar

from xmr.errors import ConfigError, FormatError
from xmr.utils.config import from_dict
from xmr.utils.validation import PathLike, read_json

T = TypeVar("T")

__all__ = ["read_meta", "read_section"]


def read_meta(path: PathLike, expected_format: str, max_version: int,
              what: str = "an xmr artefact") -> Dict[str, Any]:
    """Read the metadata file ``path`` of an artefact of kind ``expected_format``.

    Accepts an integer ``format_version`` in ``[1, max_version]`` (``max_version`` is the
    version the caller writes; older files are read) and a string ``xmr_version`` when present.
    Returns the parsed JSON object; the caller checks its own keys. ``what`` names the artefact
    in the messages ("an xmr model"). Raises :class:`FormatError` for a missing file, bad JSON,
    a JSON value that is not an object, another ``format``, or a missing, non-integer or newer
    ``format_version``.
    """
    import xmr

    path = Path(path)
    if not path.is_file():
        raise FormatError(path, None, f"the {path.name} of {what}", "no such file")
    meta = read_json(path, f"the JSON object of {what}")
    if meta.get("format") != expected_format:
        raise FormatError(path, None, f"format {expected_format!r}", repr(meta.get("format")))
    written_by = meta.get("xmr_version")
    if written_by is not None and not isinstance(written_by, str):
        raise FormatError(path, None, "xmr_version: a version string", repr(written_by))
    version = meta.get("format_version")
    if isinstance(version, bool) or not isinstance(version, int) or version < 1:
        raise FormatError(path, None, "format_version: an integer >= 1", repr(version))
    if version > max_version:
        raise FormatError(path, None, f"format_version <= {max_version} (the newest xmr "
                          f"{xmr.__version__} reads; upgrade xmr)",
                          repr(version) + (f" (written by xmr {written_by})" if written_by else ""))
    return meta


def read_section(path: PathLike, meta: Dict[str, Any], key: str, cls: Type[T]) -> T:
    """``meta[key]`` as the dataclass ``cls``, strictly: not an object, an unknown key or a
    wrong type (:func:`~xmr.utils.config.from_dict`) and a value out of range (``cls``'s
    ``validate(prefix)``, when it has one) are a one-line :class:`FormatError` naming ``path``
    and the dotted key."""
    section = meta.get(key)
    if not isinstance(section, dict):
        raise FormatError(path, None, f"{key}: an object of {key} settings", repr(section))
    try:
        obj = from_dict(cls, section, key + ".")
        if hasattr(obj, "validate"):
            obj.validate(key + ".")
    except ConfigError as exc:
        raise FormatError(path, None, f"valid {key} settings", str(exc)) from None
    return obj
