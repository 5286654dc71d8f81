"""Head vs tail: P@1 and PSP@1 per bucket of label frequency (issue 13, point 5).

Each test point is put in the bucket of the training frequency of its **most frequent positive
label** (0, 1–4, 5–19, 20–99, 100–999, ≥ 1000 training points); P@1 and PSP@1 are then
computed within each bucket (PSP@1 normalised by the best achievable PSP@1 of the bucket's
points, as :func:`xmr.eval.evaluate`). This is the view that explains a model that wins on the
head and loses on the tail (or the reverse) — what XMC users ask of a new method.
"""

from __future__ import annotations

from typing import Dict, List, Optional, Sequence

import numpy as np
import scipy.sparse as sp

#: lower edges of the buckets (a bucket holds frequencies in [edge_i, edge_{i+1}))
EDGES = (0, 1, 5, 20, 100, 1000)


def bucket_names(edges: Sequence[int] = EDGES) -> List[str]:
    out = []
    for a, b in zip(edges, list(edges[1:]) + [None]):
        out.append(f">= {a}" if b is None else (str(a) if b == a + 1 else f"{a}-{b - 1}"))
    return out


def by_frequency(Y_trn, Y_tst, ids, inv_prop: Optional[np.ndarray] = None,
                 edges: Sequence[int] = EDGES, filter_pairs=None) -> List[Dict]:
    """Per-bucket ``{"bucket", "points", "P@1", "PSP@1"}`` (see the module docstring).

    ``ids i64[n, k]``: the ranked predictions of the test points (k ≥ 1). Points without any
    positive are left out (as the metrics do)."""
    from xmr.eval.metrics import evaluate

    freq = np.asarray(sp.csr_matrix(Y_trn).sum(0)).ravel()
    Y = sp.csr_matrix(Y_tst)
    lens = np.diff(Y.indptr)
    top = np.zeros(Y.shape[0])
    has = lens > 0
    if Y.nnz:
        f = freq[Y.indices]
        top[has] = np.maximum.reduceat(f, Y.indptr[:-1][has])
    which = np.searchsorted(np.asarray(edges), top, side="right") - 1
    ids = np.asarray(ids)
    out = []
    for b, name in enumerate(bucket_names(edges)):
        rows = np.flatnonzero(has & (which == b))
        row = {"bucket": name, "points": int(rows.size)}
        if rows.size:
            m = evaluate(Y[rows], ids[rows], ks=(1,), inv_prop=inv_prop,
                         filter_pairs=_subset_pairs(filter_pairs, rows))
            row["P@1"] = float(m["P@1"])
            if inv_prop is not None:
                row["PSP@1"] = float(m["PSP@1"])
        out.append(row)
    return out


def _subset_pairs(pairs, rows):
    if pairs is None or not len(pairs):
        return None
    new = -np.ones(int(max(rows.max(), pairs[:, 0].max())) + 1, dtype=np.int64)
    new[rows] = np.arange(rows.size)
    keep = pairs[:, 0] < new.size
    p = pairs[keep]
    p = p[new[p[:, 0]] >= 0]
    return np.stack([new[p[:, 0]], p[:, 1]], axis=1) if len(p) else None


def plot_by_frequency(tables: Dict[str, List[Dict]], path, title: str = "") -> None:
    """A PNG of P@1 and PSP@1 per bucket, one bar group per method (``{method: table}``)."""
    from xmr.utils.optional import require

    require("matplotlib")
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    methods = list(tables)
    names = [r["bucket"] for r in tables[methods[0]]]
    x = np.arange(len(names))
    w = 0.8 / max(len(methods), 1)
    fig, axes = plt.subplots(1, 2, figsize=(11, 3.8))
    for ax, key in zip(axes, ("P@1", "PSP@1")):
        for i, m in enumerate(methods):
            vals = [r.get(key, np.nan) for r in tables[m]]
            ax.bar(x + i * w - 0.4 + w / 2, vals, w, label=m)
        ax.set_xticks(x)
        ax.set_xticklabels(names)
        ax.set_xlabel("training frequency of the point's most frequent positive")
        ax.set_ylabel(key)
    pts = [r["points"] for r in tables[methods[0]]]
    axes[0].set_title(title or "per bucket (points: " + ", ".join(map(str, pts)) + ")", fontsize=9)
    axes[1].legend(fontsize=7)
    fig.tight_layout()
    from xmr.utils.atomic import atomic_open

    with atomic_open(path, "wb") as f:
        fig.savefig(f, format="png", dpi=110)
    plt.close(fig)
