"""One entry point to load any dataset: a registered name or a path (folder or single file).

See :mod:`xmr.data.sources` for the layouts, the conversion cache and the propensity rule.
"""

from __future__ import annotations

import os
from typing import Optional, Union

from xmr.data.dataset import XMCDataset


def load_dataset(name: Union[str, "os.PathLike"], root: Optional[str] = None,
                 test_fraction: float = 0.2, seed: int = 0, *, format: Optional[str] = None,
                 min_df: int = 1, prop_a: Optional[float] = None,
                 prop_b: Optional[float] = None) -> XMCDataset:
    """Load ``name``: ``debian-deps`` (embedded; split by ``test_fraction``/``seed``), a prepared
    registry dataset (``xmr data prepare NAME`` first), or a path — a folder in any layout of
    :mod:`xmr.data.sources` (``format`` forces one) or a single ``.tsv``/XC BoW file split by
    ``test_fraction``/``seed``. ``min_df`` is the TF-IDF ``min_df`` of text datasets;
    ``prop_a``/``prop_b`` override the propensity constants (default: the dataset's own,
    else 0.55/1.5)."""
    from xmr.data.sources import Options, resolve

    return resolve(name, root, Options(format=format, min_df=min_df, test_fraction=test_fraction,
                                       split_seed=seed, prop_a=prop_a, prop_b=prop_b))


def load_from_config(data) -> XMCDataset:
    """:func:`load_dataset` with the fields of a :class:`xmr.train.config.DataConfig`."""
    return load_dataset(data.dataset, data.root, data.test_fraction, data.split_seed,
                        format=data.format, min_df=data.min_df, prop_a=data.prop_a,
                        prop_b=data.prop_b)
