#!/usr/bin/env python3
"""Build the ``debian-deps`` snapshot (``xmr/data/snapshots/debian-deps.jsonl.xz`` + sha256).

Two sources (DESIGN.md §3, "Embedded real dataset"):

(a) default: this machine's own apt configuration. ``apt-get update`` downloads the index
    files into a **private** lists directory (``-o Dir::State::Lists=<tmpdir>``, with
    ``Acquire::Languages=en`` so that the ``Translation-en`` files carrying the long descriptions
    come too); the system's lists are not touched. ``apt-get indextargets`` then names the
    ``Packages`` file of bookworm/main/amd64 and the ``Translation-en`` file of bookworm/main.
    Needs a Debian-family machine whose sources list bookworm main; runs as root or as a user
    allowed to run ``apt-get update`` (no package is installed).

(b) ``--packages FILE... --translations FILE...``: Packages and Translation files given by path,
    plain or compressed (.xz, .gz, .bz2, .lzma; .lz4/.zst through apt's ``apt-helper``).

Only stanzas with ``Architecture: amd64`` or ``all`` are read; a point is a package with a
``Depends`` or ``Pre-Depends`` field. When a package has several stanzas (e.g. two kernel
versions), the highest Debian version wins. The long description comes from Translation-en,
matched by ``Description-md5`` or, failing that, by package name.

Output: JSON lines ``{"package", "description", "depends", "pre_depends"}`` sorted by package
name, xz-compressed (preset 9e, deterministic), written atomically; its sha256 in
``debian-deps.sha256`` (``sha256sum`` format). Statistics are printed at the end.

Usage::

    sudo .venv/bin/python data_scripts/build_debian_deps.py            # (a), writes the snapshot
    .venv/bin/python data_scripts/build_debian_deps.py \\
        --packages Packages.xz --translations Translation-en.xz --out /tmp/snap   # (b)
"""

from __future__ import annotations

import argparse
import bz2
import gzip
import hashlib
import io
import json
import lzma
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Dict, Iterator, List, Optional, Tuple

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from xmr.data.debian import CHECKSUM_NAME, SNAPSHOT_NAME, point_labels  # noqa: E402
from xmr.errors import FormatError  # noqa: E402
from xmr.utils.atomic import atomic_open  # noqa: E402

APT_HELPER = "/usr/lib/apt/apt-helper"


# --------------------------------------------------------------------------- reading files


def read_text(path: Path) -> str:
    """The decompressed text of an index file, chosen by its suffix."""
    suffix = path.suffix.lower()
    if suffix == ".xz" or suffix == ".lzma":
        data = lzma.decompress(path.read_bytes())
    elif suffix == ".gz":
        data = gzip.decompress(path.read_bytes())
    elif suffix == ".bz2":
        data = bz2.decompress(path.read_bytes())
    elif suffix in (".lz4", ".zst"):
        # apt stores its lists compressed when Acquire::GzipIndexes is set; Python has no lz4 or
        # zstd in its standard library, apt's helper decompresses whatever apt wrote.
        if not os.path.exists(APT_HELPER):
            raise SystemExit(f"{path}: a {suffix} file needs {APT_HELPER} (apt) to decompress")
        data = subprocess.run([APT_HELPER, "cat-file", str(path)], check=True, capture_output=True).stdout
    else:
        data = path.read_bytes()
    return data.decode("utf-8")


def deb822_stanzas(text: str, path: Path) -> Iterator[Tuple[int, Dict[str, str]]]:
    """Yield ``(first line number, {field: value})`` for each deb822 stanza of ``text``.

    Field names are kept as written; a multi-line value keeps its continuation lines (with their
    leading space) joined by ``\\n``. Lines starting with ``#`` are comments.
    """
    fields: Dict[str, str] = {}
    start = 0
    last: Optional[str] = None
    for lineno, line in enumerate(io.StringIO(text), start=1):
        line = line.rstrip("\n")
        if not line.strip():
            if fields:
                yield start, fields
            fields, last = {}, None
            continue
        if line.startswith("#"):
            continue
        if line[0] in " \t":
            if last is None:
                raise FormatError(path, lineno, "a 'Field: value' line", repr(line[:60]))
            fields[last] += "\n" + line
            continue
        name, sep, value = line.partition(":")
        if not sep or not name or " " in name:
            raise FormatError(path, lineno, "a 'Field: value' line", repr(line[:60]))
        if not fields:
            start = lineno
        last = name
        fields[name] = value.strip()
    if fields:
        yield start, fields


def long_description(lines: str) -> str:
    """Decode deb822 continuation lines of a description: drop one leading space, ' .' is a
    blank line (Debian Policy §5.6.13)."""
    out = []
    for line in lines.split("\n"):
        line = line[1:] if line[:1] in (" ", "\t") else line
        out.append("" if line.strip() == "." else line.rstrip())
    return "\n".join(out).strip("\n")


# --------------------------------------------------------------------------- Debian versions


def _order(c: str) -> int:
    if c == "~":
        return -1
    if c.isdigit():
        return 0
    if c.isalpha():
        return ord(c)
    return ord(c) + 256


def _cmp_part(a: str, b: str) -> int:
    """Compare an upstream version or Debian revision (Debian Policy §5.6.12 algorithm)."""
    i = j = 0
    while i < len(a) or j < len(b):
        first_diff = 0
        while (i < len(a) and not a[i].isdigit()) or (j < len(b) and not b[j].isdigit()):
            ac = _order(a[i]) if i < len(a) and not a[i].isdigit() else 0
            bc = _order(b[j]) if j < len(b) and not b[j].isdigit() else 0
            if ac != bc:
                return -1 if ac < bc else 1
            i += 1
            j += 1
        while i < len(a) and a[i] == "0":
            i += 1
        while j < len(b) and b[j] == "0":
            j += 1
        while i < len(a) and a[i].isdigit() and j < len(b) and b[j].isdigit():
            if not first_diff:
                first_diff = (a[i] > b[j]) - (a[i] < b[j])
            i += 1
            j += 1
        if i < len(a) and a[i].isdigit():
            return 1
        if j < len(b) and b[j].isdigit():
            return -1
        if first_diff:
            return first_diff
    return 0


def compare_versions(a: str, b: str) -> int:
    """-1, 0 or 1 as Debian version ``a`` sorts before, equal to or after ``b``."""

    def split(v: str) -> Tuple[int, str, str]:
        epoch, _, rest = v.partition(":") if ":" in v else ("0", "", v)
        upstream, _, revision = rest.rpartition("-") if "-" in rest else (rest, "", "")
        return int(epoch or 0), upstream, revision

    ea, ua, ra = split(a)
    eb, ub, rb = split(b)
    if ea != eb:
        return -1 if ea < eb else 1
    return _cmp_part(ua, ub) or _cmp_part(ra, rb)


# --------------------------------------------------------------------------- building


def read_packages(paths: List[Path], arch: str) -> Tuple[Dict[str, Dict[str, str]], dict]:
    """The newest stanza of every package of architecture ``arch`` or ``all``."""
    best: Dict[str, Dict[str, str]] = {}
    counts = {"stanzas": 0, "other_arch": 0, "duplicates": 0}
    for path in paths:
        for lineno, st in deb822_stanzas(read_text(path), path):
            counts["stanzas"] += 1
            if "Package" not in st:
                raise FormatError(path, lineno, "a stanza with a Package field", repr(sorted(st)))
            if st.get("Architecture", arch) not in (arch, "all"):
                counts["other_arch"] += 1
                continue
            name = st["Package"]
            if name in best:
                counts["duplicates"] += 1
                if compare_versions(st.get("Version", "0"), best[name].get("Version", "0")) <= 0:
                    continue
            best[name] = st
    return best, counts


def read_translations(paths: List[Path]) -> Tuple[Dict[str, str], Dict[str, str]]:
    """Full English descriptions (``short\\nlong`` as raw deb822 text) by md5 and by package."""
    by_md5: Dict[str, str] = {}
    by_name: Dict[str, str] = {}
    for path in paths:
        for lineno, st in deb822_stanzas(read_text(path), path):
            desc = st.get("Description-en")
            if desc is None:
                raise FormatError(path, lineno, "a stanza with a Description-en field", repr(sorted(st)))
            if "Description-md5" in st:
                by_md5.setdefault(st["Description-md5"], desc)
            if "Package" in st:
                by_name.setdefault(st["Package"], desc)
    return by_md5, by_name


def build_records(packages: Dict[str, Dict[str, str]], by_md5, by_name) -> Tuple[List[dict], dict]:
    records = []
    counts = {"with_long_description": 0, "long_by_md5": 0, "long_by_name": 0}
    for name in sorted(packages):
        st = packages[name]
        depends, pre = st.get("Depends", ""), st.get("Pre-Depends", "")
        if not depends and not pre:
            continue
        desc = st.get("Description", "")
        full = None
        if "\n" in desc:  # the Packages file itself carries the long description
            full = desc
        elif st.get("Description-md5") in by_md5:
            full = by_md5[st["Description-md5"]]
            counts["long_by_md5"] += 1
        elif name in by_name:
            full = by_name[name]
            counts["long_by_name"] += 1
        if full is not None:
            short, _, rest = full.partition("\n")
            long_ = long_description(rest)
            desc = short.strip() + ("\n" + long_ if long_ else "")
            counts["with_long_description"] += bool(long_)
        records.append(
            {"package": name, "description": desc, "depends": " ".join(depends.split()),
             "pre_depends": " ".join(pre.split())}
        )
    return records, counts


def write_snapshot(records: List[dict], out_dir: Path) -> Tuple[Path, str, int]:
    payload = "".join(json.dumps(r, ensure_ascii=False, sort_keys=False) + "\n" for r in records)
    blob = lzma.compress(payload.encode("utf-8"), format=lzma.FORMAT_XZ, check=lzma.CHECK_CRC64,
                         preset=9 | lzma.PRESET_EXTREME)
    digest = hashlib.sha256(blob).hexdigest()
    snap = out_dir / SNAPSHOT_NAME
    with atomic_open(snap, "wb") as f:
        f.write(blob)
    with atomic_open(out_dir / CHECKSUM_NAME, "w", encoding="ascii") as f:
        f.write(f"{digest}  {SNAPSHOT_NAME}\n")
    for p in (snap, out_dir / CHECKSUM_NAME):
        os.chmod(p, 0o644)  # package data: world-readable (mkstemp creates 0600)
    return snap, digest, len(payload.encode("utf-8"))


def statistics(records: List[dict]) -> dict:
    import numpy as np

    label_lists = [point_labels(r) for r in records]
    freq: Dict[str, int] = {}
    for ls in label_lists:
        for name in ls:
            freq[name] = freq.get(name, 0) + 1
    f = np.array(sorted(freq.values(), reverse=True))
    return {
        "points": len(records),
        "labels": len(freq),
        "labels_per_point": float(np.mean([len(ls) for ls in label_lists])),
        "points_per_label": float(f.mean()),
        "frac_labels_lt5": float((f < 5).mean()),
        "frac_labels_eq1": float((f == 1).mean()),
        "top_labels": sorted(freq.items(), key=lambda kv: (-kv[1], kv[0]))[:10],
    }


# --------------------------------------------------------------------------- apt download


def apt_download(lists_dir: Path, suite: str, component: str, arch: str) -> Tuple[List[Path], List[Path]]:
    """Run ``apt-get update`` into ``lists_dir`` and return (Packages files, Translation files)."""
    (lists_dir / "partial").mkdir(parents=True, exist_ok=True)
    os.chmod(lists_dir, 0o755)  # apt's download sandbox user (_apt) must reach partial/
    conf = lists_dir.parent / "apt.conf"
    # The system's update hooks (appstream, packagekit) would act on the system's lists: clear them.
    conf.write_text("#clear APT::Update::Post-Invoke-Success;\n#clear APT::Update::Post-Invoke;\n")
    opts = [
        "-c", str(conf),
        "-o", f"Dir::State::Lists={lists_dir}",
        "-o", f"Dir::Cache={lists_dir.parent / 'cache'}",
        "-o", "Acquire::Languages=en",
        "-o", "Acquire::GzipIndexes=false",
        "-o", "APT::Get::List-Cleanup=false",
    ]
    print("running apt-get update into", lists_dir, flush=True)
    proc = subprocess.run(["apt-get", "update", *opts], capture_output=True, text=True)
    sys.stdout.write(proc.stdout)
    sys.stderr.write(proc.stderr)
    if proc.returncode != 0:
        raise SystemExit(f"apt-get update failed with exit status {proc.returncode} (see above)")

    def targets(*filters: str) -> List[Path]:
        out = subprocess.run(
            ["apt-get", "indextargets", *opts, "--format", "$(FILENAME)", *filters],
            check=True, capture_output=True, text=True,
        ).stdout
        return [Path(line) for line in out.split() if line and Path(line).exists()]

    pkgs = targets("Identifier: Packages", f"Codename: {suite}", f"Component: {component}",
                   f"Architecture: {arch}")
    trans = targets("Identifier: Translations", f"Codename: {suite}", f"Component: {component}",
                    "Language: en")
    if not pkgs:
        raise SystemExit(
            f"apt's configuration has no downloaded Packages index for {suite}/{component}/{arch}: "
            "add that suite to the sources list or pass --packages/--translations"
        )
    if not trans:
        print(f"warning: no Translation-en for {suite}/{component}: long descriptions missing", file=sys.stderr)
    return pkgs, trans


def main(argv: Optional[List[str]] = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--packages", nargs="+", type=Path, help="Packages files (plain/.xz/.gz/...); default: download with apt")
    ap.add_argument("--translations", nargs="*", type=Path, default=[], help="Translation-en files")
    ap.add_argument("--out", type=Path, default=REPO / "xmr" / "data" / "snapshots", help="output folder")
    ap.add_argument("--suite", default="bookworm", help="codename of the release (source a)")
    ap.add_argument("--component", default="main")
    ap.add_argument("--arch", default="amd64")
    ap.add_argument("--keep-lists", type=Path, default=None,
                    help="download the apt lists into this folder and keep it (default: a temporary one)")
    args = ap.parse_args(argv)

    t0 = time.perf_counter()
    tmp = None
    try:
        if args.packages:
            pkg_files, trans_files = args.packages, args.translations
        else:
            if args.translations:
                ap.error("--translations needs --packages")
            if args.keep_lists:
                lists = args.keep_lists.resolve()
            else:
                tmp = Path(tempfile.mkdtemp(prefix="xmr-apt-"))
                os.chmod(tmp, 0o755)
                lists = tmp / "lists"
            pkg_files, trans_files = apt_download(lists, args.suite, args.component, args.arch)
        print("Packages:", *pkg_files, sep="\n  ")
        print("Translations:", *trans_files, sep="\n  ")
        packages, pcounts = read_packages(list(pkg_files), args.arch)
        by_md5, by_name = read_translations(list(trans_files))
        records, dcounts = build_records(packages, by_md5, by_name)
    finally:
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)
    snap, digest, raw_size = write_snapshot(records, args.out)

    stats = statistics(records)
    print(f"stanzas read: {pcounts['stanzas']}, other architectures skipped: {pcounts['other_arch']}, "
          f"duplicate package stanzas: {pcounts['duplicates']} (newest version kept)")
    print(f"packages ({args.arch}+all): {len(packages)}; with Depends or Pre-Depends (points): {stats['points']}")
    print(f"long descriptions: {dcounts['with_long_description']} "
          f"(matched by md5 {dcounts['long_by_md5']}, by name {dcounts['long_by_name']})")
    print(f"labels: {stats['labels']}; labels/point {stats['labels_per_point']:.2f}; "
          f"points/label {stats['points_per_label']:.2f}; labels with <5 positives "
          f"{stats['frac_labels_lt5']:.1%}; with 1 positive {stats['frac_labels_eq1']:.1%}")
    print("most frequent labels:", ", ".join(f"{n} ({c})" for n, c in stats["top_labels"]))
    print(f"snapshot: {snap} ({os.path.getsize(snap) / 1e6:.2f} MB xz, {raw_size / 1e6:.1f} MB raw)")
    print(f"sha256: {digest}")
    print(f"done in {time.perf_counter() - t0:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
