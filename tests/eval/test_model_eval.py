"""evaluate_model: predict k + the largest per-row count of filter pairs, then score with them."""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp

from xmr.data.dataset import XMCDataset
from xmr.eval import evaluate
from xmr.eval.model_eval import evaluate_model, filter_extra


class ScoreTable:
    """A model whose scores are a fixed dense table (exact top-k of each row)."""

    def __init__(self, S):
        self.S = np.asarray(S, np.float32)
        self.asked = []

    def predict(self, X, k):
        self.asked.append(k)
        S = self.S[: X.shape[0]]
        ids = np.argsort(-S, axis=1, kind="stable")[:, :k]
        return np.take_along_axis(S, ids, 1), ids.astype(np.int64)


def test_filter_pairs_do_not_shorten_the_ranking():
    # row 0 ranks 0 > 1 > 2 > 3; label 0 is a filtered reciprocal pair, 1 is the true label
    S = [[4, 3, 2, 1], [1, 2, 3, 4]]
    Y = sp.csr_matrix(np.array([[0, 1, 0, 0], [0, 0, 0, 1]], np.float32))
    ds = XMCDataset("t", X_trn=sp.csr_matrix((2, 3)), Y_trn=Y, X_tst=sp.csr_matrix((2, 3)),
                    Y_tst=Y, filter_pairs=np.array([[0, 0]]))
    model = ScoreTable(S)
    m = evaluate_model(model, ds, ks=(1,))
    assert model.asked == [2] and filter_extra(ds.filter_pairs) == 1
    assert m["P@1"] == 1.0  # after removing label 0, row 0's top-1 is its true label 1
    # without the extra label the filtered ranking would be empty for row 0
    _, ids = ScoreTable(S).predict(ds.X_tst, 1)
    assert evaluate(Y, ids, ks=(1,), filter_pairs=ds.filter_pairs)["P@1"] == 0.5
    # filter pairs are a test-split rule: the train split is scored without them
    model.asked.clear()
    evaluate_model(model, ds, ks=(1, 3), split="train")
    assert model.asked == [3]
