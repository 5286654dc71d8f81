"""Atomic file and directory writes: write to a temporary sibling, fsync, then rename.

A failure (exception, Ctrl-C, full disk) never leaves a half-written file at the target path:
either the old content stays, or the new content is complete.
"""

from __future__ import annotations

import contextlib
import glob
import logging
import os
import shutil
import tempfile
from pathlib import Path
from typing import IO, Iterator, List, Union

from xmr.errors import XMRError

log = logging.getLogger(__name__)

PathLike = Union[str, os.PathLike]


def _named(exc: OSError, path: Path) -> OSError:
    """The same error with the target's path as its file name (a write that fails on a full
    disk says ``No space left on device`` without naming any file)."""
    if exc.filename is not None or not exc.errno:
        return exc
    new = OSError(exc.errno, exc.strerror or os.strerror(exc.errno), os.fspath(path))
    new.__cause__ = exc
    return new


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


@contextlib.contextmanager
def atomic_open(path: PathLike, mode: str = "wb", **kwargs) -> Iterator[IO]:
    """Open a temporary file next to ``path``; on success rename it onto ``path``.

    >>> with atomic_open("out.txt", "w") as f:
    ...     f.write("hello")
    """
    if not any(m in mode for m in "wax"):
        raise ValueError(f"atomic_open is for writing; got mode {mode!r}")
    path = Path(path)
    if path.is_dir():
        raise XMRError(f"{path}: is a folder; refusing to replace it with a file")
    tmp = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        os.close(fd)
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; give the file the usual mode
        with open(tmp, mode.replace("x", "w"), **kwargs) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as exc:
        if tmp is not None:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
        raise _named(exc, path) from exc
    except BaseException:
        if tmp is not None:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
        raise


@contextlib.contextmanager
def atomic_dir(path: PathLike) -> Iterator[Path]:
    """Yield a temporary directory next to ``path``; on success it replaces ``path``.

    Used for artefacts that are folders (models, indexes, checkpoints). An existing ``path`` is
    moved aside and deleted only after the new folder is in place; an existing regular file at
    ``path`` is refused (never replaced by a folder). Once the new folder is in place, leftovers
    of interrupted writes (``.NAME.*.tmp`` / ``.NAME.*.old`` siblings) are removed.
    """
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise XMRError(f"{path}: exists and is not a folder; refusing to replace it "
                       f"(choose another output path or remove the file)")
    tmp = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent))
        os.chmod(tmp, 0o777 & ~_umask())
        yield tmp
        old = None
        if path.exists():
            old = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".old", dir=path.parent))
            os.rmdir(old)
            os.replace(path, old)
        os.replace(tmp, path)
        tmp = None
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
        for stale in leftovers(path):
            log.info("removing %s, left by an interrupted write", stale)
            shutil.rmtree(stale, ignore_errors=True)
    except OSError as exc:
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)
        raise _named(exc, path) from exc
    except BaseException:
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)
        raise


def leftovers(path: PathLike) -> List[Path]:
    """The ``.NAME.*.tmp`` and ``.NAME.*.old`` folders that interrupted :func:`atomic_dir` writes
    of ``path`` left beside it, oldest first (an ``.old`` one is the previous complete folder
    when the process died between the two renames of the swap)."""
    import re

    path = Path(path)
    # exactly the names mkdtemp gives (8 random characters), so that the leftovers of another
    # artefact whose name starts the same way (``model`` vs ``model.v2``) are never touched
    own = re.compile(r"\." + re.escape(path.name) + r"\.[A-Za-z0-9_]{8}\.(tmp|old)")
    pat = glob.escape(str(path.parent / f".{path.name}.")) + "*"
    found = [Path(p) for p in glob.glob(pat + ".tmp") + glob.glob(pat + ".old")]
    found = [p for p in found if own.fullmatch(p.name) and p.is_dir()]
    return sorted(found, key=lambda p: p.stat().st_mtime)


def save_torch(obj, path: PathLike) -> None:
    """``torch.save`` through :func:`atomic_open`."""
    import torch

    with atomic_open(path, "wb") as f:
        torch.save(obj, f)


def load_torch(path: PathLike, map_location="cpu"):
    """``torch.load`` with ``weights_only=True``: tensors and plain containers only, no pickle."""
    import pickle

    import torch

    from xmr.errors import FormatError

    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as exc:
        # torch's message ends with advice to pass weights_only=False: never do that here
        import re

        m = re.search(r"(Unsupported [^\n.]*)", str(exc))
        why = f" ({m.group(1).strip()[:120]})" if m else ""
        raise FormatError(path, None, "tensors and plain containers only",
                          f"a pickle that would run code on load, refused{why}") from None
    except OSError as exc:
        if exc.filename is not None:  # a missing or unreadable file: the caller's usual error
            raise
        # torch's zip reader reports some truncations as a bare OSError (EINVAL)
        raise FormatError(path, None, "a complete file written by torch.save",
                          f"a damaged or truncated file ({exc.strerror or exc})") from None
    except (RuntimeError, EOFError, ValueError, KeyError, AttributeError) as exc:
        msg = str(exc).strip().split(". ")[0] if str(exc).strip() else type(exc).__name__
        raise FormatError(path, None, "a complete file written by torch.save",
                          f"a damaged or truncated file ({msg[:120]})") from None
