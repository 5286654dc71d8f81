"""The GLaS label-table regulariser against a dense reference from its definition (values and
gradients), its gradient touching only the batch's positive rows (a training run with it:
``tests/train/test_regularisation.py``)."""

import numpy as np
import scipy.sparse as sp
import torch

from xmr.models import ShardedLabelTable
from xmr.objectives.glas import GlasRegularizer, glas_reference


def _labels(rng, n=40, L=15):
    Y = (rng.random((n, L)) < 0.2).astype(np.float32)
    Y[:, 3] = Y[:, 4]  # two labels that always co-occur
    Y[0, :] = 1.0  # every label seen at least once
    return Y


def test_glas_matches_the_definition_values_and_gradients():
    rng = np.random.default_rng(0)
    Y = _labels(rng)
    torch.manual_seed(0)
    table = ShardedLabelTable(Y.shape[1], 4, num_shards=1)
    pos_ids = np.array([3, 4, 7, 3, 11, 0])  # duplicates: S is the distinct set
    reg = GlasRegularizer(sp.csr_matrix(Y), weight=0.7)
    got = reg(table, pos_ids)
    W = table.weight.detach().double().requires_grad_(True)
    want = 0.7 * glas_reference(W, Y, pos_ids)
    torch.testing.assert_close(got.double(), want, rtol=1e-5, atol=1e-7)
    got.backward()
    (gw,) = torch.autograd.grad(want, [W])
    g = table.weight.grad
    assert g.is_sparse  # rows of S only, for the row-wise optimizer
    g = g.coalesce()
    assert sorted(set(g.indices()[0].tolist())) == [0, 3, 4, 7, 11]
    torch.testing.assert_close(g.to_dense().double(), gw, rtol=1e-4, atol=1e-7)
    # the target: unit diagonal, 1 for the pair that always co-occurs
    T = reg.targets(np.array([3, 4]))
    np.testing.assert_allclose(T, [[1.0, 1.0], [1.0, 1.0]], rtol=1e-6)
