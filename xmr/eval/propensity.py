"""Inverse label propensities of Jain, Prabhu & Varma (KDD 2016), the weights of PSP@k / PSnDCG@k.

Jain et al. (2016), *Extreme multi-label loss functions for recommendation, tagging, ranking &
other missing label applications*, Section 5 (empirical propensity model)::

    C       = (ln N − 1) · (B + 1)^A
    1 / p_l = 1 + C · (N_l + B)^(−A)

with N the number of training points and N_l the number of training points tagged with label l.
The constants (A, B) are dataset specific: (0.55, 1.5) by default, (0.6, 2.6) for the Amazon
sets, (0.5, 0.4) for the Wikipedia sets — state them per dataset, never guess them from a name.
"""

from __future__ import annotations

import logging
import math
import numbers

import numpy as np
import scipy.sparse as sp

from xmr.utils.validation import check_number

log = logging.getLogger(__name__)

__all__ = ["inverse_propensity", "label_frequency"]


def label_frequency(Y) -> np.ndarray:
    """Number of rows in which each label is positive: ``int64[L]``.

    ``Y`` is a scipy sparse label matrix ``[N, L]`` (or a dense 2-D array); a label is positive
    where its stored value is nonzero, so weighted or duplicated entries count once per row
    (napkinXC and pyxclib sum the values instead; the two agree on 0/1 matrices).
    """
    if sp.issparse(Y):
        Y = Y.tocsr()
        if not Y.has_canonical_format:
            Y = Y.copy()
            Y.sum_duplicates()
        return np.bincount(Y.indices[Y.data != 0], minlength=Y.shape[1]).astype(np.int64)
    Y = np.asarray(Y)
    if Y.ndim != 2:
        raise ValueError(f"Y: expected a 2-D label matrix [N, L], got shape {Y.shape}")
    return np.count_nonzero(Y, axis=0).astype(np.int64)


def inverse_propensity(Y_trn_or_label_freq, n_train=None, A: float = 0.55,
                       B: float = 1.5) -> np.ndarray:
    """Inverse propensities ``1/p_l`` of every label (Jain et al. 2016, Section 5): ``float64[L]``.

    Parameters
    ----------
    Y_trn_or_label_freq
        Either the *training* label matrix ``[N, L]`` (scipy sparse or dense 2-D; N is its row
        count, rows without labels included) or a 1-D vector of label frequencies ``N_l``
        (then ``n_train`` = N is required).
    n_train
        Number of training points N; only with a frequency vector.
    A, B
        Dataset constants (A ≥ 0, B > 0).

    Labels never seen in training get the largest weight, ``1 + C·B^(−A)``. With N < e the
    factor ``ln N − 1`` is negative and the weights fall below 1; a warning is logged.
    """
    check_number("A", A, 0)
    check_number("B", B, 0, lo_open=True)

    x = Y_trn_or_label_freq
    if sp.issparse(x) or (isinstance(x, np.ndarray) and x.ndim == 2):
        if n_train is not None:
            raise ValueError("n_train: expected None when a label matrix is given "
                             f"(N is its row count, {x.shape[0]}), got {n_train!r}")
        freq = label_frequency(x)
        n = int(x.shape[0])
    else:
        freq = np.asarray(x)
        if freq.ndim != 1:
            raise ValueError("Y_trn_or_label_freq: expected a label matrix [N, L] or a "
                             f"frequency vector [L], got shape {freq.shape}")
        if freq.dtype.kind not in "iuf":
            raise TypeError(f"label frequencies: expected a numeric vector, got dtype {freq.dtype}")
        if freq.size and not (np.all(np.isfinite(freq)) and freq.min() >= 0):
            raise ValueError("label frequencies: expected finite numbers >= 0, got "
                             f"{freq[~(np.isfinite(freq) & (freq >= 0))][0]}")
        if n_train is None:
            raise ValueError("n_train: expected the number of training points with a "
                             "frequency vector, got None")
        if not (isinstance(n_train, numbers.Integral) and n_train > 0):
            raise ValueError(f"n_train: expected an integer > 0, got {n_train!r}")
        n = int(n_train)
        if freq.size and freq.max() > n:
            raise ValueError(f"label frequencies: expected values <= n_train ({n}), got "
                             f"{freq.max()} for label {int(np.argmax(freq))}")
    if n < 3:
        log.warning("inverse_propensity: N=%d < e, so ln N - 1 < 0 and weights fall below 1", n)

    C = (math.log(n) - 1.0) * (B + 1.0) ** A
    return 1.0 + C * np.power(freq.astype(np.float64) + B, -A)
