"""xmr.eval: XMC ranking metrics (P@k, nDCG@k, R@k, PSP@k, PSnDCG@k), label propensities, and
the k-recall@k of an approximate label search (:func:`knn_recall`).

Conventions follow pyxclib (DESIGN §8): see :mod:`xmr.eval.metrics` for the exact formulas.
Importing this package imports numpy and scipy only; the Numba top-k kernel compiles on the
first call of :func:`topk_from_scores`.
"""

from xmr.eval.metrics import (
    evaluate,
    ndcg_at_k,
    precision_at_k,
    psndcg_at_k,
    psprecision_at_k,
    recall_at_k,
    remove_pairs,
    topk_from_scores,
)
from xmr.eval.model_eval import evaluate_model
from xmr.eval.propensity import inverse_propensity, label_frequency
from xmr.eval.recall import knn_recall

__all__ = [
    "evaluate",
    "evaluate_model",
    "inverse_propensity",
    "knn_recall",
    "label_frequency",
    "ndcg_at_k",
    "precision_at_k",
    "psndcg_at_k",
    "psprecision_at_k",
    "recall_at_k",
    "remove_pairs",
    "topk_from_scores",
]
