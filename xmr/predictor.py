"""Predict labels by name for new raw text with a model trained on a text dataset.

A model folder written by :func:`xmr.train.run.run_training` from a TSV or LF dataset holds
``vectorizer/`` (the TF-IDF fitted on the training texts, JSON + ``.npy``; never a pickle) and
``labels.txt`` (the label names, line j = label j)::

    >>> p = TextPredictor.load("runs/x/model")              # doctest: +SKIP
    >>> p.predict(["a new document"], k=3)                  # doctest: +SKIP
    [[('label-a', 4.1), ('label-b', 3.7), ('label-c', 1.2)]]
"""

from __future__ import annotations

from pathlib import Path
from typing import List, Sequence, Tuple

import numpy as np

from xmr.errors import FormatError, MetadataMismatchError


class TextPredictor:
    """An :class:`xmr.models.XMRModel` with its vectorizer and label names."""

    def __init__(self, model, vectorizer, label_names: Sequence[str]):
        if vectorizer.num_features != model.num_features:
            raise MetadataMismatchError(f"the vectorizer has {vectorizer.num_features} features; "
                                        f"the model expects {model.num_features}")
        if len(label_names) != model.num_labels:
            raise MetadataMismatchError(f"{len(label_names)} label names for a model of "
                                        f"{model.num_labels} labels")
        self.model = model
        self.vectorizer = vectorizer
        self.label_names = list(label_names)

    @classmethod
    def load(cls, model_dir, device: str = "cpu") -> "TextPredictor":
        from xmr.data.text import TextVectorizer
        from xmr.models.xmr_model import XMRModel

        model_dir = Path(model_dir)
        vdir, names = model_dir / "vectorizer", model_dir / "labels.txt"
        if not (vdir / "vectorizer.json").is_file():
            raise FormatError(vdir / "vectorizer.json", None,
                              "the TF-IDF vectorizer of a model trained on a text dataset "
                              "(tsv or lf)", "no such file; predict with --dataset instead")
        if not names.is_file():
            raise FormatError(names, None, "the label names of the model", "no such file")
        model = XMRModel.load(model_dir, device=device)
        label_names = names.read_text(encoding="utf-8").split("\n")[:-1]
        return cls(model, TextVectorizer.load(vdir), label_names)

    def transform(self, texts: Sequence[str]):
        """TF-IDF rows ``csr float32 [n, D]`` of raw texts."""
        return self.vectorizer.transform(list(texts))

    def predict_ids(self, texts: Sequence[str], k: int = 5) -> Tuple[np.ndarray, np.ndarray]:
        """``(scores f32[n, k], ids i64[n, k])``, −1 padded."""
        if isinstance(texts, str):
            texts = [texts]
        return self.model.predict(self.transform(texts), k)

    def names_of(self, ids) -> List[str]:
        return [self.label_names[int(i)] for i in ids if int(i) >= 0]

    def predict(self, texts: Sequence[str], k: int = 5) -> List[List[Tuple[str, float]]]:
        """Per text, its top-k ``(label name, score)`` pairs."""
        scores, ids = self.predict_ids(texts, k)
        return [[(self.label_names[int(i)], float(s)) for s, i in zip(rs, ri) if i >= 0]
                for rs, ri in zip(scores, ids)]
