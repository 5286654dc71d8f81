"""How good is a teacher? The paper's criterion, measured on out-of-fold points.

Menon et al. (2020) show that what a distilling student gains depends on how well the teacher
estimates p*(y|x) — its log-loss and calibration — not on its accuracy alone. For a store of
out-of-fold scores on the training points (each point scored by a model that did not see it)
:func:`teacher_report` gives, against the points' labels:

* ``log_loss``: −Σ_j y_j log q̃_j with y uniform over the positives and q̃ = (1 − ε)·q + ε/L
  (q = softmax(t/τ) over the row's top-K; ε = 1e-3 keeps a positive outside the top-K finite);
* ``top_k_recall``: share of positives inside the stored top-K (mass the teacher can move);
* ``ece``: expected calibration error of the top-1 confidence against "the top label is a
  positive" (15 equal-width bins, Guo et al., *On Calibration of Modern Neural Networks*, 2017);
* ``P@1``, ``P@5``.
A store that scores its own training points (``meta.out_of_fold`` false) is flagged: its
figures are optimistic.

:func:`calibrate_temperature` picks the teacher temperature τ_t that minimises the ECE on the
same out-of-fold points (temperature scaling, Guo et al. 2017, fitted on held-out scores as
there). Tree teachers need it: their renormalised top-K spreads the mass of a point's several
likely labels, so the top-1 confidence sits far below its hit rate (debian-deps: ECE 0.37 at
τ = 1, 0.17 at τ = 0.5). The log-loss against y uniform over the positives is *not* the
criterion for τ: it rewards spreading mass over all positives, whatever the top-1 confidence.
"""

from __future__ import annotations

from typing import Dict, Optional

import numpy as np
import scipy.sparse as sp

from xmr.teachers.combine import store_probabilities
from xmr.teachers.store import TeacherStore


def teacher_report(store: TeacherStore, Y, tau: float = 1.0, rows: Optional[np.ndarray] = None,
                   eps: float = 1e-3, bins: int = 15) -> Dict[str, float]:
    """Quality figures of ``store`` against labels ``Y`` [N, L] (see the module docstring)."""
    Y = sp.csr_matrix(Y, dtype=np.float64)
    store.check_matches(Y.shape[0], Y.shape[1], "the labels")
    Q = store_probabilities(store, tau)
    if rows is not None:
        Q, Y = Q[rows], Y[rows]
    n, L = Y.shape
    keep = np.diff(Y.indptr) > 0
    Q, Y = Q[keep], Y[keep]
    npos = np.diff(Y.indptr).astype(np.float64)
    Yn = sp.diags(1.0 / npos) @ Y  # uniform over positives
    hit = Y.multiply(Q > 0)
    recall = float(np.asarray(hit.sum(1)).ravel().sum() / npos.sum())
    # Σ_j y_j log q̃_j over each row's positives
    Yq = Yn.tocoo()
    qv = np.asarray(Q[Yq.row, Yq.col]).ravel()
    ll = -np.bincount(Yq.row, weights=Yq.data * np.log((1 - eps) * qv + eps / L),
                      minlength=Y.shape[0])
    # top-1 and top-5 from the store's order (rows are sorted by decreasing logit)
    Q = Q.tocsr()
    top1_conf = np.zeros(Q.shape[0])
    top1_hit = np.zeros(Q.shape[0])
    p5 = np.zeros(Q.shape[0])
    for i in range(Q.shape[0]):  # vectorising this buys little next to the sparse products
        a, b = Q.indptr[i], Q.indptr[i + 1]
        if b == a:
            continue
        order = np.argsort(-Q.data[a:b], kind="stable")
        ids = Q.indices[a:b][order]
        pos = Y.indices[Y.indptr[i]:Y.indptr[i + 1]]
        top1_conf[i] = Q.data[a:b][order[0]]
        top1_hit[i] = ids[0] in pos
        p5[i] = np.isin(ids[:5], pos).sum() / 5.0
    edges = np.linspace(0, 1, bins + 1)
    which = np.clip(np.digitize(top1_conf, edges[1:-1]), 0, bins - 1)
    ece = 0.0
    for b in range(bins):
        m = which == b
        if m.any():
            ece += m.mean() * abs(top1_hit[m].mean() - top1_conf[m].mean())
    return {"rows": int(keep.sum()), "log_loss": float(ll.mean()), "top_k_recall": recall,
            "ece": float(ece), "P@1": float(top1_hit.mean()), "P@5": float(p5.mean()),
            "out_of_fold": bool(store.meta.get("out_of_fold", False)), "tau": float(tau)}


TEMPERATURE_GRID = (0.25, 0.35, 0.5, 0.7, 1.0, 1.4, 2.0)


def calibrate_temperature(store: TeacherStore, Y, rows: Optional[np.ndarray] = None,
                          grid=TEMPERATURE_GRID) -> Dict[str, object]:
    """The τ of ``grid`` with the lowest out-of-fold ECE: ``{"tau": τ*, "grid": [{"tau",
    "ece", "log_loss"}, ...]}`` (ties: the τ closest to 1)."""
    if not grid or any(not (t > 0) for t in grid):
        raise ValueError(f"grid: expected positive temperatures, got {list(grid)!r}")
    table = []
    for t in grid:
        r = teacher_report(store, Y, tau=float(t), rows=rows)
        table.append({"tau": float(t), "ece": r["ece"], "log_loss": r["log_loss"]})
    best = min(table, key=lambda e: (round(e["ece"], 9), abs(np.log(e["tau"]))))
    return {"tau": best["tau"], "grid": table}
