"""Evaluate a model on a dataset split: the one place that owns the filter-pairs rule.

The LF benchmarks list reciprocal (test row, label) pairs that are removed from both the ranking
and the ground truth before scoring (:func:`xmr.eval.metrics.evaluate`, ``filter_pairs``). A
removed label must not shorten the ranking, so the model is asked for ``max(ks) + extra`` labels,
``extra`` being the largest number of filtered pairs of any one row. Filter pairs apply to the
test split only. PSP@k uses inverse propensities of the *training* labels with the dataset's
constants ``prop_a``, ``prop_b``.
"""

from __future__ import annotations

import time
from typing import Dict, Optional, Sequence

import numpy as np


def filter_extra(pairs: Optional[np.ndarray]) -> int:
    """The largest number of filtered labels of one row (0 without pairs)."""
    if pairs is None or len(pairs) == 0:
        return 0
    return int(np.bincount(np.asarray(pairs)[:, 0]).max())


def evaluate_model(model, dataset, ks: Sequence[int] = (1, 3, 5), split: str = "test",
                   inv_prop: Optional[np.ndarray] = None, by_frequency: bool = False) -> Dict[str, float]:
    """P@k, nDCG@k, R@k, PSP@k, PSnDCG@k of ``model`` on ``dataset``'s ``split``.

    ``model`` is anything with ``predict(X, k) → (scores f32[n, k], ids i64[n, k])`` (−1 padded),
    e.g. :class:`xmr.models.XMRModel`. In a distributed run every rank must call this (the
    prediction is collective). Returns the metrics plus ``predict_ms_per_query`` (and with
    ``by_frequency`` the per-bucket table of :func:`xmr.eval.frequency.by_frequency`).
    """
    from xmr.eval.metrics import evaluate
    from xmr.eval.propensity import inverse_propensity

    if split not in ("train", "test"):
        raise ValueError(f"split: expected 'train' or 'test', got {split!r}")
    ks = tuple(int(k) for k in ks)
    if not ks or min(ks) < 1:
        raise ValueError(f"ks: expected positive cut-offs, got {ks}")
    X, Y = (dataset.X_trn, dataset.Y_trn) if split == "train" else (dataset.X_tst, dataset.Y_tst)
    pairs = dataset.filter_pairs if split == "test" else None
    if inv_prop is None:
        inv_prop = inverse_propensity(dataset.Y_trn, A=dataset.prop_a, B=dataset.prop_b)
    t0 = time.perf_counter()
    _, ids = model.predict(X, max(ks) + filter_extra(pairs))
    ms = 1000.0 * (time.perf_counter() - t0) / max(X.shape[0], 1)
    m = evaluate(Y, ids, ks=ks, inv_prop=inv_prop, filter_pairs=pairs)
    m["predict_ms_per_query"] = ms
    if by_frequency:
        from xmr.eval.frequency import by_frequency as _by_frequency

        m["by_frequency"] = _by_frequency(dataset.Y_trn, Y, ids, inv_prop, filter_pairs=pairs)
    return m
