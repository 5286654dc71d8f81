"""The shared argument checks (xmr.utils.validation): one message style, bools refused."""

import numpy as np
import pytest

from xmr.errors import ConfigError
from xmr.utils.validation import check_int, check_number


@pytest.mark.parametrize("args, kwargs, message", [
    (("k", 0, 1), {}, "k: expected an integer >= 1, got 0"),
    (("k", True, 1), {}, "k: expected an integer >= 1, got True"),
    (("k", 2.0, 1), {}, "k: expected an integer >= 1, got 2.0"),
    (("k", 9, 1, 5), {}, "k: expected an integer in [1, 5], got 9"),
    (("k", 9, None, 5), {}, "k: expected an integer <= 5, got 9"),
    (("k", "3"), {}, "k: expected an integer, got '3'"),
    (("n", -1, 1), {"allow_none": True}, "n: expected an integer >= 1 or None, got -1"),
])
def test_check_int_messages(args, kwargs, message):
    with pytest.raises(ConfigError) as e:
        check_int(*args, **kwargs)
    assert str(e.value) == message and isinstance(e.value, ValueError)


def test_check_int_values():
    assert check_int("k", np.int64(3), 1) == 3 and type(check_int("k", np.int64(3))) is int
    assert check_int("n", None, 1, allow_none=True) is None


@pytest.mark.parametrize("args, kwargs, message", [
    (("a", -1, 0), {}, "a: expected a finite number >= 0, got -1"),
    (("a", 0, 0), {"lo_open": True}, "a: expected a finite number > 0, got 0"),
    (("a", 1.0, 0.0, 1.0), {"hi_open": True}, "a: expected a finite number in [0.0, 1.0), got 1.0"),
    (("a", float("nan")), {}, "a: expected a finite number, got nan"),
    (("a", True, 0), {}, "a: expected a finite number >= 0, got True"),
])
def test_check_number_messages(args, kwargs, message):
    with pytest.raises(ConfigError) as e:
        check_number(*args, **kwargs)
    assert str(e.value) == message
