"""The statistics every XMC user checks first (``xmr data info``), as PECOS and pyxclib print them.

On the training split (the split a model learns from; test points are counted separately):
N (train/test points), D (features), L (labels), labels per point, points per label (over all L
labels), the share of labels with fewer than 5 positives, and the label-frequency tail — the
share of labels with 0, 1, 2–4, 5–9, 10–99, 100–999 and ≥ 1000 training positives — plus the
frequency quantiles and the most frequent labels.
"""

from __future__ import annotations

from typing import Dict, List

import numpy as np

TAIL_BINS = ((0, 0), (1, 1), (2, 4), (5, 9), (10, 99), (100, 999), (1000, None))


def dataset_stats(ds, top: int = 5) -> Dict:
    """A JSON-able dict of the statistics of :class:`~xmr.data.dataset.XMCDataset` ``ds``."""
    Y = ds.Y_trn.tocsr()
    n_trn, L = Y.shape
    freq = np.bincount(Y.indices, minlength=L)[:L] if Y.nnz else np.zeros(L, np.int64)
    per_point = np.diff(Y.indptr)
    tail = {}
    for lo, hi in TAIL_BINS:
        sel = (freq >= lo) if hi is None else (freq >= lo) & (freq <= hi)
        tail[f"{lo}+" if hi is None else (str(lo) if lo == hi else f"{lo}-{hi}")] = \
            float(sel.mean()) if L else 0.0
    names = ds.label_names
    order = np.argsort(-freq, kind="stable")[:top]
    q = np.quantile(freq, [0.5, 0.9, 0.99]) if L else np.zeros(3)
    return {
        "name": ds.name,
        "n_train": int(n_trn),
        "n_test": int(ds.Y_tst.shape[0]),
        "num_features": int(ds.X_trn.shape[1]),
        "num_labels": int(L),
        "labels_per_point": float(Y.nnz / max(n_trn, 1)),
        "points_per_label": float(Y.nnz / max(L, 1)),
        "frac_labels_lt5": float((freq < 5).mean()) if L else 0.0,
        "points_without_labels": int((per_point == 0).sum()),
        "test_labels_per_point": float(ds.Y_tst.nnz / max(ds.Y_tst.shape[0], 1)),
        "label_frequency_tail": tail,
        "label_frequency_quantiles": {"50%": float(q[0]), "90%": float(q[1]), "99%": float(q[2]),
                                      "max": int(freq.max()) if L else 0},
        "top_labels": [{"label": int(j), "name": (str(names[j]) if names is not None else None),
                        "train_points": int(freq[j])} for j in order],
        "prop_a": float(ds.prop_a),
        "prop_b": float(ds.prop_b),
        "filter_pairs": int(len(ds.filter_pairs)) if ds.filter_pairs is not None else 0,
    }


def format_stats(st: Dict) -> str:
    """The text ``xmr data info PATH`` prints."""
    lines: List[str] = [
        f"{st['name']}  (label statistics over the training split)",
        f"  N (train / test)     : {st['n_train']:,} / {st['n_test']:,}",
        f"  D (features)         : {st['num_features']:,}",
        f"  L (labels)           : {st['num_labels']:,}",
        f"  labels per point     : {st['labels_per_point']:.2f} (test {st['test_labels_per_point']:.2f})",
        f"  points per label     : {st['points_per_label']:.2f}",
        f"  labels with < 5 pos. : {100 * st['frac_labels_lt5']:.1f} %",
        "  label-frequency tail : " + ", ".join(
            f"{k}: {100 * v:.1f} %" for k, v in st["label_frequency_tail"].items()),
        "  frequency quantiles  : " + ", ".join(
            f"{k} {v:g}" for k, v in st["label_frequency_quantiles"].items()),
        "  most frequent        : " + ", ".join(
            f"{t['name'] if t['name'] is not None else t['label']} ({t['train_points']:,})"
            for t in st["top_labels"]),
        f"  propensity A, B      : {st['prop_a']:g}, {st['prop_b']:g}",
    ]
    if st["points_without_labels"]:
        lines.append(f"  training points without labels: {st['points_without_labels']:,}")
    if st["filter_pairs"]:
        lines.append(f"  filtered test pairs  : {st['filter_pairs']:,}")
    return "\n".join(lines)
