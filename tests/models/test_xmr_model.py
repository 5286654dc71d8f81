"""XMRModel's initialisation: an explicit seed gives weights that are a pure function of it and
leaves torch's global RNG untouched; loading a model does not touch it either."""

import numpy as np
import pytest
import torch

from xmr.errors import ConfigError
from xmr.models import ModelConfig, XMRModel

CFG = ModelConfig(dim=8, hidden=[12], dropout=0.1)


def _same(a, b) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return list(sa) == list(sb) and all(torch.equal(sa[k], sb[k]) for k in sa)


def test_seeded_init_leaves_the_global_rng_alone():
    torch.manual_seed(123)
    state, initial = torch.get_rng_state(), torch.initial_seed()
    XMRModel(30, 9, CFG, seed=5)
    assert torch.equal(torch.get_rng_state(), state) and torch.initial_seed() == initial


def test_seeded_init_is_a_function_of_the_seed():
    torch.manual_seed(0)
    a = XMRModel(30, 9, CFG, seed=5)
    torch.manual_seed(99)  # whatever the global RNG holds
    torch.rand(7)
    assert _same(a, XMRModel(30, 9, CFG, seed=5))
    assert not _same(a, XMRModel(30, 9, CFG, seed=6))


def test_seeded_init_equals_the_global_seed_then_unseeded_init():
    """What the trainer does (torch.manual_seed(cfg.seed), then an unseeded model) is the same
    initial model."""
    torch.manual_seed(5)
    assert _same(XMRModel(30, 9, CFG), XMRModel(30, 9, CFG, seed=5))


@pytest.mark.parametrize("seed", [-1, 1.5, True])
def test_seed_must_be_a_non_negative_integer(seed):
    with pytest.raises(ConfigError, match=r"^seed: expected an integer >= 0, got "):
        XMRModel(30, 9, CFG, seed=seed)


def test_load_leaves_the_global_rng_alone(tmp_path):
    model = XMRModel(30, 9, CFG, seed=2)
    model.save(tmp_path / "m")
    torch.manual_seed(77)
    state = torch.get_rng_state()
    back = XMRModel.load(tmp_path / "m")
    assert torch.equal(torch.get_rng_state(), state)
    assert _same(back, model)


def test_predict_k_message_is_unchanged():
    import scipy.sparse as sp

    X = sp.csr_matrix(np.ones((2, 30), np.float32))
    with pytest.raises(ValueError, match=r"^k: expected an integer >= 1, got 0$"):
        XMRModel(30, 9, CFG, seed=0).predict(X, 0)
