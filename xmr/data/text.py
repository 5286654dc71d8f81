"""Labelled text: TSV files, LF ``*.json.gz`` files and a TF-IDF vectorizer saved without pickle.

**TSV** (``train.tsv``, ``test.tsv``, or one file split by seed): one point per line,
``text<TAB>label,label,...`` with labels by name. The labels are what follows the *last* tab
(the text may hold tabs); names are stripped of surrounding spaces; blank lines are skipped.
Label names are the sorted names of the training file; a name that occurs only in the test file
is an error (a model cannot learn a label it never saw, and a silently dropped positive would
inflate every metric).

**LF** (``trn.json.gz``, ``tst.json.gz``, optional ``lbl.json.gz``): one JSON object per line
with ``title`` (and ``content``) and ``target_ind`` (label ids); label names are the titles of
``lbl.json.gz``. Features come from the titles, as :mod:`xmr.data.prepare` does for the
registry's LF benchmarks.

**Features**: scikit-learn's ``TfidfVectorizer(sublinear_tf=True, min_df=min_df,
dtype=float32)`` fitted on the training split only and applied to both.
:class:`TextVectorizer` wraps it and saves it as plain data — ``vectorizer.json`` (parameters
and the vocabulary in column order) and ``idf.npy`` (``float64 [D]``) — so a model folder can
featurize new raw text (``xmr predict --text``) without ever unpickling a file.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple, Union

import numpy as np
import scipy.sparse as sp

from xmr.errors import FormatError
from xmr.utils.atomic import atomic_open

PathLike = Union[str, os.PathLike]

VECTORIZER_FORMAT = "xmr-tfidf"
VECTORIZER_VERSION = 1

#: the TfidfVectorizer parameters xmr sets and saves (everything else is scikit-learn's default)
_PARAMS = ("lowercase", "token_pattern", "ngram_range", "sublinear_tf", "norm", "use_idf",
           "smooth_idf", "min_df")


# --------------------------------------------------------------------------------------------
# TSV


def _show(text: str, limit: int = 40) -> str:
    return repr(text if len(text) <= limit else text[:limit] + "...")


def read_tsv(path: PathLike) -> Tuple[List[str], List[List[str]], List[int]]:
    """Read ``text<TAB>label,label,...`` lines → ``(texts, label_lists, line_numbers)``.

    Raises :class:`FormatError` naming the file and line for a line without a tab or with an
    empty label list.
    """
    texts: List[str] = []
    labels: List[List[str]] = []
    lines: List[int] = []
    with open(path, encoding="utf-8", errors="strict", newline="") as f:
        try:
            for lineno, line in enumerate(f, 1):
                line = line.rstrip("\r\n")
                if not line.strip():
                    continue
                if "\t" not in line:
                    raise FormatError(path, lineno, "'text<TAB>label,label,...'",
                                      f"no tab in {_show(line)}")
                text, _, lab = line.rpartition("\t")
                names = [x.strip() for x in lab.split(",")]
                names = list(dict.fromkeys(x for x in names if x))
                if not names:
                    raise FormatError(path, lineno, "at least one label name after the tab",
                                      f"an empty label list in {_show(line)}")
                texts.append(text)
                labels.append(names)
                lines.append(lineno)
        except UnicodeDecodeError as exc:
            raise FormatError(path, None, "UTF-8 text", f"undecodable bytes ({exc.reason} at "
                              f"byte {exc.start} of a line)") from None
    return texts, labels, lines


def read_text_lines(path: PathLike) -> List[str]:
    """One query per line (``xmr predict --text-file``); blank lines are skipped."""
    with open(path, encoding="utf-8") as f:
        return [ln.rstrip("\r\n") for ln in f if ln.strip()]


def label_matrix(label_lists: Sequence[Sequence[str]], index: Dict[str, int], path=None,
                 lines: Optional[Sequence[int]] = None, train_path=None) -> sp.csr_matrix:
    """Binary ``csr float32 [n, L]`` of the named labels; a name missing from ``index`` raises
    :class:`FormatError` naming ``path`` and the line."""
    indptr, indices = [0], []
    for i, names in enumerate(label_lists):
        for nm in names:
            j = index.get(nm)
            if j is None:
                where = f"the training file {Path(train_path).name}" if train_path else "training"
                raise FormatError(path, lines[i] if lines is not None else i + 1,
                                  f"label names that occur in {where}",
                                  f"{_show(nm)}, which appears only in the test file")
            indices.append(j)
        indptr.append(len(indices))
    Y = sp.csr_matrix((np.ones(len(indices), np.float32), np.asarray(indices, np.int32),
                       np.asarray(indptr, np.int64)), shape=(len(label_lists), len(index)))
    Y.sum_duplicates()
    Y.sort_indices()
    return Y


# --------------------------------------------------------------------------------------------
# the vectorizer


class TextVectorizer:
    """TF-IDF features of raw text, fitted on training texts, saved as JSON + ``.npy``.

    ``fit_transform(texts) → csr float32 [n, D]``, ``transform(texts)`` likewise; attributes
    after fitting: ``vocabulary_`` (term → column), ``idf_ f64[D]``.
    """

    def __init__(self, min_df: int = 1, sublinear_tf: bool = True):
        self.min_df = min_df
        self.sublinear_tf = sublinear_tf

    def _sk(self, vocabulary=None):
        from sklearn.feature_extraction.text import TfidfVectorizer

        return TfidfVectorizer(sublinear_tf=self.sublinear_tf, min_df=self.min_df,
                               dtype=np.float32, vocabulary=vocabulary)

    def fit_transform(self, texts: Sequence[str], path=None) -> sp.csr_matrix:
        """Fit on ``texts`` (``path``: the file they came from, named in errors)."""
        self._vec = self._sk()
        try:
            X = self._vec.fit_transform(list(texts))
        except ValueError as exc:  # "empty vocabulary; perhaps the documents only contain stop words"
            raise FormatError(path, None, f"training texts with words that occur in at least "
                              f"min_df={self.min_df} points", str(exc)) from None
        self.vocabulary_ = self._vec.vocabulary_
        self.idf_ = self._vec.idf_
        return sp.csr_matrix(X, dtype=np.float32)

    def transform(self, texts: Sequence[str]) -> sp.csr_matrix:
        return sp.csr_matrix(self._vec.transform(list(texts)), dtype=np.float32)

    @property
    def num_features(self) -> int:
        return len(self.vocabulary_)

    def save(self, folder: PathLike) -> Path:
        """Write ``folder/vectorizer.json`` and ``folder/idf.npy`` (atomically, each)."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        terms = [None] * len(self.vocabulary_)
        for t, j in self.vocabulary_.items():
            terms[j] = t
        params = {k: getattr(self._vec, k) for k in _PARAMS}
        params["ngram_range"] = list(params["ngram_range"])
        with atomic_open(folder / "idf.npy", "wb") as f:
            np.save(f, np.asarray(self.idf_, np.float64), allow_pickle=False)
        with atomic_open(folder / "vectorizer.json", "w", encoding="utf-8") as f:
            json.dump({"format": VECTORIZER_FORMAT, "format_version": VECTORIZER_VERSION,
                       "params": params, "vocabulary": terms}, f, ensure_ascii=False)
            f.write("\n")
        return folder

    @classmethod
    def load(cls, folder: PathLike) -> "TextVectorizer":
        """Read a vectorizer saved by :meth:`save` (plain JSON and a pickle-free ``.npy``);
        ``vectorizer.json`` goes through :func:`xmr.utils.artefacts.read_meta` (format
        ``xmr-tfidf``, ``format_version`` <= :data:`VECTORIZER_VERSION`)."""
        folder = Path(folder)
        jpath, ipath = folder / "vectorizer.json", folder / "idf.npy"
        for p in (jpath, ipath):
            if not p.is_file():
                raise FormatError(p, None, "a saved xmr TF-IDF vectorizer file", "no such file")
        from xmr.utils.artefacts import read_meta

        meta = read_meta(jpath, VECTORIZER_FORMAT, VECTORIZER_VERSION,
                         "a saved xmr TF-IDF vectorizer")
        terms = meta.get("vocabulary")
        idf = np.load(ipath, allow_pickle=False)
        if not isinstance(terms, list) or idf.shape != (len(terms),):
            raise FormatError(ipath, None, f"an idf array of shape ({len(terms or [])},)",
                              f"shape {idf.shape}")
        params = meta["params"]
        self = cls(min_df=params["min_df"], sublinear_tf=params["sublinear_tf"])
        vec = self._sk(vocabulary={t: j for j, t in enumerate(terms)})
        for k in _PARAMS:
            setattr(vec, k, tuple(params[k]) if k == "ngram_range" else params[k])
        vec.idf_ = idf
        self._vec = vec
        self.vocabulary_ = vec.vocabulary
        self.idf_ = idf
        return self


# --------------------------------------------------------------------------------------------
# conversions → (matrices, label names, vectorizer)

Converted = Tuple[Dict[str, sp.csr_matrix], List[str], TextVectorizer]


def convert_tsv(train: PathLike, test: PathLike, min_df: int = 1) -> Converted:
    """``train.tsv`` + ``test.tsv`` → X/Y matrices, label names (sorted names of the training
    file) and the vectorizer fitted on the training texts."""
    t_trn, l_trn, n_trn = read_tsv(train)
    if not t_trn:
        raise FormatError(train, None, "at least one 'text<TAB>labels' line", "no points")
    t_tst, l_tst, n_tst = read_tsv(test)
    names = sorted({nm for ls in l_trn for nm in ls})
    index = {nm: j for j, nm in enumerate(names)}
    Y_trn = label_matrix(l_trn, index, train, n_trn)
    Y_tst = label_matrix(l_tst, index, test, n_tst, train_path=train)
    vec = TextVectorizer(min_df=min_df)
    X_trn = vec.fit_transform(t_trn, train)
    X_tst = vec.transform(t_tst)
    return {"X_trn": X_trn, "Y_trn": Y_trn, "X_tst": X_tst, "Y_tst": Y_tst}, names, vec


def convert_tsv_split(path: PathLike, test_fraction: float, seed: int, min_df: int = 1
                      ) -> Tuple[Dict[str, sp.csr_matrix], List[str], TextVectorizer,
                                 np.ndarray, np.ndarray]:
    """One TSV file split by :func:`xmr.data.debian.split_indices` (seeded permutation). The
    label space is every name in the file (as debian-deps); TF-IDF is fit on the training rows.
    Returns also the row numbers (0-based, in file order of points) of the two splits."""
    from xmr.data.debian import split_indices

    texts, labels, lines = read_tsv(path)
    if len(texts) < 2:
        raise FormatError(path, None, "at least two points to split", f"{len(texts)}")
    trn, tst = split_indices(len(texts), test_fraction, seed)
    names = sorted({nm for ls in labels for nm in ls})
    index = {nm: j for j, nm in enumerate(names)}
    Y = label_matrix(labels, index, path, lines)
    vec = TextVectorizer(min_df=min_df)
    X_trn = vec.fit_transform([texts[i] for i in trn], path)
    X_tst = vec.transform([texts[i] for i in tst])
    return ({"X_trn": X_trn, "Y_trn": Y[trn], "X_tst": X_tst, "Y_tst": Y[tst]}, names, vec,
            trn, tst)


def convert_lf(trn: PathLike, tst: PathLike, lbl: Optional[PathLike], min_df: int = 1
               ) -> Tuple[Dict[str, sp.csr_matrix], Optional[List[str]], TextVectorizer]:
    """LF ``trn/tst(/lbl).json.gz`` → TF-IDF of the titles (fit on train), ``target_ind`` labels,
    label titles as names (or ``None`` without ``lbl.json.gz``, L = largest id + 1)."""
    from xmr.data.prepare import _lf_labels, _read_json_lines

    r_trn = _read_json_lines(Path(trn))
    r_tst = _read_json_lines(Path(tst))
    names = None
    if lbl is not None:
        names = [str(r.get("title", "")).replace("\n", " ") for r in _read_json_lines(Path(lbl))]
        L = len(names)
    else:
        ids = [j for r in r_trn + r_tst for j in (r.get("target_ind") or [])
               if isinstance(j, int)]
        L = max(ids) + 1 if ids else 0
    vec = TextVectorizer(min_df=min_df)
    X_trn = vec.fit_transform([str(r.get("title", "")) for r in r_trn], trn)
    X_tst = vec.transform([str(r.get("title", "")) for r in r_tst])
    mats = {"X_trn": X_trn, "Y_trn": _lf_labels(Path(trn), r_trn, L),
            "X_tst": X_tst, "Y_tst": _lf_labels(Path(tst), r_tst, L)}
    return mats, names, vec
