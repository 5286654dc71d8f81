"""Teacher ensembles: average several stores' probabilities into one store.

For rows aligned across the stores, ``p(x) = Σ_s w_s softmax(t_s(x) / τ_s)`` over the union
of their top-K labels (a label missing from a store's top-K counts as probability 0 there),
then the top ``k`` of p are kept with log p as the logit (so softmax at τ = 1 gives back p
renormalised over the kept labels). Averaging the probabilities of different model families
(a K-fold neural teacher and a tree teacher) is the classical way to get better-calibrated
class-probability estimates than either member (e.g. Lakshminarayanan et al., *Deep
Ensembles*, NeurIPS 2017), which is what Menon et al.'s analysis asks of a teacher.
"""

from __future__ import annotations

from typing import Optional, Sequence

import numpy as np
import scipy.sparse as sp

from xmr.objectives.targets import teacher_distribution
from xmr.teachers.store import TeacherStore, from_scores_csr


def store_probabilities(store: TeacherStore, tau: float = 1.0) -> sp.csr_matrix:
    """The store's distribution softmax(t / τ) over each row's top-K as a CSR matrix [N, L]."""
    return teacher_distribution(store.indptr, store.ids, store.logits, store.num_labels, tau)


def combine_stores(stores: Sequence[TeacherStore], weights: Optional[Sequence[float]] = None,
                   k: int = 32, taus: Optional[Sequence[float]] = None,
                   meta: Optional[dict] = None) -> TeacherStore:
    """Weighted average of the stores' probabilities, top-``k`` per row (see module docstring)."""
    if len(stores) < 1:
        raise ValueError("combine_stores: expected at least one store, got none")
    w = np.ones(len(stores)) if weights is None else np.asarray(weights, dtype=np.float64)
    if w.shape != (len(stores),) or np.any(w < 0) or not np.isfinite(w).all() or w.sum() <= 0:
        raise ValueError(f"weights: expected {len(stores)} non-negative finite numbers with a "
                         f"positive sum, got {list(np.atleast_1d(w))}")
    w = w / w.sum()
    taus = [1.0] * len(stores) if taus is None else list(taus)
    first = stores[0]
    for s in stores[1:]:
        s.check_matches(first.num_rows, first.num_labels,
                        f"{first.meta.get('path', 'the first store')}")
    P = sum(wi * store_probabilities(s, t) for wi, s, t in zip(w, stores, taus))
    P = sp.csr_matrix(P)
    P.data = np.log(np.maximum(P.data, 1e-30)).astype(np.float32)
    m = {"source": "ensemble", "members": [s.meta.get("path", s.meta.get("source")) for s in stores],
         "weights": w.tolist(), "taus": taus, "probabilities": True, "temperature": 1.0, "k": int(k)}
    m.update(meta or {})
    return from_scores_csr(P, k, m)
