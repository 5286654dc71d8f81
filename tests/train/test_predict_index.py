"""XMRModel.predict(X, k, index=...): the approximate path through a LabelIndex, equal to the exact
path with an exact Flat index (raw inner product or MIPS→L2)."""

import numpy as np
import pytest
import torch

pytest.importorskip("faiss")

import xmr  # noqa: E402
from xmr.index import LabelIndex  # noqa: E402
from xmr.train.config import ModelConfig  # noqa: E402
from xmr.models.xmr_model import XMRModel  # noqa: E402


pytestmark = pytest.mark.usefixtures("one_faiss_thread")


def _model(label_bias=False, L=300):
    torch.manual_seed(0)
    model = XMRModel(300, L, ModelConfig(dim=16, label_bias=label_bias))
    with torch.no_grad():  # row norms varying 0.3-3, as in a trained table
        model.label_table.weight.mul_(torch.empty(L, 1).uniform_(0.3, 3.0))
    return model.eval()


def test_flat_index_predicts_what_the_exact_path_predicts(planted):
    X, _ = planted
    model = _model()
    want_s, want_i = model.predict(X, 7, batch_size=128)
    raw = LabelIndex.build(model.label_table.weight_numpy(), factory="Flat", use_gpu=False)
    for index in (raw, xmr.build_index(model, factory="Flat", use_gpu=False)):  # the latter: MIPS
        s, i = model.predict(X, 7, batch_size=128, index=index)
        assert s.dtype == np.float32 and i.dtype == np.int64 and i.shape == (X.shape[0], 7)
        np.testing.assert_array_equal(i, want_i)
        np.testing.assert_allclose(s, want_s, rtol=1e-5, atol=1e-4)
    # k beyond the labels: the same padding on both paths
    small = _model(L=5)
    s_e, i_e = small.predict(X[:4], 8)
    s_a, i_a = small.predict(X[:4], 8, index=LabelIndex.build(
        small.label_table.weight_numpy(), factory="Flat", use_gpu=False))
    np.testing.assert_array_equal(i_a, i_e)
    np.testing.assert_array_equal(s_a[:, 5:], s_e[:, 5:])


def test_predict_index_mismatch_is_one_line(planted):
    X, _ = planted
    model = _model()
    other = LabelIndex.build(np.ones((20, 16), np.float32), factory="Flat", use_gpu=False)
    with pytest.raises(ValueError) as e:
        model.predict(X, 3, index=other)
    assert str(e.value) == ("index: expected a LabelIndex over this model's 300 labels of dim 16, "
                            "got one over 20 labels of dim 16")
    with pytest.raises(TypeError, match=r"^index: expected a LabelIndex over .*, got dict$"):
        model.predict(X, 3, index={})
    biased = _model(label_bias=True)
    index = LabelIndex.build(biased.label_table.weight_numpy(), factory="Flat", use_gpu=False)
    with pytest.raises(ValueError, match=r"^index: expected a model without label bias"):
        biased.predict(X, 3, index=index)
