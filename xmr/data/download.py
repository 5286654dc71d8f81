"""Safe downloads and archive extraction for the public benchmark datasets.

Two functions, both careful about what they write:

- :func:`download` streams a URL into ``dest + ".part"`` (with tqdm progress), resumes a partial
  file with an HTTP ``Range`` request, verifies the sha256 when one is known, and only then
  renames the file into place, so ``dest`` is always either absent or complete.
- :func:`safe_extract` unpacks a zip or tar(.gz/.bz2/.xz) archive after checking **every**
  member first: absolute paths, ``..`` components, links that leave the target and device files
  are refused before a single byte is written.

No network access happens at import time or anywhere else unless :func:`download` is called.
Google Drive links (where the Extreme Classification Repository hosts its files) are rewritten
to Drive's direct-download endpoint; when Drive answers with an HTML page instead of the file
(quota, permission, dead link) the error says what to download by hand and where to put it.
"""

from __future__ import annotations

import logging
import os
import posixpath
import re
import shutil
import socket
import stat
import tarfile
import urllib.error
import urllib.parse
import urllib.request
import zipfile
from pathlib import Path
from typing import Dict, List, Optional, Union

from xmr.errors import ChecksumError, XMRError
from xmr.utils.hashing import sha256_file

log = logging.getLogger(__name__)

PathLike = Union[str, os.PathLike]

DEFAULT_TIMEOUT = 60.0
_CHUNK = 1 << 20
_USER_AGENT = "xmr-downloader (+https://github.com/)"


class DownloadError(XMRError, OSError):
    """A download failed (HTTP error, truncated transfer, Drive refusing to serve a file)."""


class NetworkUnreachableError(DownloadError):
    """The network (or the host) cannot be reached at all; the message says what to fetch by hand."""


class UnsafeArchiveError(XMRError, ValueError):
    """An archive member would be written outside the target folder, or is a device file."""


# --------------------------------------------------------------------------------------------
# download
# --------------------------------------------------------------------------------------------

_DRIVE_ID = re.compile(r"(?:/file/d/|[?&]id=)([A-Za-z0-9_-]{10,})")


def google_drive_id(url: str) -> Optional[str]:
    """The file id of a Google Drive link (``/file/d/ID/...`` or ``...?id=ID``), else ``None``."""
    host = urllib.parse.urlsplit(url).netloc.lower()
    if not (host.endswith("drive.google.com") or host.endswith("docs.google.com")
            or host.endswith("drive.usercontent.google.com")):
        return None
    m = _DRIVE_ID.search(url)
    return m.group(1) if m else None


def direct_url(url: str) -> str:
    """Rewrite a Google Drive sharing link to the direct-download endpoint.

    Drive serves large files only after a "can't scan this file for viruses" page; its
    ``drive.usercontent.google.com/download`` endpoint with ``confirm=t`` skips that page.
    Any other URL is returned unchanged.
    """
    file_id = google_drive_id(url)
    if file_id is None:
        return url
    return (f"https://drive.usercontent.google.com/download?id={file_id}"
            f"&export=download&confirm=t")


def _manual_hint(url: str, dest: Path) -> str:
    return f"download {url} by hand and save it as {dest.name} in {dest.parent}"


def _open(url: str, offset: int, timeout: float):
    headers = {"User-Agent": _USER_AGENT}
    if offset > 0:
        headers["Range"] = f"bytes={offset}-"
    req = urllib.request.Request(url, headers=headers)
    return urllib.request.urlopen(req, timeout=timeout)  # noqa: S310 (http/https only, checked)


def _is_unreachable(exc: BaseException) -> bool:
    """Connection refused, DNS failure, no route, timeout: the network, not the file, failed."""
    reason = getattr(exc, "reason", exc)
    return isinstance(reason, (socket.gaierror, socket.timeout, TimeoutError,
                               ConnectionError, OSError)) and not isinstance(
        exc, urllib.error.HTTPError)


def download(url: str, dest: PathLike, sha256: Optional[str] = None, resume: bool = True,
             timeout: float = DEFAULT_TIMEOUT, progress: bool = True) -> Path:
    """Download ``url`` to ``dest`` safely and return ``dest`` as a :class:`~pathlib.Path`.

    Parameters
    ----------
    url : ``http://`` or ``https://`` URL (Google Drive links are rewritten, see
        :func:`direct_url`).
    dest : final path of the file. Bytes go to ``dest + ".part"`` first; the part file is
        renamed onto ``dest`` only once complete and verified.
    sha256 : expected hex digest, or ``None`` when unknown (then nothing is verified; callers
        record the digest they saw).
    resume : continue an existing ``.part`` file with an HTTP ``Range: bytes=N-`` request.
        A server that ignores ``Range`` (answers 200) is handled by starting over.
    timeout : seconds to wait for the connection and for each read.
    progress : show a tqdm bar (it honours ``TQDM_DISABLE``).

    Raises
    ------
    ChecksumError : the digest differs; the bad file is removed. Message:
        ``"DEST: sha256 mismatch: expected E, got G (the file was removed)"``.
    NetworkUnreachableError : the host cannot be reached (DNS, refused, timeout); the message
        says what to download by hand and into which folder.
    DownloadError : HTTP error status, truncated transfer, or Drive served an HTML page.
    """
    dest = Path(dest)
    scheme = urllib.parse.urlsplit(url).scheme
    if scheme not in ("http", "https"):
        raise ValueError(f"expected an http:// or https:// URL, got {url!r}")
    if dest.exists():
        if sha256 is None or sha256_file(dest) == sha256.lower():
            log.info("%s already present, not downloading again", dest)
            return dest
        log.warning("%s exists but its sha256 differs from the expected one; downloading again",
                    dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(dest.name + ".part")
    if not resume and part.exists():
        part.unlink()
    fetch_url = direct_url(url)
    is_drive = fetch_url != url or google_drive_id(url) is not None

    offset = part.stat().st_size if part.exists() else 0
    try:
        resp = _open(fetch_url, offset, timeout)
    except urllib.error.HTTPError as exc:
        if exc.code == 416 and offset > 0:
            # Range not satisfiable: the part file already holds the whole resource (or more).
            total = _content_range_total(exc.headers.get("Content-Range", ""))
            exc.close()
            if total is not None and total == offset:
                return _finish(part, dest, sha256)
            log.warning("%s: server refused to resume at byte %d; starting over", dest, offset)
            part.unlink()
            return download(url, dest, sha256=sha256, resume=False, timeout=timeout,
                            progress=progress)
        raise DownloadError(f"HTTP {exc.code} ({exc.reason}) while fetching {url}; "
                            f"{_manual_hint(url, dest)}") from exc
    except (urllib.error.URLError, OSError) as exc:
        if _is_unreachable(exc):
            reason = getattr(exc, "reason", exc)
            err = NetworkUnreachableError(f"network unreachable: cannot fetch {url} ({reason}); "
                                          f"{_manual_hint(url, dest)}")
            err.reason = f"{urllib.parse.urlsplit(url).netloc}: {reason}"
            raise err from exc
        raise

    with resp:
        status = resp.status
        ctype = resp.headers.get("Content-Type", "")
        if is_drive and ctype.startswith("text/html"):
            raise DownloadError(
                f"Google Drive did not serve {url} (it returned an HTML page: download quota "
                f"exceeded, access restricted or the link is dead); {_manual_hint(url, dest)}")
        if status == 206:
            start = _content_range_start(resp.headers.get("Content-Range", ""))
            if start != offset:
                raise DownloadError(f"{url}: asked to resume at byte {offset}, server sent "
                                    f"Content-Range {resp.headers.get('Content-Range')!r}")
            mode = "ab"
        else:
            if offset:
                log.info("%s: server ignored the Range request; downloading from the start", url)
            offset, mode = 0, "wb"
        length = resp.headers.get("Content-Length")
        total = offset + int(length) if length is not None else None
        got = _stream(resp, part, mode, offset, total, progress, dest.name)
        if length is not None and got != int(length):
            raise DownloadError(f"{url}: transfer ended after {got} of {length} bytes; "
                                f"run the command again to resume")
    return _finish(part, dest, sha256)


def _stream(resp, part: Path, mode: str, offset: int, total: Optional[int], progress: bool,
            label: str) -> int:
    from tqdm.auto import tqdm

    got = 0
    # Pass ``disable`` only to turn the bar off, so that TQDM_DISABLE can still turn it off too.
    off = {} if progress else {"disable": True}
    with open(part, mode) as f, tqdm(total=total, initial=offset, unit="B", unit_scale=True,
                                     unit_divisor=1024, desc=label, leave=False, **off) as bar:
        while True:
            try:
                block = resp.read(_CHUNK)
            except (OSError, socket.timeout) as exc:
                raise DownloadError(f"connection lost after {offset + got} bytes of {label} "
                                    f"({exc}); run the command again to resume") from exc
            if not block:
                break
            f.write(block)
            got += len(block)
            bar.update(len(block))
        f.flush()
        os.fsync(f.fileno())
    return got


def _finish(part: Path, dest: Path, sha256: Optional[str]) -> Path:
    if sha256 is not None:
        seen = sha256_file(part)
        if seen != sha256.lower():
            part.unlink()
            raise ChecksumError(f"{dest}: sha256 mismatch: expected {sha256.lower()}, "
                                f"got {seen} (the file was removed)")
    os.replace(part, dest)
    return dest


def _content_range_start(value: str) -> Optional[int]:
    m = re.match(r"\s*bytes\s+(\d+)-\d+/(\d+|\*)", value)
    return int(m.group(1)) if m else None


def _content_range_total(value: str) -> Optional[int]:
    m = re.match(r"\s*bytes\s+(?:\*|\d+-\d+)/(\d+)", value)
    return int(m.group(1)) if m else None


# --------------------------------------------------------------------------------------------
# extraction
# --------------------------------------------------------------------------------------------

def _has_drive_or_root(name: str) -> bool:
    return (name.startswith(("/", "\\")) or bool(re.match(r"^[A-Za-z]:", name))
            or os.path.isabs(name))


def _inside(path: str) -> bool:
    """Whether a normalised, target-relative POSIX path stays inside the target."""
    return path != ".." and not path.startswith("../") and not _has_drive_or_root(path)


def _check_name(archive: Path, name: str) -> None:
    if _has_drive_or_root(name):
        raise UnsafeArchiveError(f"refusing to extract {archive}: member {name!r} has an "
                                 f"absolute path")
    parts = re.split(r"[\\/]", name)
    if ".." in parts:
        raise UnsafeArchiveError(f"refusing to extract {archive}: member {name!r} has a '..' "
                                 f"component")


def _check_link(archive: Path, name: str, linkname: str, hard: bool) -> None:
    kind = "hard link" if hard else "symlink"
    if _has_drive_or_root(linkname):
        ok = False
    else:
        # A symlink resolves relative to its own folder, a tar hard link to the archive root.
        base = "" if hard else posixpath.dirname(name.replace("\\", "/"))
        ok = _inside(posixpath.normpath(posixpath.join(base, linkname.replace("\\", "/"))))
    if not ok:
        raise UnsafeArchiveError(f"refusing to extract {archive}: member {name!r} is a {kind} "
                                 f"pointing outside the target ({linkname!r})")


def _zip_is_symlink(info: zipfile.ZipInfo) -> bool:
    return stat.S_ISLNK(info.external_attr >> 16)


def safe_extract(archive: PathLike, target: PathLike) -> List[Path]:
    """Extract a zip or tar(.gz/.bz2/.xz) archive into ``target``; return the files written.

    Every member is checked before anything is written. Refused (``UnsafeArchiveError`` naming
    the archive and the member): absolute paths (``/x``, ``C:\\x``), any ``..`` component,
    symlinks and hard links whose destination leaves ``target``, and device files / FIFOs.
    Links that stay inside are extracted as links (tar) or as plain files holding the link
    text (zip, which is what :mod:`zipfile` does). On Python versions that have
    ``tarfile.data_filter`` it is applied as well, as a second line of defence.
    """
    archive, target = Path(archive), Path(target)
    if not archive.is_file():
        raise FileNotFoundError(f"no archive at {archive}")
    if zipfile.is_zipfile(archive):
        return _extract_zip(archive, target)
    if tarfile.is_tarfile(archive):
        return _extract_tar(archive, target)
    raise UnsafeArchiveError(f"{archive}: expected a zip or tar(.gz/.bz2/.xz) archive, got a "
                             f"file of another kind")


def _extract_zip(archive: Path, target: Path) -> List[Path]:
    with zipfile.ZipFile(archive) as zf:
        infos = zf.infolist()
        for info in infos:
            _check_name(archive, info.filename)
            if _zip_is_symlink(info):
                _check_link(archive, info.filename, zf.read(info).decode("utf-8", "replace"),
                            hard=False)
        target.mkdir(parents=True, exist_ok=True)
        written = []
        for info in infos:
            out = Path(zf.extract(info, target))
            if not info.is_dir():
                written.append(out)
    return written


def _virtual_resolve(archive: Path, name: str, links: Dict[str, str], base: List[str],
                     depth: int = 0) -> List[str]:
    """Resolve ``name`` (relative to the folder ``base``) through the symlinks that the archive's
    earlier members create (``links``: target-relative path → link text), the way the file
    system will once they are extracted. Returns the target-relative components; raises
    :class:`UnsafeArchiveError` when the path leaves the target at any step.

    Checking each member's strings on their own is not enough: with ``d/l -> ..`` and
    ``d/l/m -> ..``, the file ``d/l/m/x`` normalises to a path inside the target but is written
    two levels above ``d``."""
    if depth > 40:
        raise UnsafeArchiveError(f"refusing to extract {archive}: member {name!r} goes through "
                                 f"too many symlinks")
    if _has_drive_or_root(name):
        raise UnsafeArchiveError(f"refusing to extract {archive}: {name!r} points outside the "
                                 f"target")
    cur = list(base)
    for part in re.split(r"[\\/]", name):
        if part in ("", "."):
            continue
        if part == "..":
            if not cur:
                raise UnsafeArchiveError(f"refusing to extract {archive}: {name!r} resolves "
                                         f"outside the target")
            cur.pop()
            continue
        cur.append(part)
        key = "/".join(cur)
        if key in links:
            cur = _virtual_resolve(archive, links[key], links, cur[:-1], depth + 1)
    return cur


def _extract_tar(archive: Path, target: Path) -> List[Path]:
    with tarfile.open(archive, "r:*") as tf:
        members = tf.getmembers()
        links: Dict[str, str] = {}
        for m in members:
            _check_name(archive, m.name)
            if m.issym() or m.islnk():
                _check_link(archive, m.name, m.linkname, hard=m.islnk())
            elif m.isdev() or not (m.isfile() or m.isdir()):
                raise UnsafeArchiveError(f"refusing to extract {archive}: member {m.name!r} is "
                                         f"a device file or FIFO")
            # where the member lands once the links extracted before it exist on disk
            try:
                parent = _virtual_resolve(archive, posixpath.dirname(m.name.replace("\\", "/")),
                                          links, [])
                if m.issym():
                    _virtual_resolve(archive, m.linkname, links, parent)  # raises if it leaves
                    links["/".join(parent + [posixpath.basename(m.name.rstrip("/"))])] = m.linkname
                elif m.islnk():
                    _virtual_resolve(archive, m.linkname, links, [])
            except UnsafeArchiveError:
                raise UnsafeArchiveError(
                    f"refusing to extract {archive}: member {m.name!r} resolves outside the "
                    f"target through the symlinks extracted before it") from None
        target.mkdir(parents=True, exist_ok=True)
        try:
            if hasattr(tarfile, "data_filter"):
                tf.extractall(target, members=members, filter="data")
            else:  # pragma: no cover - Python < 3.11.4 without extraction filters
                tf.extractall(target, members=members)
        except tarfile.TarError as exc:  # the stdlib filter's refusal (FilterError), one line
            raise UnsafeArchiveError(f"refusing to extract {archive}: {exc}") from None
    root = os.path.realpath(target)
    written = []
    for m in members:
        if m.isdir():
            continue
        out = target / m.name
        real = os.path.realpath(out)
        if os.path.commonpath([root, real]) != root:  # defence in depth; checked above
            raise UnsafeArchiveError(f"refusing to extract {archive}: member {m.name!r} "
                                     f"resolves outside the target")
        written.append(out)
    return written


def remove_quietly(path: PathLike) -> None:
    """Remove a file or folder if it exists (used to clean up failed extractions)."""
    p = Path(path)
    if p.is_dir() and not p.is_symlink():
        shutil.rmtree(p, ignore_errors=True)
    elif p.exists() or p.is_symlink():
        p.unlink()
