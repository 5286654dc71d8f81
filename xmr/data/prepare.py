"""Prepare a registered benchmark into xmr's canonical on-disk layout, and load it back.

``prepare(name)`` turns whatever the public source ships into one layout::

    ROOT/NAME/
      raw/                 downloaded archives (or files placed there by hand) and extracted/
      X_trn.npz Y_trn.npz  CSR float32 (scipy .npz)
      X_tst.npz Y_tst.npz
      labels.txt           one label name per line, when the source has names
      filter_labels_train.txt, filter_labels_test.txt
                           LF datasets: "row label" pairs removed before scoring
      meta.json            name, kind, measured and published stats, A, B, sources,
                           sha256 of every raw file seen, xmr version — written last, so its
                           presence means the folder is complete

``ROOT`` is ``root`` if given, else ``$XMR_DATA``, else ``~/xmr_data``. The network is used only
when a raw file is missing; files placed by hand in ``ROOT/NAME/raw/`` (the archive under the
registry's file name, or its extracted contents) are used as they are. ``load_prepared(name)``
reads the layout back as an :class:`~xmr.data.dataset.XMCDataset` with the registry's
propensity constants.
"""

from __future__ import annotations

import gzip
import json
import logging
import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple, Union

import numpy as np
import scipy.sparse as sp

import xmr
from xmr.data.dataset import XMCDataset
from xmr.data.download import (DownloadError, NetworkUnreachableError, download,
                               remove_quietly, safe_extract)
from xmr.data.registry import (KIND_BOW, KIND_EMBEDDED, KIND_LF, DatasetInfo, Source,
                               get_dataset)
from xmr.errors import ChecksumError, FormatError, MetadataMismatchError, XMRError
from xmr.utils.atomic import atomic_open
from xmr.utils.hashing import sha256_file

log = logging.getLogger(__name__)

PathLike = Union[str, os.PathLike]

LAYOUT_VERSION = 1
MATRICES = ("X_trn", "Y_trn", "X_tst", "Y_tst")
_FILTER_FILES = ("filter_labels_train", "filter_labels_test")
_ARCHIVE_SUFFIXES = (".zip", ".tar", ".tar.gz", ".tgz", ".tar.bz2", ".tbz2", ".tar.xz", ".txz")


class NotPreparedError(XMRError, FileNotFoundError):
    """The canonical layout of a dataset is missing or incomplete."""


def data_root(root: Optional[PathLike] = None) -> Path:
    """``root``, else ``$XMR_DATA``, else ``~/xmr_data`` (expanded, not created)."""
    if root is None:
        root = os.environ.get("XMR_DATA") or "~/xmr_data"
    return Path(root).expanduser()


def dataset_dir(name: str, root: Optional[PathLike] = None) -> Path:
    """``ROOT/NAME`` with the registry's canonical spelling of ``NAME``."""
    return data_root(root) / get_dataset(name).name


def is_prepared(name: str, root: Optional[PathLike] = None) -> bool:
    """Whether ``ROOT/NAME`` holds a complete canonical layout of this layout version."""
    folder = dataset_dir(name, root)
    try:
        meta = json.loads((folder / "meta.json").read_text())
    except (OSError, ValueError):
        return False
    return (meta.get("layout_version") == LAYOUT_VERSION
            and all((folder / f"{m}.npz").is_file() for m in MATRICES))


# --------------------------------------------------------------------------------------------
# locating raw files
# --------------------------------------------------------------------------------------------

def _find(raw: Path, rel: str) -> Optional[Path]:
    """The file under ``raw`` whose path ends with ``rel`` (else with its basename)."""
    if not raw.is_dir():
        return None
    rel_parts = Path(rel).parts
    by_name = []
    for p in sorted(raw.rglob(Path(rel).name)):
        if not p.is_file():
            continue
        if p.parts[-len(rel_parts):] == rel_parts:
            return p
        by_name.append(p)
    return by_name[0] if by_name else None


def _find_all(info: DatasetInfo, raw: Path) -> Dict[str, Optional[Path]]:
    return {role: _find(raw, rel) for role, rel in info.files.items()}


def _required_roles(info: DatasetInfo) -> Tuple[str, ...]:
    if info.kind == KIND_BOW:
        return ("train", "test")
    return ("trn", "tst", "lbl")


def _manual_message(info: DatasetInfo, raw: Path) -> str:
    """What to download by hand, where to put it, and what to run next."""
    what = []
    for s in info.sources:
        alt = f" (or the mirror {', '.join(s.mirrors)})" if s.mirrors else ""
        what.append(f"{s.url}{alt} as {s.filename}")
    files = ", ".join(Path(f).name for f in info.files.values())
    return (f"download {'; '.join(what)} by hand into {raw} (or put its extracted files "
            f"{files} there), then run `xmr data prepare {info.name} --root "
            f"{raw.parent.parent}` again")


def _fetch(info: DatasetInfo, src: Source, raw: Path, url_override: Optional[str],
           progress: bool) -> Path:
    """Download one source into ``raw/`` (primary URL, then mirrors)."""
    dest = raw / src.filename
    if url_override and dest.exists():
        dest.unlink()  # an override always fetches; never reuse an archive from elsewhere
    urls = [url_override] if url_override else [src.url, *src.mirrors]
    errors: List[str] = []
    unreachable = True
    for url in urls:
        try:
            return download(url, dest, sha256=src.sha256, progress=progress)
        except NetworkUnreachableError as exc:
            errors.append(getattr(exc, "reason", str(exc)))
        except DownloadError as exc:
            unreachable = False
            errors.append(str(exc))
            log.warning("%s: %s", info.name, exc)
    detail = "; ".join(dict.fromkeys(errors))
    if unreachable:
        raise NetworkUnreachableError(
            f"{info.name}: network unreachable ({detail}); {_manual_message(info, raw)}")
    raise DownloadError(f"{info.name}: download failed ({detail}); {_manual_message(info, raw)}")


def _local_archives(info: DatasetInfo, raw: Path) -> List[Path]:
    named = [raw / s.filename for s in info.sources if (raw / s.filename).is_file()]
    if named:
        return named
    return sorted(p for p in raw.iterdir()
                  if p.is_file() and p.name.lower().endswith(_ARCHIVE_SUFFIXES))


def _extract(archive: Path, raw: Path) -> None:
    """Extract into ``raw/extracted/`` through a temporary sibling (no half-extracted folder)."""
    out = raw / "extracted" / archive.name
    if out.is_dir():
        return
    tmp = Path(tempfile.mkdtemp(prefix=".extract.", dir=raw))
    try:
        log.info("extracting %s", archive)
        safe_extract(archive, tmp)
        out.parent.mkdir(parents=True, exist_ok=True)
        os.replace(tmp, out)
    finally:
        remove_quietly(tmp)


def _gather_raw(info: DatasetInfo, raw: Path, url_override: Optional[str],
                progress: bool) -> Tuple[Dict[str, Optional[Path]], Dict[str, str], List[str]]:
    """Make sure the dataset's files exist under ``raw``; return (files, sha256 seen, urls)."""
    raw.mkdir(parents=True, exist_ok=True)
    used_urls: List[str] = []
    files = _find_all(info, raw)
    need = _required_roles(info)
    if url_override is None and all(files[r] is not None for r in need):
        log.info("%s: using files already in %s", info.name, raw)
    else:
        archives = [] if url_override else _local_archives(info, raw)
        if archives:
            for a in archives:
                src = next((s for s in info.sources if s.filename == a.name), None)
                if src is not None and src.sha256 is not None:
                    seen = sha256_file(a)
                    if seen != src.sha256:
                        raise ChecksumError(f"{a}: sha256 mismatch: expected {src.sha256}, "
                                            f"got {seen}")
        else:
            for src in info.sources:
                archives.append(_fetch(info, src, raw, url_override, progress))
                used_urls.append(url_override or src.url)
        for a in archives:
            _extract(a, raw)
        files = _find_all(info, raw)
    missing = [info.files[r] for r in need if files[r] is None]
    if missing:
        present = sorted(str(p.relative_to(raw)) for p in raw.rglob("*") if p.is_file())[:20]
        raise FormatError(raw, None, f"the files {', '.join(missing)} of {info.name}",
                          f"{', '.join(present) or 'an empty folder'}")
    # Record the digest of every archive used; when the files were placed unpacked (no
    # archive), record the digests of those files instead.
    seen = {p.name: sha256_file(p) for p in _local_archives(info, raw)}
    if not seen:
        seen = {str(p.relative_to(raw)): sha256_file(p) for p in files.values() if p is not None}
    return files, seen, used_urls


# --------------------------------------------------------------------------------------------
# conversion
# --------------------------------------------------------------------------------------------

def _csr32(M) -> sp.csr_matrix:
    M = sp.csr_matrix(M, dtype=np.float32)
    M.sum_duplicates()
    M.sort_indices()
    return M


def _align_columns(A: sp.csr_matrix, B: sp.csr_matrix) -> Tuple[sp.csr_matrix, sp.csr_matrix]:
    n = max(A.shape[1], B.shape[1])
    if A.shape[1] != n:
        A = sp.csr_matrix((A.data, A.indices, A.indptr), shape=(A.shape[0], n))
    if B.shape[1] != n:
        B = sp.csr_matrix((B.data, B.indices, B.indptr), shape=(B.shape[0], n))
    return A, B


def _convert_bow(files: Dict[str, Optional[Path]]) -> Dict[str, sp.csr_matrix]:
    from xmr.data.formats import read_xc_bow

    X_trn, Y_trn = read_xc_bow(files["train"])
    X_tst, Y_tst = read_xc_bow(files["test"])
    X_trn, X_tst = _align_columns(_csr32(X_trn), _csr32(X_tst))
    Y_trn, Y_tst = _align_columns(_csr32(Y_trn), _csr32(Y_tst))
    return {"X_trn": X_trn, "Y_trn": Y_trn, "X_tst": X_tst, "Y_tst": Y_tst}


def _read_json_lines(path: Path) -> List[dict]:
    opener = gzip.open if path.name.endswith(".gz") else open
    out = []
    with opener(path, "rt", encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                rec = json.loads(line)
            except ValueError:
                raise FormatError(path, lineno, "a JSON object", repr(line[:60])) from None
            if not isinstance(rec, dict):
                raise FormatError(path, lineno, "a JSON object", type(rec).__name__)
            out.append(rec)
    return out


def _lf_labels(path: Path, recs: Sequence[dict], L: int) -> sp.csr_matrix:
    indptr, indices = [0], []
    for i, r in enumerate(recs, 1):
        t = r.get("target_ind")
        if not isinstance(t, list) or not all(isinstance(j, int) and 0 <= j < L for j in t):
            raise FormatError(path, i, f"'target_ind' as a list of label ids in [0, {L})",
                              repr(t)[:60])
        indices.extend(sorted(set(t)))
        indptr.append(len(indices))
    return sp.csr_matrix((np.ones(len(indices), np.float32), np.asarray(indices, np.int32),
                          np.asarray(indptr, np.int64)), shape=(len(recs), L))


def _read_filter(path: Optional[Path]) -> np.ndarray:
    """``int64 [m, 2]`` (row, label) pairs from a filter_labels file ("row label" per line)."""
    if path is None:
        return np.zeros((0, 2), np.int64)
    pairs = []
    with open(path) as f:
        for lineno, line in enumerate(f, 1):
            fields = line.split()
            if not fields:
                continue
            if len(fields) != 2 or not all(x.lstrip("-").isdigit() for x in fields):
                raise FormatError(path, lineno, "two integers 'row label'", repr(line.strip()))
            pairs.append((int(fields[0]), int(fields[1])))
    return np.asarray(pairs, np.int64).reshape(-1, 2)


def _convert_lf(files: Dict[str, Optional[Path]]) -> Tuple[Dict[str, sp.csr_matrix], List[str],
                                                             Dict[str, np.ndarray], dict]:
    """TF-IDF of the titles (fit on train) for X; ``target_ind`` for Y; label titles as names."""
    from sklearn.feature_extraction.text import TfidfVectorizer

    trn = _read_json_lines(files["trn"])
    tst = _read_json_lines(files["tst"])
    lbl = _read_json_lines(files["lbl"])
    names = [str(r.get("title", "")).replace("\n", " ") for r in lbl]
    L = len(lbl)
    params = {"sublinear_tf": True, "min_df": 1, "dtype": "float32", "field": "title"}
    vec = TfidfVectorizer(sublinear_tf=True, min_df=1, dtype=np.float32)
    X_trn = vec.fit_transform([str(r.get("title", "")) for r in trn])
    X_tst = vec.transform([str(r.get("title", "")) for r in tst])
    mats = {"X_trn": _csr32(X_trn), "Y_trn": _lf_labels(files["trn"], trn, L),
            "X_tst": _csr32(X_tst), "Y_tst": _lf_labels(files["tst"], tst, L)}
    filters = {"filter_labels_train": _read_filter(files.get("filter_train")),
               "filter_labels_test": _read_filter(files.get("filter_test"))}
    return mats, names, filters, params


def _measured_stats(m: Dict[str, sp.csr_matrix]) -> dict:
    Y = m["Y_trn"]
    L = int(Y.shape[1])
    return {
        "n_train": int(Y.shape[0]),
        "n_test": int(m["Y_tst"].shape[0]),
        "num_features": int(m["X_trn"].shape[1]),
        "num_labels": L,
        "labels_per_point": float(Y.nnz / max(Y.shape[0], 1)),
        "points_per_label": float(Y.nnz / max(L, 1)),
    }


def _write_pairs(path: Path, pairs: np.ndarray) -> None:
    with atomic_open(path, "w") as f:
        for r, l in pairs:
            f.write(f"{int(r)} {int(l)}\n")


def _write_layout(folder: Path, info: DatasetInfo, mats: Dict[str, sp.csr_matrix],
                  names: Optional[Sequence[str]], filters: Dict[str, np.ndarray],
                  meta_extra: dict) -> None:
    """Write the canonical layout beside the old one (``folder/.layout.*.tmp``), then swap it in.

    Every byte is written before the old layout is touched, so a failure (full disk, read-only
    folder, Ctrl-C) leaves a previously prepared dataset prepared. The swap itself only renames
    files; ``meta.json`` goes last (the folder is "not prepared" during the renames)."""
    from xmr.data.formats import write_npz

    meta_path = folder / "meta.json"
    for old in folder.glob(".layout.*.tmp"):  # left by a killed run
        shutil.rmtree(old, ignore_errors=True)
    stage = Path(tempfile.mkdtemp(prefix=".layout.", suffix=".tmp", dir=folder))
    try:
        for key in MATRICES:
            write_npz(stage / f"{key}.npz", mats[key])
        if names is not None:
            with atomic_open(stage / "labels.txt", "w", encoding="utf-8") as f:
                for n in names:
                    f.write(f"{n}\n")
        for key, pairs in filters.items():
            _write_pairs(stage / f"{key}.txt", pairs)
        meta = {
            "layout_version": LAYOUT_VERSION,
            "name": info.name,
            "kind": info.kind,
            "stats": _measured_stats(mats),
            "published_stats": info.to_dict()["stats"],
            "prop_a": info.prop_a,
            "prop_b": info.prop_b,
            "xmr_version": xmr.__version__,
            "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            **meta_extra,
        }
        with atomic_open(stage / "meta.json", "w") as f:
            json.dump(meta, f, indent=2, sort_keys=True)
            f.write("\n")
        # swap: renames only (no space needed); files of the old layout absent from the new one
        # (labels.txt, filter files) are removed so that nothing stale is read later
        new = {p.name for p in stage.iterdir()}
        if meta_path.exists():
            meta_path.unlink()
        for stale in ["labels.txt", *(f"{k}.txt" for k in _FILTER_FILES)]:
            if stale not in new and (folder / stale).is_file():
                (folder / stale).unlink()
        for name in sorted(new - {"meta.json"}):
            os.replace(stage / name, folder / name)
        os.replace(stage / "meta.json", meta_path)
    finally:
        shutil.rmtree(stage, ignore_errors=True)


def prepare(name: str, root: Optional[PathLike] = None, url_override: Optional[str] = None,
            force: bool = False, progress: bool = True) -> Path:
    """Download (if needed), extract safely and convert dataset ``name``; return ``ROOT/NAME``.

    Parameters
    ----------
    name : a registered dataset (case-insensitive, see :func:`xmr.data.registry.get_dataset`).
    root : data root (default ``$XMR_DATA`` or ``~/xmr_data``).
    url_override : fetch the (single) archive from this URL instead of the registry's sources
        (tests, mirrors); it is always downloaded, even if raw files are present.
    force : rebuild the canonical layout even when ``meta.json`` says it is complete.
    progress : tqdm progress bars for downloads.

    Raises
    ------
    NetworkUnreachableError : no network; the message names the file(s) to download by hand
        and the folder to put them in.
    ChecksumError, UnsafeArchiveError, FormatError : bad download, unsafe archive, bad files.
    """
    info = get_dataset(name)
    folder = dataset_dir(info.name, root)
    if is_prepared(info.name, root) and not force and url_override is None:
        log.info("%s is already prepared in %s", info.name, folder)
        return folder
    folder.mkdir(parents=True, exist_ok=True)
    if info.kind == KIND_EMBEDDED:
        return _prepare_embedded(info, folder)

    raw = folder / "raw"
    if url_override is not None and (raw / "extracted").exists():
        shutil.rmtree(raw / "extracted")  # an override must not mix with older extractions
    files, seen, urls = _gather_raw(info, raw, url_override, progress)
    names, filters, extra = None, {}, {}
    if info.kind == KIND_BOW:
        mats = _convert_bow(files)
        for candidate in ("labels.txt", "Yf.txt"):
            p = _find(raw, candidate)
            if p is not None:
                names = [ln.rstrip("\n") for ln in p.open(encoding="utf-8", errors="replace")]
                break
    elif info.kind == KIND_LF:
        mats, names, filters, params = _convert_lf(files)
        extra["tfidf"] = params
    else:  # pragma: no cover - registry kinds are fixed
        raise XMRError(f"{info.name}: unknown kind {info.kind!r}")
    if names is not None and len(names) != mats["Y_trn"].shape[1]:
        log.warning("%s: %d label names for %d labels; names not saved", info.name, len(names),
                    mats["Y_trn"].shape[1])
        names = None
    extra.update({
        "sources": urls or [s.url for s in info.sources],
        "sha256_seen": seen,
        "raw_files": {r: str(p.relative_to(raw)) for r, p in files.items() if p is not None},
    })
    _write_layout(folder, info, mats, names, filters, extra)
    log.info("%s prepared in %s", info.name, folder)
    return folder


def _prepare_embedded(info: DatasetInfo, folder: Path) -> Path:
    try:
        from xmr.data.debian import load_debian_deps
    except ImportError as exc:  # pragma: no cover - ships with the package
        raise XMRError(f"{info.name}: its loader xmr.data.debian is not available") from exc
    ds = load_debian_deps()
    mats = {k: _csr32(getattr(ds, k)) for k in MATRICES}
    _write_layout(folder, info, mats, ds.label_names, {},
                  {"sources": [s.url for s in info.sources], "sha256_seen": {},
                   "loader": "xmr.data.debian.load_debian_deps"})
    return folder


# --------------------------------------------------------------------------------------------
# loading
# --------------------------------------------------------------------------------------------

def load_prepared(name: str, root: Optional[PathLike] = None) -> XMCDataset:
    """Read ``ROOT/NAME`` (written by :func:`prepare`) as an :class:`XMCDataset`.

    ``prop_a``/``prop_b`` come from the registry; ``filter_pairs`` (``int64 [m, 2]``, test row
    and label) from ``filter_labels_test.txt`` when present; ``label_names`` from
    ``labels.txt``; ``info`` holds the parsed ``meta.json``.
    """
    from xmr.data.formats import read_npz

    from xmr.utils.validation import check_binary, check_float32, read_json

    info = get_dataset(name)
    folder = dataset_dir(info.name, root)
    if (folder / "meta.json").is_file():
        read_json(folder / "meta.json", "the JSON object of a prepared dataset")  # names a defect
    if not is_prepared(info.name, root):
        raise NotPreparedError(f"{info.name} is not prepared in {folder}; run "
                               f"`xmr data prepare {info.name} --root {folder.parent}`")
    meta = read_json(folder / "meta.json", "the JSON object of a prepared dataset")
    if meta.get("name") != info.name:
        raise MetadataMismatchError(f"{folder / 'meta.json'}: expected name {info.name!r}, "
                                    f"got {meta.get('name')!r}")
    mats = {}
    for k in MATRICES:
        f = folder / f"{k}.npz"
        M = read_npz(f)
        check_float32(M.data, f)  # finite in float64, inf in float32: refused
        if k.startswith("Y"):
            check_binary(M, f)  # an explicit 0 is not a label; −1 or 2 are not labels either
        mats[k] = _csr32(M)
    if mats["X_trn"].shape[1] != mats["X_tst"].shape[1] or \
            mats["Y_trn"].shape[1] != mats["Y_tst"].shape[1]:
        raise FormatError(folder / "X_tst.npz", None,
                          f"{mats['X_trn'].shape[1]} features and {mats['Y_trn'].shape[1]} labels "
                          f"as in the training split", f"{mats['X_tst'].shape[1]} features and "
                          f"{mats['Y_tst'].shape[1]} labels")
    names = None
    if (folder / "labels.txt").is_file():
        names = (folder / "labels.txt").read_text(encoding="utf-8").split("\n")[:-1]
    filter_path = folder / "filter_labels_test.txt"
    filters = _read_filter(filter_path) if filter_path.is_file() else None
    return XMCDataset(name=info.name, label_names=names, prop_a=info.prop_a,
                      prop_b=info.prop_b, filter_pairs=filters, info=meta, **mats)
