import numpy as np
import pytest

from xmr.objectives.targets import row_softmax, soft_targets, truncate_rows


def test_soft_targets_by_hand():
    pos = (np.array([0, 2, 3]), np.array([1, 4, 0]))
    teacher = (np.array([0, 2, 4]), np.array([1, 2, 0, 5]), np.array([2.0, 1.0, 0.0, 0.0]))
    ptr, ids, vals = soft_targets(pos, 6, teacher, alpha=0.5, tau_t=1.0)
    q = np.exp([2.0, 1.0]) / np.exp([2.0, 1.0]).sum()
    assert ptr.tolist() == [0, 3, 5]
    assert ids.tolist() == [1, 2, 4, 0, 5]
    np.testing.assert_allclose(vals, [0.25 + 0.5 * q[0], 0.5 * q[1], 0.25, 0.5 + 0.25, 0.25], rtol=1e-6)
    # rows sum to one
    np.testing.assert_allclose(np.add.reduceat(vals, ptr[:-1]), 1.0, rtol=1e-6)


def test_alpha_zero_is_uniform_over_positives_and_alpha_one_is_teacher():
    pos = (np.array([0, 3]), np.array([7, 2, 9]))
    teacher = (np.array([0, 2]), np.array([2, 5]), np.array([0.3, -1.0]))
    ptr, ids, vals = soft_targets(pos, 10, teacher, alpha=0.0)
    assert ids.tolist() == [2, 7, 9] and np.allclose(vals, 1 / 3)
    ptr, ids, vals = soft_targets(pos, 10, teacher, alpha=1.0, tau_t=2.0)
    q = np.exp(np.array([0.3, -1.0]) / 2.0)
    q /= q.sum()
    keep = vals > 0
    assert ids[keep].tolist() == [2, 5]
    np.testing.assert_allclose(vals[keep], q, rtol=1e-6)


def test_row_without_positive_or_teacher_raises():
    with pytest.raises(ValueError, match="row 1 of the batch has no positive label and no teacher entry"):
        soft_targets((np.array([0, 1, 1]), np.array([3])), 5)


def test_truncate_and_row_softmax():
    ptr, a, b = truncate_rows(np.array([0, 3, 3, 5]), 2, np.arange(5), np.arange(5) * 10)
    assert ptr.tolist() == [0, 2, 2, 4] and a.tolist() == [0, 1, 3, 4] and b.tolist() == [0, 10, 30, 40]
    p = row_softmax(np.array([0, 2, 2, 3]), np.array([1000.0, 1000.0, -5.0]), 1.0)
    np.testing.assert_allclose(p, [0.5, 0.5, 1.0])
