"""A dataset is a name or a path: resolve it, detect its layout, convert it once, load it.

:func:`resolve` is what every command and the Python API call (through
:func:`xmr.data.loaders.load_dataset`). ``spec`` may be

* a **registered name** (``debian-deps``, ``EURLex-4K`` …; no path separator) — the embedded
  loader or the prepared registry folder, as before;
* a **folder** in one of these layouts (checked in this order)::

    prepared  meta.json + X_trn.npz Y_trn.npz X_tst.npz Y_tst.npz   (xmr data prepare / import)
    npz       X_trn.npz Y_trn.npz X_tst.npz Y_tst.npz  [labels.txt] [filter_labels_test.txt]
    xc        train.txt test.txt          XC BoW: header "N D L", lines "l1,l2 f:v f:v ..."
    sparse    trn_X_Xf.txt trn_X_Y.txt tst_X_Xf.txt tst_X_Y.txt     header "rows cols"
    tsv       train.tsv test.tsv          "text<TAB>label,label,..." (labels by name)
    lf        trn.json.gz tst.json.gz [lbl.json.gz] [filter_labels_test.txt]

  (``xc`` and ``sparse`` also take an optional ``labels.txt``, one label name per line);
* a **single file** — a ``.tsv`` or an XC BoW file — split into train/test by a seeded
  permutation (``test_fraction``, ``split_seed``; :func:`xmr.data.debian.split_indices`).

Every layout but ``prepared`` is converted into the canonical prepared layout (the one
:mod:`xmr.data.prepare` writes, plus ``vectorizer/`` for text) in a cache folder
``ROOT/imported/<name>-<key>/`` (``ROOT`` = ``data.root``, ``$XMR_DATA`` or ``~/xmr_data``;
``key`` hashes the source path and the conversion options). The folder is built in a temporary
sibling and renamed into place, so a failed or interrupted conversion leaves nothing a later
load would pick up. Its ``meta.json`` records the sha256 of every source file; each load hashes
the sources again and re-converts when any differs (or a file appeared or vanished) — a cache
is never used stale.

Propensity constants (Jain et al., 2016) come from ``prop_a``/``prop_b`` when given, else from
the prepared folder's ``meta.json`` (``xmr data import --prop-a``), else the defaults 0.55 / 1.5 —
never from a folder's name. A folder *named* after a registered benchmark is checked against the
registry's published N_trn, N_tst, L (and D for BoW benchmarks) and refused on a mismatch; one
that matches is that benchmark and gets its registered constants.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import shutil
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Tuple, Union

import numpy as np
import scipy.sparse as sp

from xmr.data.dataset import XMCDataset
from xmr.errors import FormatError, MetadataMismatchError, XMRError

log = logging.getLogger(__name__)

PathLike = Union[str, os.PathLike]

DEFAULT_PROP_A, DEFAULT_PROP_B = 0.55, 1.5
MATRICES = ("X_trn", "Y_trn", "X_tst", "Y_tst")
VECTORIZER_DIR = "vectorizer"
CACHE_DIR = "imported"
CONVERSION_VERSION = 1  # bump when a conversion changes: every cache is rebuilt

#: layout → (required files, optional files)
LAYOUTS: Dict[str, Tuple[Tuple[str, ...], Tuple[str, ...]]] = {
    "npz": (("X_trn.npz", "Y_trn.npz", "X_tst.npz", "Y_tst.npz"),
            ("labels.txt", "filter_labels_test.txt")),
    "xc": (("train.txt", "test.txt"), ("labels.txt",)),
    "sparse": (("trn_X_Xf.txt", "trn_X_Y.txt", "tst_X_Xf.txt", "tst_X_Y.txt"), ("labels.txt",)),
    "tsv": (("train.tsv", "test.tsv"), ()),
    "lf": (("trn.json.gz", "tst.json.gz"), ("lbl.json.gz", "filter_labels_test.txt")),
}
FORMATS = tuple(LAYOUTS)
TEXT_FORMATS = ("tsv", "lf")


class UnknownLayoutError(FormatError, FileNotFoundError):
    """A folder (or file) matches none of the dataset layouts xmr reads."""


@dataclass
class Options:
    """How a source is converted (what the cache key hashes) and which constants apply."""

    format: Optional[str] = None
    min_df: int = 1
    test_fraction: float = 0.2
    split_seed: int = 0
    prop_a: Optional[float] = None
    prop_b: Optional[float] = None

    def conversion_key(self, single_file: bool) -> dict:
        d = {"min_df": self.min_df, "conversion_version": CONVERSION_VERSION}
        if single_file:
            d.update(test_fraction=self.test_fraction, split_seed=self.split_seed)
        return d


@dataclass
class Source:
    """A detected source: its layout and the files it was read from (role → path)."""

    path: Path
    format: str
    files: Dict[str, Path] = field(default_factory=dict)
    single_file: bool = False


# --------------------------------------------------------------------------------------------
# detection


def _looked_for() -> str:
    parts = [f"{' + '.join(req)} ({fmt})" for fmt, (req, _) in LAYOUTS.items()]
    return ("one of the dataset layouts: meta.json + X_trn.npz + Y_trn.npz + X_tst.npz + "
            "Y_tst.npz (prepared), " + ", ".join(parts))


def _listing(folder: Path, limit: int = 12) -> str:
    names = sorted(p.name + ("/" if p.is_dir() else "") for p in folder.iterdir()
                   if not p.name.startswith("."))
    if not names:
        return "an empty folder"
    more = f" and {len(names) - limit} more" if len(names) > limit else ""
    return "the files " + ", ".join(names[:limit]) + more


def is_prepared_folder(folder: Path) -> bool:
    """Whether ``folder`` holds a complete canonical layout (``meta.json`` is written last)."""
    from xmr.data.prepare import LAYOUT_VERSION

    try:
        meta = json.loads((folder / "meta.json").read_text())
    except (OSError, ValueError):
        return False
    return (isinstance(meta, dict) and meta.get("layout_version") == LAYOUT_VERSION
            and all((folder / f"{m}.npz").is_file() for m in MATRICES))


def detect(path: PathLike, format: Optional[str] = None) -> Source:
    """The layout of ``path`` (a folder or a single file); ``format`` forces one.

    Raises :class:`UnknownLayoutError` naming the files it looked for and those it found.
    """
    path = Path(path)
    if format is not None and format not in FORMATS:
        raise XMRError(f"unknown dataset format {format!r}; expected one of: {', '.join(FORMATS)}")
    if path.is_file():
        return _detect_file(path, format)
    if not path.is_dir():
        raise UnknownLayoutError(path, None, "a dataset folder or file", "no such file or folder")
    if format is None and is_prepared_folder(path):
        return Source(path, "prepared")
    candidates = [format] if format is not None else list(FORMATS)
    for fmt in candidates:
        req, opt = LAYOUTS[fmt]
        if all((path / f).is_file() for f in req):
            files = {f: path / f for f in req + opt if (path / f).is_file()}
            return Source(path, fmt, files)
    if format is not None:
        req = LAYOUTS[format][0]
        raise UnknownLayoutError(path, None, f"the {format} layout: {' + '.join(req)}",
                                 _listing(path))
    raise UnknownLayoutError(path, None, _looked_for(), _listing(path))


def _detect_file(path: Path, format: Optional[str]) -> Source:
    if format is None:
        if path.name.endswith(".tsv"):
            format = "tsv"
        else:
            with open(path, "rb") as f:
                head = f.readline(1 << 16).split()
            if len(head) == 3 and all(x.isdigit() for x in head):
                format = "xc"
    if format not in ("tsv", "xc"):
        raise UnknownLayoutError(path, None, "a single-file dataset: a .tsv file "
                                 "('text<TAB>label,label,...') or an XC BoW file (header 'N D L')",
                                 f"format {format}" if format else "neither")
    return Source(path, format, {path.name: path}, single_file=True)


# --------------------------------------------------------------------------------------------
# resolve and load


def looks_like_path(spec: str) -> bool:
    """A spec is a path when it has a path separator, starts with ``~`` or ``.``, or exists
    while not being a registered name."""
    from xmr.data.registry import get_dataset

    if os.sep in spec or (os.altsep and os.altsep in spec) or spec.startswith(("~", ".")):
        return True
    try:
        get_dataset(spec)
        return False
    except ValueError:
        return Path(spec).exists()


def resolve(spec: Union[str, os.PathLike], root: Optional[PathLike] = None,
            options: Optional[Options] = None) -> XMCDataset:
    """Load the dataset ``spec`` names (see the module docstring)."""
    opts = options or Options()
    if isinstance(spec, os.PathLike) or looks_like_path(str(spec)):
        return load_path(Path(os.fspath(spec)).expanduser(), root, opts)
    return _load_registered(str(spec), root, opts)


def _load_registered(name: str, root, opts: Options) -> XMCDataset:
    from xmr.data.registry import get_dataset

    try:
        info = get_dataset(name)
    except ValueError:
        from xmr.data.registry import dataset_names

        raise XMRError(f"unknown dataset {name!r}: not a registered name and no such file or "
                       f"folder; expected a path or one of: {', '.join(dataset_names())}") from None
    from xmr.data.prepare import is_prepared
    from xmr.data.registry import KIND_EMBEDDED

    if info.kind != KIND_EMBEDDED and not is_prepared(info.name, root) and Path(name).is_dir():
        # a folder in the working directory that is named like a benchmark: read it (checked
        # against the registry's statistics) rather than ask for `xmr data prepare`
        return load_path(Path(name), root, opts)
    if info.name == "debian-deps":
        from xmr.data.debian import load_debian_deps

        ds = load_debian_deps(test_fraction=opts.test_fraction, seed=opts.split_seed)
    else:
        from xmr.data.prepare import load_prepared

        ds = load_prepared(info.name, root=root)
    _apply_props(ds, opts, ds.prop_a, ds.prop_b)
    return ds


def _apply_props(ds: XMCDataset, opts: Options, a: float, b: float) -> None:
    ds.prop_a = float(opts.prop_a if opts.prop_a is not None else a)
    ds.prop_b = float(opts.prop_b if opts.prop_b is not None else b)


def load_path(path: Path, root=None, opts: Optional[Options] = None) -> XMCDataset:
    """Load a folder or file: a prepared folder directly, anything else through the cache."""
    opts = opts or Options()
    src = detect(path, opts.format)
    checked = None if src.single_file else path.resolve().name
    if src.format == "prepared":
        return load_prepared_folder(path, opts, checked_name=checked, where=path)
    check = (lambda st: check_registry_name(checked, st, path)) if checked else None
    folder = cached_conversion(src, root, opts, check)
    return load_prepared_folder(folder, opts, checked_name=checked, where=path)


def cache_folder(src: Source, root, opts: Options) -> Path:
    """``ROOT/imported/<name>-<key>``: one cache per source path and conversion options."""
    from xmr.data.prepare import data_root

    where = str(src.path.resolve())
    key = hashlib.sha256(json.dumps({"source": where, "format": src.format,
                                     **opts.conversion_key(src.single_file)},
                                    sort_keys=True).encode()).hexdigest()[:12]
    slug = re.sub(r"[^A-Za-z0-9._-]+", "_", src.path.resolve().name).strip("._") or "dataset"
    return data_root(root) / CACHE_DIR / f"{slug}-{key}"


def _digests(src: Source) -> Dict[str, str]:
    from xmr.utils.hashing import sha256_file

    return {name: sha256_file(p) for name, p in sorted(src.files.items())}


def _fresh(folder: Path, digests: Dict[str, str]) -> bool:
    if not is_prepared_folder(folder):
        return False
    try:
        meta = json.loads((folder / "meta.json").read_text())
    except (OSError, ValueError):
        return False
    return meta.get("source_sha256") == digests


def cached_conversion(src: Source, root, opts: Options, check=None) -> Path:
    """The cache folder of ``src``, converted now when missing or stale (atomically)."""
    folder = cache_folder(src, root, opts)
    digests = _digests(src)
    if _fresh(folder, digests):
        log.debug("using the converted copy %s of %s", folder, src.path)
        return folder
    if folder.exists():
        log.info("%s changed since it was converted: converting again", src.path)
    else:
        log.info("converting %s (%s layout) into %s", src.path, src.format, folder)
    write_prepared(folder, src, opts, digests, check=check)
    return folder


# --------------------------------------------------------------------------------------------
# conversion


def _csr32(M) -> sp.csr_matrix:
    M = sp.csr_matrix(M, dtype=np.float32)
    M.sum_duplicates()
    M.sort_indices()
    return M


def _same_width(mats: Dict[str, sp.csr_matrix], files: Tuple[Path, Path, Path, Path]) -> None:
    """Train and test must agree on D (features) and L (labels); one line naming the file."""
    for a, b, what, fa, fb in (("X_trn", "X_tst", "features", files[0], files[2]),
                               ("Y_trn", "Y_tst", "labels", files[1], files[3])):
        wa, wb = mats[a].shape[1], mats[b].shape[1]
        if wa != wb:
            line = 1 if fb.suffix in (".txt",) else None
            raise FormatError(fb, line, f"{wa} {what} as in {fa.name}", f"{wb}")


def _same_rows(X: sp.csr_matrix, Y: sp.csr_matrix, fx: Path, fy: Path) -> None:
    if X.shape[0] != Y.shape[0]:
        line = 1 if fy.suffix == ".txt" else None
        raise FormatError(fy, line, f"{X.shape[0]} rows as in {fx.name}", f"{Y.shape[0]}")


def _read_names(path: Optional[Path], L: int) -> Optional[List[str]]:
    if path is None:
        return None
    names = path.read_text(encoding="utf-8", errors="replace").split("\n")
    if names and names[-1] == "":
        names = names[:-1]
    if len(names) != L:
        raise FormatError(path, None, f"{L} label names, one per line", f"{len(names)} lines")
    return names


def convert(src: Source, opts: Options):
    """Read ``src`` → ``(mats, label names or None, filter pairs or None, vectorizer or None,
    extra meta)``."""
    from xmr.data.formats import read_npz, read_sparse_text, read_xc_bow
    from xmr.data.prepare import _read_filter

    f = src.files
    names = filters = vec = None
    extra: dict = {}
    if src.single_file:
        p = next(iter(f.values()))
        extra.update(test_fraction=opts.test_fraction, split_seed=opts.split_seed)
        if src.format == "tsv":
            from xmr.data.text import convert_tsv_split

            mats, names, vec, trn, tst = convert_tsv_split(p, opts.test_fraction,
                                                           opts.split_seed, opts.min_df)
        else:
            from xmr.data.debian import split_indices

            X, Y = read_xc_bow(p)
            trn, tst = split_indices(X.shape[0], opts.test_fraction, opts.split_seed)
            mats = {"X_trn": X[trn], "Y_trn": Y[trn], "X_tst": X[tst], "Y_tst": Y[tst]}
        return mats, names, None, vec, extra
    if src.format == "npz":
        mats = {k: read_npz(f[f"{k}.npz"]) for k in MATRICES}
        order = tuple(f[f"{k}.npz"] for k in ("X_trn", "Y_trn", "X_tst", "Y_tst"))
        _same_rows(mats["X_trn"], mats["Y_trn"], order[0], order[1])
        _same_rows(mats["X_tst"], mats["Y_tst"], order[2], order[3])
        _same_width(mats, order)
        for k in ("Y_trn", "Y_tst"):
            if mats[k].nnz and not np.all(mats[k].data == 1):
                mats[k] = (mats[k] != 0).astype(np.float32)
        names = _read_names(f.get("labels.txt"), mats["Y_trn"].shape[1])
    elif src.format == "xc":
        X_trn, Y_trn = read_xc_bow(f["train.txt"])
        X_tst, Y_tst = read_xc_bow(f["test.txt"])
        mats = {"X_trn": X_trn, "Y_trn": Y_trn, "X_tst": X_tst, "Y_tst": Y_tst}
        _same_width(mats, (f["train.txt"], f["train.txt"], f["test.txt"], f["test.txt"]))
        names = _read_names(f.get("labels.txt"), Y_trn.shape[1])
    elif src.format == "sparse":
        order = (f["trn_X_Xf.txt"], f["trn_X_Y.txt"], f["tst_X_Xf.txt"], f["tst_X_Y.txt"])
        mats = dict(zip(MATRICES, (read_sparse_text(p) for p in order)))
        _same_rows(mats["X_trn"], mats["Y_trn"], order[0], order[1])
        _same_rows(mats["X_tst"], mats["Y_tst"], order[2], order[3])
        _same_width(mats, order)
        for k in ("Y_trn", "Y_tst"):
            mats[k] = (mats[k] != 0).astype(np.float32)
        names = _read_names(f.get("labels.txt"), mats["Y_trn"].shape[1])
    elif src.format == "tsv":
        from xmr.data.text import convert_tsv

        mats, names, vec = convert_tsv(f["train.tsv"], f["test.tsv"], opts.min_df)
    elif src.format == "lf":
        from xmr.data.text import convert_lf

        mats, names, vec = convert_lf(f["trn.json.gz"], f["tst.json.gz"], f.get("lbl.json.gz"),
                                      opts.min_df)
    else:  # pragma: no cover - LAYOUTS is fixed
        raise AssertionError(src.format)
    if "filter_labels_test.txt" in f:
        filters = _read_filter(f["filter_labels_test.txt"])
    if vec is not None:
        extra["tfidf"] = {"sublinear_tf": True, "min_df": opts.min_df, "fit_on": "train"}
    return mats, names, filters, vec, extra


def write_prepared(folder: Path, src: Source, opts: Options,
                   digests: Optional[Dict[str, str]] = None, name: Optional[str] = None,
                   check=None) -> Path:
    """Convert ``src`` into the canonical layout at ``folder``: built in a temporary sibling,
    then renamed into place (an existing folder is replaced only once the new one is whole).
    ``check(stats)`` may raise to refuse the converted data before anything is written."""
    import xmr
    from xmr.data.formats import write_npz
    from xmr.data.prepare import LAYOUT_VERSION, _measured_stats, _write_pairs
    from xmr.utils.atomic import atomic_open

    digests = digests if digests is not None else _digests(src)
    mats, names, filters, vec, extra = convert(src, opts)
    mats = {k: _csr32(v) for k, v in mats.items()}
    if check is not None:
        check(_measured_stats(mats))
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{folder.name}.", suffix=".tmp", dir=folder.parent))
    old = None
    try:
        for k in MATRICES:
            write_npz(tmp / f"{k}.npz", mats[k])
        if names is not None:
            with atomic_open(tmp / "labels.txt", "w", encoding="utf-8") as fh:
                for nm in names:
                    fh.write(nm.replace("\n", " ") + "\n")
        if filters is not None:
            _write_pairs(tmp / "filter_labels_test.txt", filters)
        if vec is not None:
            vec.save(tmp / VECTORIZER_DIR)
        a = opts.prop_a if opts.prop_a is not None else DEFAULT_PROP_A
        b = opts.prop_b if opts.prop_b is not None else DEFAULT_PROP_B
        meta = {
            "layout_version": LAYOUT_VERSION,
            "name": name or src.path.resolve().name,
            "kind": "imported",
            "format": src.format,
            "source": str(src.path.resolve()),
            "source_sha256": digests,
            "options": {"min_df": opts.min_df, **extra},
            "stats": _measured_stats(mats),
            "prop_a": float(a),
            "prop_b": float(b),
            "xmr_version": xmr.__version__,
            "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        }
        with atomic_open(tmp / "meta.json", "w") as fh:
            json.dump(meta, fh, indent=2, sort_keys=True)
            fh.write("\n")
        if folder.exists():
            old = folder.parent / f".{folder.name}.{uuid.uuid4().hex[:8]}.old"
            try:
                os.replace(folder, old)
            except FileNotFoundError:  # another process moved it first
                old = None
        try:
            os.replace(tmp, folder)
        except OSError:
            # another process (a second rank) put a complete copy there meanwhile: use it
            if not _fresh(folder, digests):
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    return folder


# --------------------------------------------------------------------------------------------
# loading the canonical layout from any folder


def check_registry_name(folder_name: str, stats: dict, where: Path) -> Optional[object]:
    """If ``folder_name`` is a registered benchmark's name, the registry entry after checking the
    measured ``stats`` against its published N_trn, N_tst, L (and D for BoW benchmarks);
    ``None`` for any other name. Raises :class:`MetadataMismatchError` on a mismatch."""
    from xmr.data.registry import KIND_BOW, get_dataset

    try:
        info = get_dataset(folder_name)
    except (ValueError, TypeError):
        return None
    pub = info.stats
    checks = [("N_trn", stats.get("n_train"), pub.n_train), ("N_tst", stats.get("n_test"),
              pub.n_test), ("L", stats.get("num_labels"), pub.num_labels)]
    if info.kind == KIND_BOW and pub.num_features is not None:
        checks.append(("D", stats.get("num_features"), pub.num_features))
    bad = [f"{k}={got} (published {want})" for k, got, want in checks if got != want]
    if bad:
        raise MetadataMismatchError(
            f"{where} is named after the registered benchmark {info.name} but does not match its "
            f"published statistics: {', '.join(bad)}; rename the folder (or import it with "
            f"`xmr data import SRC --out DIR --name NAME`) if it is another dataset")
    return info


def load_prepared_folder(folder: Path, opts: Optional[Options] = None,
                         checked_name: Optional[str] = None, where=None) -> XMCDataset:
    """Read a canonical prepared folder (any path) as an :class:`XMCDataset`.

    ``info`` holds the parsed ``meta.json`` plus ``folder`` and, for text datasets,
    ``vectorizer_dir``. ``checked_name`` (the name of the folder the user gave) is checked
    against the registry (:func:`check_registry_name`).
    """
    from xmr.data.formats import read_npz
    from xmr.data.prepare import _measured_stats, _read_filter

    opts = opts or Options()
    folder = Path(folder)
    meta = json.loads((folder / "meta.json").read_text())
    mats = {k: _csr32(read_npz(folder / f"{k}.npz")) for k in MATRICES}
    measured = _measured_stats(mats)
    names = None
    if (folder / "labels.txt").is_file():
        names = (folder / "labels.txt").read_text(encoding="utf-8").split("\n")[:-1]
    fpath = folder / "filter_labels_test.txt"
    filters = _read_filter(fpath) if fpath.is_file() else None
    a = meta.get("prop_a", DEFAULT_PROP_A)
    b = meta.get("prop_b", DEFAULT_PROP_B)
    name = str(meta.get("name") or folder.name)
    if checked_name is not None:
        info = check_registry_name(checked_name, measured, where or folder)
        if info is not None:
            a, b, name = info.prop_a, info.prop_b, info.name
    info_d = dict(meta, folder=str(folder))
    if (folder / VECTORIZER_DIR / "vectorizer.json").is_file():
        info_d["vectorizer_dir"] = str(folder / VECTORIZER_DIR)
    ds = XMCDataset(name=name, label_names=names, filter_pairs=filters, info=info_d, **mats)
    _apply_props(ds, opts, a, b)
    return ds


def import_dataset(src_path: PathLike, out: PathLike, format: Optional[str] = None,
                   name: Optional[str] = None, options: Optional[Options] = None) -> Path:
    """``xmr data import``: convert ``src_path`` into the canonical layout at ``out``.

    ``out`` must not exist or be a prepared folder (it is then replaced atomically); a folder
    holding other files is refused rather than overwritten.
    """
    opts = options or Options()
    if format is not None:
        opts.format = format
    out = Path(out)
    if out.exists() and (not out.is_dir() or (any(out.iterdir()) and not is_prepared_folder(out))):
        raise XMRError(f"{out} exists and is not an xmr prepared dataset folder; choose another --out")
    src = detect(Path(src_path).expanduser(), opts.format)
    if src.format == "prepared":
        raise XMRError(f"{src_path} is already in the prepared layout; use it as it is")
    nm = name or (src.path.resolve().stem if src.single_file else src.path.resolve().name)

    def check(stats):  # the name given and the folder's name must not pose as a benchmark
        for n in dict.fromkeys([nm, out.name]):
            check_registry_name(n, stats, out if n == out.name else Path(f"--name {n}"))

    return write_prepared(out, src, opts, name=nm, check=check)
