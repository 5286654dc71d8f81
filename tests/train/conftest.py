import numpy as np
import pytest
import scipy.sparse as sp


def planted_sparse(n=400, D=300, L=60, seed=0):
    """Each label owns a few features; a point's labels are 1-3 labels and its features are
    drawn from them (plus noise), so a model can learn the mapping."""
    rng = np.random.default_rng(seed)
    feat_of = rng.integers(0, D, size=(L, 4))
    rows_x, cols_x, rows_y, cols_y = [], [], [], []
    for i in range(n):
        labels = rng.choice(L, size=rng.integers(1, 4), replace=False)
        feats = np.concatenate([feat_of[labels].ravel(), rng.integers(0, D, 3)])
        rows_x += [i] * len(feats)
        cols_x += feats.tolist()
        rows_y += [i] * len(labels)
        cols_y += labels.tolist()
    X = sp.csr_matrix((np.ones(len(rows_x), np.float32), (rows_x, cols_x)), shape=(n, D))
    X.sum_duplicates()
    X.data = np.log1p(X.data).astype(np.float32)
    Y = sp.csr_matrix((np.ones(len(rows_y), np.float32), (rows_y, cols_y)), shape=(n, L))
    return X, Y


@pytest.fixture(scope="session")
def planted():
    return planted_sparse()
