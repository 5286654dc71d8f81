"""The embedded real dataset ``debian-deps``: Debian packages labelled with their dependencies.

A point is a binary package of Debian 12 "bookworm" (``main``, amd64 index, which also lists the
``Architecture: all`` packages) that has a ``Depends`` or ``Pre-Depends`` field. Its text is the
package name followed by its short and long description; its labels are the package names named
in ``Depends`` and ``Pre-Depends`` (every ``|`` alternative kept, version constraints and
architecture qualifiers stripped). See DESIGN.md §3 "Embedded real dataset".

The raw fields are frozen in a snapshot that ships inside the package
(``xmr/data/snapshots/debian-deps.jsonl.xz``, one JSON object per line with the keys
``package``, ``description``, ``depends``, ``pre_depends``; sorted by package name), next to its
sha256 (``debian-deps.sha256``). Loading needs neither network nor apt; the snapshot is rebuilt
by ``data_scripts/build_debian_deps.py``.

>>> ds = load_debian_deps(seed=0)          # doctest: +SKIP
>>> ds.X_trn.shape, ds.Y_trn.shape          # doctest: +SKIP
((44678, 35753), (44678, 35437))
"""

from __future__ import annotations

import json
import logging
import lzma
import os
import re
import time
from importlib import resources
from pathlib import Path
from typing import List, Optional, Sequence, Tuple, Union

import numpy as np
import scipy.sparse as sp

from xmr.data.dataset import XMCDataset
from xmr.errors import ChecksumError, FormatError

log = logging.getLogger(__name__)

SNAPSHOT_NAME = "debian-deps.jsonl.xz"
CHECKSUM_NAME = "debian-deps.sha256"
FIELDS = ("package", "description", "depends", "pre_depends")

# Jain et al. (2016) propensity constants: debian-deps uses the defaults (DESIGN.md §8).
PROP_A = 0.55
PROP_B = 1.5

PathLike = Union[str, "os.PathLike[str]"]

# Parts of a dependency alternative that are not the package name (Debian Policy §7.1):
# version constraint "(>= 1.0)", architecture restriction "[amd64 !i386]", build profiles
# "<!nocheck> <stage1>". Binary Packages files only carry the first kind, source-style fields
# may carry all three.
_QUALIFIERS = re.compile(r"\([^)]*\)|\[[^\]]*\]|<[^>]*>")


def parse_depends(field: str) -> List[str]:
    """Package names of a ``Depends``/``Pre-Depends`` field, in order, without duplicates.

    The field is split on ``,`` (conjunction) and ``|`` (alternatives, all kept); version
    constraints ``(>= 1.0)``, architecture restrictions ``[amd64]``, build profiles
    ``<!nocheck>`` and architecture qualifiers ``:any``/``:amd64``/``:native`` are removed.

    >>> parse_depends("libc6 (>= 2.34), debconf (>= 0.5) | debconf-2.0, python3:any")
    ['libc6', 'debconf', 'debconf-2.0', 'python3']
    """
    if not isinstance(field, str):
        raise TypeError(f"parse_depends: expected a str field, got {type(field).__name__}")
    names: List[str] = []
    seen = set()
    for alternative in re.split(r"[,|]", _QUALIFIERS.sub(" ", field)):
        words = alternative.split()
        if not words:
            continue
        name = words[0].split(":", 1)[0]
        if name and name not in seen:
            seen.add(name)
            names.append(name)
    return names


def _snapshot_resource(name: str):
    return resources.files("xmr.data").joinpath("snapshots", name)


def _read_recorded_sha256(path: Optional[Path]) -> str:
    """The hex digest recorded for a snapshot: the first word of its ``.sha256`` file.

    The checksum file is ``debian-deps.sha256`` next to the snapshot (``sha256sum`` format,
    ``HEX  debian-deps.jsonl.xz``).
    """
    if path is None:
        res = _snapshot_resource(CHECKSUM_NAME)
        where = str(res)
        text = res.read_text(encoding="ascii")
    else:
        sha_path = path.with_name(CHECKSUM_NAME)
        where = str(sha_path)
        if not sha_path.is_file():
            raise ChecksumError(
                f"{path}: no recorded sha256 (expected {sha_path}); pass sha256= explicitly"
            )
        text = sha_path.read_text(encoding="ascii")
    words = text.split()
    if not words or not re.fullmatch(r"[0-9a-f]{64}", words[0]):
        raise FormatError(where, 1, "a sha256 hex digest (64 lowercase hex digits)", repr(text[:80]))
    return words[0]


def load_debian_raw(path: Optional[PathLike] = None, sha256: Optional[str] = None) -> List[dict]:
    """Read the ``debian-deps`` snapshot: one dict per package, sorted by package name.

    Parameters
    ----------
    path : the ``.jsonl.xz`` snapshot; default the one packaged in ``xmr/data/snapshots``.
    sha256 : the expected hex digest; default the one recorded in ``debian-deps.sha256`` next
        to the snapshot.

    Returns
    -------
    list of dicts with the str fields ``package``, ``description`` (short description, newline,
    long description), ``depends`` and ``pre_depends`` (raw field values, ``""`` when absent).

    Raises
    ------
    ChecksumError : the file's sha256 differs from the recorded one (a corrupted or stale file).
    FormatError : a line is not a JSON object with the four string fields.
    """
    import hashlib

    if path is None:
        res = _snapshot_resource(SNAPSHOT_NAME)
        where = str(res)
        blob = res.read_bytes()
        expected = sha256 if sha256 is not None else _read_recorded_sha256(None)
    else:
        p = Path(path)
        where = str(p)
        blob = p.read_bytes()
        expected = sha256 if sha256 is not None else _read_recorded_sha256(p)
    got = hashlib.sha256(blob).hexdigest()
    if got != expected.lower():
        raise ChecksumError(f"{where}: sha256 mismatch: expected {expected}, got {got}")

    records: List[dict] = []
    text = lzma.decompress(blob).decode("utf-8")
    for lineno, line in enumerate(text.splitlines(), start=1):
        if not line:
            continue
        try:
            rec = json.loads(line)
        except json.JSONDecodeError:
            rec = None
        if not isinstance(rec, dict) or any(not isinstance(rec.get(k), str) for k in FIELDS):
            raise FormatError(
                where, lineno, "a JSON object with string fields " + ", ".join(FIELDS), repr(line[:80])
            )
        records.append(rec)
    return records


def split_indices(n: int, test_fraction: float = 0.2, seed: int = 0) -> Tuple[np.ndarray, np.ndarray]:
    """The seeded random train/test split of ``n`` points used by :func:`load_debian_deps`.

    ``perm = numpy.random.default_rng(seed).permutation(n)``; the first
    ``round(test_fraction * n)`` entries of ``perm`` are the test points, the rest the training
    points. Both index arrays are returned sorted (rows stay in package-name order).

    Returns ``(trn int64[n - n_test], tst int64[n_test])``.
    """
    if not 0.0 < test_fraction < 1.0:
        raise ValueError(f"test_fraction: expected a float in (0, 1), got {test_fraction!r}")
    perm = np.random.default_rng(seed).permutation(n)
    n_test = int(round(test_fraction * n))
    return np.sort(perm[n_test:]).astype(np.int64), np.sort(perm[:n_test]).astype(np.int64)


def _label_matrix(label_lists: Sequence[List[str]], index: dict) -> sp.csr_matrix:
    indptr = np.zeros(len(label_lists) + 1, dtype=np.int64)
    indptr[1:] = np.cumsum([len(ls) for ls in label_lists])
    indices = np.fromiter((index[name] for ls in label_lists for name in ls), dtype=np.int32, count=int(indptr[-1]))
    Y = sp.csr_matrix(
        (np.ones(indices.size, dtype=np.float32), indices, indptr), shape=(len(label_lists), len(index))
    )
    Y.sort_indices()
    return Y


def point_text(rec: dict) -> str:
    """The text of a point: package name, short description and long description."""
    return rec["package"] + "\n" + rec["description"]


def point_labels(rec: dict) -> List[str]:
    """The labels of a point: names in ``Pre-Depends`` then ``Depends``, without duplicates."""
    return list(dict.fromkeys(parse_depends(rec["pre_depends"]) + parse_depends(rec["depends"])))


def load_debian_deps(
    test_fraction: float = 0.2,
    seed: int = 0,
    min_df: int = 2,
    max_features: Optional[int] = None,
    sublinear_tf: bool = True,
    path: Optional[PathLike] = None,
) -> XMCDataset:
    """Load ``debian-deps`` as an :class:`XMCDataset` with TF-IDF features.

    Points are the snapshot's packages (N = 55,848). The label space is every package name that
    appears in some point's dependencies, sorted (``label_names``). The split is
    :func:`split_indices` (seeded ``numpy.random.default_rng(seed).permutation``). Features are
    scikit-learn ``TfidfVectorizer(sublinear_tf=sublinear_tf, min_df=min_df,
    max_features=max_features)`` fit on the **training texts only** and applied to both splits.

    Returns
    -------
    XMCDataset with ``X_trn/X_tst csr float32 [n, D]``, ``Y_trn/Y_tst csr float32 [n, L]``,
    ``prop_a=0.55, prop_b=1.5`` and ``info`` holding ``packages_trn``, ``packages_tst`` (the
    package name of every row), ``vectorizer`` (the fitted TfidfVectorizer, to featurize new
    text) and the split and vectorizer parameters. The snapshot's sha256 is checked first
    (:func:`load_debian_raw`). Takes about 4 s on 2 cores; nothing is cached on disk.
    """
    from sklearn.feature_extraction.text import TfidfVectorizer

    t0 = time.perf_counter()
    records = load_debian_raw(path)
    labels = [point_labels(r) for r in records]
    names = sorted({name for ls in labels for name in ls})
    index = {name: i for i, name in enumerate(names)}
    trn, tst = split_indices(len(records), test_fraction, seed)

    vec = TfidfVectorizer(sublinear_tf=sublinear_tf, min_df=min_df, max_features=max_features, dtype=np.float32)
    X_trn = vec.fit_transform([point_text(records[i]) for i in trn]).tocsr()
    X_tst = vec.transform([point_text(records[i]) for i in tst]).tocsr()
    Y_trn = _label_matrix([labels[i] for i in trn], index)
    Y_tst = _label_matrix([labels[i] for i in tst], index)

    ds = XMCDataset(
        name="debian-deps",
        X_trn=X_trn,
        Y_trn=Y_trn,
        X_tst=X_tst,
        Y_tst=Y_tst,
        label_names=names,
        prop_a=PROP_A,
        prop_b=PROP_B,
        info={
            "packages_trn": [records[i]["package"] for i in trn],
            "packages_tst": [records[i]["package"] for i in tst],
            "vectorizer": vec,
            "test_fraction": test_fraction,
            "seed": seed,
            "min_df": min_df,
            "max_features": max_features,
            "sublinear_tf": sublinear_tf,
        },
    )
    log.info(
        "debian-deps: %d train / %d test points, D=%d, L=%d (%.1f s)",
        len(trn), len(tst), ds.num_features, ds.num_labels, time.perf_counter() - t0,
    )
    return ds
