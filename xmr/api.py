"""The public Python API: the command line's steps as functions (``import xmr; xmr.train(...)``).

Each name is also a top-level attribute of :mod:`xmr`, imported lazily (``import xmr`` stays
free of torch, faiss and Numba). Hyper-parameters live in a :class:`~xmr.train.config.TrainConfig`
(or a preset name plus ``overrides``, the ``--set key=value`` strings of ``xmr train``); fitting
returns the fitted object; bad input raises an :class:`xmr.errors.XMRError` that says what was
expected and what came.

=========================  ===================================================================
``load_dataset(spec)``      a registered name or a path (any layout of :mod:`xmr.data.sources`)
``train(cfg, data, out)``   :func:`xmr.train.run.run_training` → ``RunResult`` (``.model``, ``.summary``)
``export_teacher(data)``    cross-fitted teacher store (:mod:`xmr.teachers.export`)
``evaluate(model, data)``   P@k, nDCG@k, PSP@k … with the filter-pairs rule (:mod:`xmr.eval.model_eval`)
``load_model(path)``        a saved :class:`~xmr.models.XMRModel` (``.predict(X, k)``)
``load_predictor(path)``    a model trained on text, predicting label names for raw text
``build_index(model)``      a FAISS :class:`~xmr.index.LabelIndex` over the label table (MIPS→L2)
``embed(model, X)``         query embeddings ``f32[n, d]`` for ``index.search``
=========================  ===================================================================
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Iterable, Optional, Sequence

__all__ = ["load_dataset", "train", "export_teacher", "evaluate", "load_model", "load_predictor",
           "build_index", "embed", "make_config"]


def load_dataset(spec, root=None, **options):
    """:func:`xmr.data.loaders.load_dataset`: ``spec`` is a registered name or a path;
    ``options``: ``format``, ``min_df``, ``test_fraction``, ``seed``, ``prop_a``, ``prop_b``."""
    from xmr.data.loaders import load_dataset as _load

    return _load(spec, root, **options)


def make_config(config=None, overrides: Iterable[str] = ()):
    """A :class:`TrainConfig` from ``None`` (defaults), a preset name (``"softmax"``,
    ``"double-distill"``, …), a dict, a JSON file path or a TrainConfig (copied), then
    ``overrides`` (``"optim.epochs=3"`` strings, as ``xmr train --set``)."""
    from xmr.errors import ConfigError
    from xmr.objectives.config import PRESETS
    from xmr.train.config import TrainConfig

    if config is None:
        cfg = TrainConfig()
    elif isinstance(config, TrainConfig):
        cfg = TrainConfig.from_dict(config.to_dict())
    elif isinstance(config, dict):
        cfg = TrainConfig.from_dict(config)
    elif isinstance(config, (str, os.PathLike)) and str(config) in PRESETS:
        cfg = TrainConfig()
        cfg.loss.preset = str(config)
    elif isinstance(config, (str, os.PathLike)) and Path(config).is_file():
        cfg = TrainConfig.from_json(config)
    else:
        raise ConfigError(f"config: expected None, a TrainConfig, a dict, a JSON file or a preset "
                          f"({', '.join(PRESETS)}), got {config!r}")
    return cfg.with_overrides(list(overrides))


def _dataset_and_config(cfg, dataset):
    from xmr.data.dataset import XMCDataset

    if dataset is None or isinstance(dataset, XMCDataset):
        return dataset
    cfg.data.dataset = os.fspath(dataset)
    return None


def train(config=None, dataset=None, out=None, *, teacher=None, overrides: Iterable[str] = (),
          resume: bool = False, progress: bool = False, test_eval: bool = True):
    """Train a model; returns :class:`xmr.train.run.RunResult` (``.model``, ``.summary``,
    ``.model_dir`` = ``out/model``). ``dataset``: an :class:`XMCDataset`, a name or a path
    (default: the config's ``data.dataset``); ``teacher``: a teacher store folder (or the
    :class:`~xmr.teachers.export.TeacherExport` of :func:`export_teacher`)."""
    from xmr.train.run import run_training

    cfg = make_config(config, overrides)
    ds = _dataset_and_config(cfg, dataset)
    if teacher is not None:
        cfg.teacher = os.fspath(getattr(teacher, "path", teacher))
    return run_training(cfg, out, resume=resume, dataset=ds, progress=progress,
                        test_eval=test_eval)


def export_teacher(dataset=None, config=None, *, k: int = 32, folds: int = 5,
                   seed: Optional[int] = None, out=None, overrides: Iterable[str] = (),
                   progress: bool = False):
    """Train a cross-fitted teacher (``folds`` folds; ``config`` defaults to the ``softmax``
    preset) and store its out-of-fold top-``k`` (``out``, if given); returns
    :class:`xmr.teachers.export.TeacherExport` (``.store``, ``.path``)."""
    from xmr.teachers.export import export_teacher as _export

    cfg = make_config("softmax" if config is None else config, overrides)
    ds = _dataset_and_config(cfg, dataset)
    return _export(cfg, ds, k=k, folds=folds, seed=seed, out=out, progress=progress)


def load_model(path, device: str = "cpu"):
    """A saved model folder (``OUT/model``) → :class:`xmr.models.XMRModel`."""
    from xmr.models.xmr_model import XMRModel

    return XMRModel.load(path, device=device)


def load_predictor(path, device: str = "cpu"):
    """A model folder trained on a text dataset → :class:`xmr.predictor.TextPredictor`."""
    from xmr.predictor import TextPredictor

    return TextPredictor.load(path, device=device)


def _model(model):
    if isinstance(model, (str, os.PathLike)):
        return load_model(model)
    return getattr(model, "model", model)  # a RunResult → its model


def evaluate(model, dataset, ks: Sequence[int] = (1, 3, 5), split: str = "test"):
    """:func:`xmr.eval.model_eval.evaluate_model` of a model (object, RunResult or folder) on a
    dataset (object, name or path)."""
    from xmr.data.dataset import XMCDataset
    from xmr.eval.model_eval import evaluate_model

    ds = dataset if isinstance(dataset, XMCDataset) else load_dataset(dataset)
    return evaluate_model(_model(model), ds, ks=ks, split=split)


def embed(model, X):
    """φ(x) of every row of ``X`` as ``f32[n, d]`` (the queries of a label index)."""
    import numpy as np
    import torch

    m = _model(model)
    was = m.training
    m.eval()
    with torch.no_grad():
        out = np.concatenate([m.embed(X, np.arange(lo, min(lo + 4096, X.shape[0])))
                              .float().cpu().numpy() for lo in range(0, X.shape[0], 4096)]
                             or [np.zeros((0, m.cfg.dim), np.float32)])
    m.train(was)
    return out


def build_index(model, factory: str = "HNSW32", metric: str = "ip", mips: Optional[bool] = None,
                **params):
    """A FAISS label index over the label table of ``model`` (object, RunResult or folder);
    search it with ``index.search(embed(model, X), k) → (scores f32[n,k], ids i64[n,k])`` or
    pass it to ``model.predict(X, k, index=index)``.

    ``mips`` (default: on for ``metric="ip"``) indexes the table after the MIPS→L2 reduction
    (:mod:`xmr.index.mips`): the same ranking, and approximate factories keep their recall on a
    trained table, whose row norms vary with label frequency. ``params`` go to
    :meth:`~xmr.index.LabelIndex.build` (``shards``, ``use_gpu``, ``seed``, ``nlist``,
    ``nprobe``, ``efSearch``, ...). The label bias, if the model has one, is not indexed.
    """
    from xmr.index.label_index import LabelIndex

    if isinstance(model, (str, os.PathLike)):
        from xmr.models.xmr_model import load_label_table

        emb = load_label_table(model)
    else:
        emb = _model(model).label_table.weight_numpy()
    return LabelIndex.build(emb, factory=factory, metric=metric,
                            mips=(metric == "ip") if mips is None else mips, **params)
