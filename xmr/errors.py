"""Error classes of xmr.

Every error a user can trigger with bad input is a subclass of :class:`XMRError` and of the
matching builtin (``ValueError``), so ``except ValueError`` keeps working.
"""

from __future__ import annotations

import os
from typing import Optional


class XMRError(Exception):
    """Base class of xmr's own errors."""


class FormatError(XMRError, ValueError):
    """A file does not follow its format.

    The message always names the file, the 1-based line number (when there is one), what was
    expected and what was found::

        data/train.txt, line 7: expected a label id in [0, 3993), got '4000'
    """

    def __init__(self, path, line: Optional[int], expected: str, got: str):
        self.path = os.fspath(path) if path is not None else "<input>"
        self.line = line
        self.expected = expected
        self.got = got
        where = self.path if line is None else f"{self.path}, line {line}"
        super().__init__(f"{where}: expected {expected}, got {got}")


class MissingDependencyError(XMRError, ImportError):
    """An optional dependency is not installed; the message names the install command."""


class ChecksumError(XMRError, ValueError):
    """A file's sha256 does not match the recorded one."""


class MetadataMismatchError(XMRError, ValueError):
    """A saved artefact (index, model, teacher store) does not match what it is used with."""


class ConfigError(XMRError, ValueError):
    """A configuration value or key, or a function argument, is invalid (unknown key, wrong type,
    out of range, unknown preset)."""


class CheckpointError(XMRError, ValueError):
    """``--resume`` found no usable checkpoint, or one written for another run."""
