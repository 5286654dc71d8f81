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
from xmr.utils.validation import FLOAT16_MAX, check_int

FORMAT = "xmr-teacher-store"
FORMAT_VERSION = 1  #: what :meth:`TeacherStore.save` writes; :meth:`~TeacherStore.load` reads <= this
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
            format=FORMAT,
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
        """Open a store directory (arrays memory-mapped by default) and check its consistency:
        integer ``indptr``/``ids``, float ``logits``, complete (untruncated) arrays, ``indptr``
        from 0 to nnz and non-decreasing, ids in range, rows of at most ``k`` distinct labels
        sorted by decreasing logit (a shifted ``indptr`` breaks that order). ``meta.json`` is read
        by :func:`xmr.utils.artefacts.read_meta`: a ``format_version`` newer than
        :data:`FORMAT_VERSION` is refused. Every defect is a one-line :class:`FormatError`
        naming the file."""
        from xmr.utils.artefacts import read_meta
        from xmr.utils.validation import npy_load

        path = Path(path)
        for name in _FILES:
            if not (path / name).is_file():
                raise FormatError(path / name, None, "a teacher store file", "no such file")
        meta = read_meta(path / "meta.json", FORMAT, FORMAT_VERSION, "a teacher store")
        for key in ("num_rows", "num_labels"):
            v = meta.get(key)
            if isinstance(v, bool) or not isinstance(v, int) or v < 0:
                raise FormatError(path / "meta.json", None, f"{key}: a non-negative integer",
                                  repr(v))
        arrays = {}
        for name, kind in (("indptr", "iu"), ("ids", "iu"), ("logits", "f")):
            a = npy_load(path / f"{name}.npy", mmap=mmap)
            if a.dtype.kind not in kind:
                want = "integer" if kind == "iu" else "floating-point"
                raise FormatError(path / f"{name}.npy", None, f"an {want} array" if kind == "iu"
                                  else f"a {want} array", f"dtype {a.dtype}")
            arrays[name] = a
        store = cls(indptr=arrays["indptr"], ids=arrays["ids"], logits=arrays["logits"],
                    num_labels=int(meta["num_labels"]), meta={**meta, "path": str(path)})
        store._validate(path)
        return store

    def _validate(self, path) -> None:
        path = Path(path)
        n = self.meta.get("num_rows")
        if self.indptr.ndim != 1 or self.indptr.shape[0] != n + 1:
            raise FormatError(path / "indptr.npy", None, f"{n + 1} row pointers",
                              f"shape {self.indptr.shape}")
        indptr = np.asarray(self.indptr, dtype=np.int64)
        nnz = self.ids.shape[0] if self.ids.ndim == 1 else -1
        if self.ids.ndim != 1 or self.logits.shape != self.ids.shape:
            raise FormatError(path / "ids.npy", None, "ids and logits of the same length",
                              f"ids {self.ids.shape}, logits {self.logits.shape}")
        if indptr[0] != 0 or indptr[-1] != nnz:
            raise FormatError(path / "indptr.npy", None, f"row pointers from 0 to nnz={nnz}",
                              f"{int(indptr[0])} to {int(indptr[-1])}")
        lens = np.diff(indptr)
        if (lens < 0).any():
            r = int(np.argmax(lens < 0))
            raise FormatError(path / "indptr.npy", None, "non-decreasing row pointers",
                              f"indptr[{r + 1}]={int(indptr[r + 1])} < indptr[{r}]={int(indptr[r])}")
        k = self.meta.get("k")
        if isinstance(k, int) and not isinstance(k, bool) and k > 0 and lens.size and \
                int(lens.max()) > k:
            r = int(np.argmax(lens > k))
            raise FormatError(path / "indptr.npy", None, f"at most k={k} entries per row "
                              f"(meta.json)", f"{int(lens[r])} in row {r}")
        if nnz and (int(self.ids.min()) < 0 or int(self.ids.max()) >= self.num_labels):
            raise FormatError(path / "ids.npy", None,
                              f"label ids in [0, {self.num_labels})",
                              f"ids in [{int(self.ids.min())}, {int(self.ids.max())}]")
        if nnz:
            lg = np.asarray(self.logits, dtype=np.float32)
            if not np.isfinite(lg).all():
                raise FormatError(path / "logits.npy", None, "finite logits", "NaN or inf")
            # within a row, logits never increase: a misaligned indptr shows up as a rise
            up = np.diff(lg) > 0
            starts = indptr[1:-1]
            up[starts[(starts > 0) & (starts < nnz)] - 1] = False
            if up.any():
                e = int(np.argmax(up)) + 1
                r = int(np.searchsorted(indptr, e, side="right") - 1)
                raise FormatError(path / "indptr.npy", None, "rows sorted by decreasing logit "
                                  "(row pointers aligned with ids.npy and logits.npy)",
                                  f"a logit that rises inside row {r} (entry {e})")


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
    kept = logits[valid]
    if kept.size and not np.isfinite(kept).all():
        raise ValueError("logits: expected finite values for every listed id, got NaN or inf")
    if kept.size and float(np.abs(kept).max()) > FLOAT16_MAX:
        # fp16 storage would clip them to ±65504 and flatten the teacher's ranking
        raise ValueError(f"logits: expected values within the fp16 range ±{FLOAT16_MAX:.0f} of "
                         f"the store, got |logit| up to {float(np.abs(kept).max()):.6g}; rescale "
                         f"the scores (e.g. divide by a temperature) before building the store")
    if int(num_labels) < 1 or (ids[valid].size and int(ids[valid].max()) >= int(num_labels)):
        raise ValueError(f"ids: expected label ids in [0, {int(num_labels)}), got up to "
                         f"{int(ids[valid].max()) if ids[valid].size else None}")
    return TeacherStore(indptr=indptr, ids=ids[valid].astype(np.int32),
                        logits=kept.astype(np.float16),
                        num_labels=int(num_labels), meta=dict(meta or {}))


def from_scores_csr(scores, k: int, meta: Optional[dict] = None) -> TeacherStore:
    """Build a store from a CSR score matrix (e.g. another library's predictions), keeping the
    top ``k`` entries of each row."""
    import scipy.sparse as sp

    k = check_int("k", k, 1)
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
