"""torch_threads: a thread count scoped to a block and restored after it."""

import pytest
import torch

from xmr.errors import ConfigError
from xmr.utils.threads import torch_threads


def test_torch_threads_sets_and_restores():
    before = torch.get_num_threads()
    want = 1 if before != 1 else 2
    with torch_threads(want) as n:
        assert n == want == torch.get_num_threads()
    assert torch.get_num_threads() == before


def test_torch_threads_restores_after_an_error_and_a_change_inside():
    before = torch.get_num_threads()
    with pytest.raises(RuntimeError, match="boom"):
        with torch_threads(1):
            torch.set_num_threads(3)  # the block changes it again (as the trainer does)
            raise RuntimeError("boom")
    assert torch.get_num_threads() == before


@pytest.mark.parametrize("n", [0, None])
def test_torch_threads_zero_or_none_leaves_the_count(n):
    before = torch.get_num_threads()
    with torch_threads(n) as inside:
        assert inside == before
    assert torch.get_num_threads() == before


@pytest.mark.parametrize("n", [-1, 1.5, True, "2"])
def test_torch_threads_refuses_bad_counts(n):
    with pytest.raises(ConfigError, match=r"^threads: expected an integer >= 0, got "):
        with torch_threads(n):
            pass

