"""The teacher top-K store: per training point, the teacher's K best labels and raw logits.

Menon et al. (2020, §5 "double distillation") use a teacher twice: its probabilities as soft
targets and its top-scored labels as negatives. Both need only the teacher's top-K per point, so
a teacher — an xmr model, another library's predictions, anything — is stored as a CSR matrix:

``indptr i64[N+1]``, ``ids i32[nnz]``, ``logits f16[nnz]`` (raw logits, so the temperature τ_t
can change at training time without re-exporting), plus ``meta.json`` with the row and label
counts, K, the temperature the logits are meant for and the source's identity. Arrays are
``.npy`` files memory-mapped on load; no pickle is ever read.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional, Tuple

import numpy as np

import xmr
from xmr.errors import FormatError, MetadataMismatchError
from xmr.utils.atomic import atomic_dir

FORMAT_VERSION = 1
_FILES = ("indptr.npy", "ids.npy", "logits.npy", "meta.json")


@dataclass
class TeacherStore:
    """A teacher's top-K labels and raw logits per row (CSR), memory-mapped when loaded.

    Rows are sorted by decreasing logit. ``logits`` are raw (pre-temperature) scores; the
    teacher distribution over a row's top-K is ``softmax(logits / tau)``.
    """

    indptr: np.ndarray  # i64[N+1]
    ids: np.ndarray  # i32[nnz]
    logits: np.ndarray  # f16[nnz]
    num_labels: int
    meta: dict = field(default_factory=dict)

    @property
    def num_rows(self) -> int:
        return int(self.indptr.shape[0] - 1)

    def rows(self, rows: np.ndarray) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Gather the given rows as a CSR triplet ``(indptr i64[b+1], ids i64[nnz], logits f32[nnz])``."""
        rows = np.asarray(rows, dtype=np.int64)
        start = self.indptr[rows]
        lens = self.indptr[rows + 1] - start
        out_ptr = np.zeros(rows.shape[0] + 1, dtype=np.int64)
        np.cumsum(lens, out=out_ptr[1:])
        # positions of every selected entry, without a Python loop
        pos = np.repeat(start - out_ptr[:-1], lens) + np.arange(out_ptr[-1], dtype=np.int64)
        return out_ptr, np.asarray(self.ids[pos], dtype=np.int64), np.asarray(self.logits[pos], dtype=np.float32)

    def check_matches(self, num_rows: int, num_labels: int, what: str = "the dataset") -> None:
        """Raise :class:`MetadataMismatchError` unless the store fits ``num_rows × num_labels``."""
        if self.num_rows != num_rows or self.num_labels != num_labels:
            src = self.meta.get("path", "teacher store")
            raise MetadataMismatchError(
                f"{src} holds {self.num_rows} rows over {self.num_labels} labels; "
                f"{what} has {num_rows} rows over {num_labels} labels"
            )

    # ----------------------------------------------------------------------------- I/O
    def save(self, path) -> Path:
        """Write the store as a directory, atomically."""
        path = Path(path)
        meta = dict(self.meta)
        meta.update(
            format="xmr-teacher-store",
            format_version=FORMAT_VERSION,
            xmr_version=xmr.__version__,
            num_rows=self.num_rows,
            num_labels=int(self.num_labels),
            nnz=int(self.ids.shape[0]),
        )
        meta.pop("path", None)
        with atomic_dir(path) as tmp:
            np.save(tmp / "indptr.npy", np.ascontiguousarray(self.indptr, dtype=np.int64))
            np.save(tmp / "ids.npy", np.ascontiguousarray(self.ids, dtype=np.int32))
            np.save(tmp / "logits.npy", np.ascontiguousarray(self.logits, dtype=np.float16))
            (tmp / "meta.json").write_text(json.dumps(meta, indent=2) + "\n")
        return path

    @classmethod
    def load(cls, path, mmap: bool = True) -> "TeacherStore":
        """Open a store directory (arrays memory-mapped by default) and check its consistency."""
        path = Path(path)
        for name in _FILES:
            if not (path / name).is_file():
                raise FormatError(path / name, None, "a teacher store file", "no such file")
        meta = json.loads((path / "meta.json").read_text())
        if meta.get("format") != "xmr-teacher-store":
            raise FormatError(path / "meta.json", None, "format 'xmr-teacher-store'",
                              repr(meta.get("format")))
        if meta.get("format_version") != FORMAT_VERSION:
            raise FormatError(path / "meta.json", None, f"format_version {FORMAT_VERSION}",
                              repr(meta.get("format_version")))
        mode = "r" if mmap else None
        indptr = np.load(path / "indptr.npy", mmap_mode=mode, allow_pickle=False)
        ids = np.load(path / "ids.npy", mmap_mode=mode, allow_pickle=False)
        logits = np.load(path / "logits.npy", mmap_mode=mode, allow_pickle=False)
        store = cls(indptr=indptr, ids=ids, logits=logits, num_labels=int(meta["num_labels"]),
                    meta={**meta, "path": str(path)})
        store._validate(path)
        return store

    def _validate(self, path) -> None:
        n = self.meta.get("num_rows")
        if self.indptr.ndim != 1 or self.indptr.shape[0] != n + 1:
            raise FormatError(Path(path) / "indptr.npy", None, f"{n + 1} row pointers",
                              f"shape {self.indptr.shape}")
        nnz = int(self.indptr[-1])
        if self.ids.shape != (nnz,) or self.logits.shape != (nnz,):
            raise FormatError(Path(path) / "ids.npy", None, f"{nnz} entries",
                              f"ids {self.ids.shape}, logits {self.logits.shape}")
        if nnz and (int(self.ids.min()) < 0 or int(self.ids.max()) >= self.num_labels):
            raise FormatError(Path(path) / "ids.npy", None,
                              f"label ids in [0, {self.num_labels})",
                              f"ids in [{int(self.ids.min())}, {int(self.ids.max())}]")


def from_topk(ids: np.ndarray, logits: np.ndarray, num_labels: int, meta: Optional[dict] = None) -> TeacherStore:
    """Build a store from dense top-k arrays ``ids i64[n,k]`` (−1 = padding) and ``logits f32[n,k]``."""
    ids = np.asarray(ids)
    logits = np.asarray(logits, dtype=np.float32)
    if ids.shape != logits.shape or ids.ndim != 2:
        raise ValueError(f"ids and logits must have the same 2-D shape; got {ids.shape} and {logits.shape}")
    valid = ids >= 0
    order = np.argsort(-np.where(valid, logits, -np.inf), axis=1, kind="stable")
    ids = np.take_along_axis(ids, order, 1)
    logits = np.take_along_axis(logits, order, 1)
    valid = np.take_along_axis(valid, order, 1)
    indptr = np.zeros(ids.shape[0] + 1, dtype=np.int64)
    np.cumsum(valid.sum(1), out=indptr[1:])
    return TeacherStore(indptr=indptr, ids=ids[valid].astype(np.int32),
                        logits=np.clip(logits[valid], -65000, 65000).astype(np.float16),
                        num_labels=int(num_labels), meta=dict(meta or {}))


def from_scores_csr(scores, k: int, meta: Optional[dict] = None) -> TeacherStore:
    """Build a store from a CSR score matrix (e.g. another library's predictions), keeping the
    top ``k`` entries of each row."""
    import scipy.sparse as sp

    S = sp.csr_matrix(scores)
    n, L = S.shape
    ids = np.full((n, k), -1, dtype=np.int64)
    vals = np.full((n, k), -np.inf, dtype=np.float32)
    for i in range(n):  # rows are short (a library's top-100 at most); a loop is fine here
        lo, hi = S.indptr[i], S.indptr[i + 1]
        row_ids, row_vals = S.indices[lo:hi], S.data[lo:hi]
        top = np.argsort(-row_vals, kind="stable")[:k]
        ids[i, : top.size] = row_ids[top]
        vals[i, : top.size] = row_vals[top]
    return from_topk(ids, vals, L, meta)
