"""The deployable xmr model: encoder φ + sharded label table W, saved as a self-describing folder.

Predicting, evaluating, exporting a teacher and building a label index need only this module
(no part of :mod:`xmr.train`); the trainer builds an :class:`XMRModel` and fits it.

Folder layout (written atomically)::

    config.json   {"format": "xmr-model", "format_version", "xmr_version", "num_features",
                   "num_labels", "model": {...}, "train_config": {...}, "dataset": ...,
                   "metrics": {...}}
    weights.pt    a flat state dict of tensors ("encoder.*", "label_table.*"), loaded with
                  torch.load(weights_only=True): no pickled objects, ever.

``config.json`` is read by :func:`xmr.utils.artefacts.read_meta` (format versions up to
:data:`FORMAT_VERSION`; newer ones are refused) and its ``model`` section by the configs' strict
parser (an unknown key is a one-line :class:`~xmr.errors.FormatError`).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional, Tuple

import numpy as np
import scipy.sparse as sp
import torch
from torch import nn

import xmr
from xmr.errors import FormatError, MetadataMismatchError
from xmr.models.config import ModelConfig
from xmr.models.encoders import DenseEncoder, SparseEncoder, csr_to_bag
from xmr.models.label_table import ShardedLabelTable
from xmr.utils.artefacts import read_meta, read_section
from xmr.utils.atomic import atomic_dir, load_torch
from xmr.utils.validation import check_device_name, check_int

FORMAT_VERSION = 1
FORMAT = "xmr-model"


def resolve_device(name: str = "auto") -> torch.device:
    """``auto`` → the first CUDA device when one is available, else the CPU."""
    if isinstance(name, torch.device):
        name = str(name)
    check_device_name("device", name)
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(name)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {name!r} requested but torch sees no CUDA device")
    return dev


_INIT_BLOCK = 65536


def _dense_rows(X, rows, device) -> torch.Tensor:
    """Rows ``rows`` (None: all) of a dense input ``X`` (numpy array, torch tensor, or a scipy
    sparse matrix, densified) as ``f32[len(rows), D]`` on ``device``."""
    if isinstance(X, torch.Tensor):
        if rows is not None:
            X = X.index_select(0, torch.as_tensor(np.asarray(rows, dtype=np.int64),
                                                  device=X.device))
        return X.to(device=device, dtype=torch.float32)
    if sp.issparse(X):
        X = X.tocsr()
        X = (X if rows is None else X[np.asarray(rows)]).toarray()
    elif rows is not None:
        X = np.asarray(X)[np.asarray(rows)]
    return torch.from_numpy(np.ascontiguousarray(X, dtype=np.float32)).to(device)


@torch.no_grad()
def init_label_rows(table, seed: int) -> None:
    """W ~ N(0, 1/d), drawn in fixed blocks of 65,536 labels each seeded by (seed, block): the
    same label gets the same initial row whatever the number of ranks or shards, so a
    distributed run starts from exactly the single-process weights. A table that lives on a
    CUDA device (an :class:`XMRModel` built with ``device="cuda"``) draws its blocks there, with
    CUDA generators seeded alike: fast at millions of labels, but other values than the CPU's."""
    std = table.dim ** -0.5
    lo, hi = table.lo, table.hi
    dev = table.weight.device
    gen_dev = dev if dev.type == "cuda" else torch.device("cpu")
    for blk in range(lo // _INIT_BLOCK, (hi - 1) // _INIT_BLOCK + 1):
        b0 = blk * _INIT_BLOCK
        g = torch.Generator(device=gen_dev).manual_seed((int(seed) * 1_000_003 + blk) % (2 ** 63))
        rows = min(_INIT_BLOCK, table.num_labels - b0)
        block = torch.randn(rows, table.dim, generator=g, device=gen_dev) * std
        a, b = max(lo, b0), min(hi, b0 + rows)
        table.weight[a - lo:b - lo] = block[a - b0:b - b0].to(table.weight)


class XMRModel(nn.Module):
    """φ(x) from an input row, scores s_j(x) = ⟨φ(x), w_j⟩ over the label table.

    The input is a sparse TF-IDF row (``cfg.encoder="sparse"``, CSR ``X``) or a dense feature
    row (``"dense"``, ``X`` a float array or tensor ``[n, num_features]``); the label table is
    stored in ``cfg.dtype`` (float32 or bfloat16).

    Initialisation: with ``seed`` an integer, the initial weights are a pure function of it and
    torch's global RNG is left exactly as it was (the encoder is initialised under a forked CPU
    RNG seeded with ``seed``; the label rows by :func:`init_label_rows` with ``seed``), so
    ``XMRModel(D, L, cfg, seed=s)`` equals ``torch.manual_seed(s); XMRModel(D, L, cfg)``.
    With ``seed=None`` (what the trainer uses: it seeds torch's global RNG with ``cfg.seed``
    itself, and its dropout stream continues from there) the encoder draws from the global RNG
    and the label rows are seeded by ``torch.initial_seed()``.

    ``device``: where the parameters are created (default the CPU; ``.to(device)`` moves them
    later). The encoder is always initialised on the CPU and moved; the label table is
    allocated on ``device`` directly (a CUDA table also draws its initial rows there, see
    :func:`init_label_rows`), so a table of millions of rows never passes through host memory.
    """

    def __init__(self, num_features: int, num_labels: int, cfg: ModelConfig,
                 process_group=None, seed: Optional[int] = None, device=None):
        super().__init__()
        cfg.validate()
        if seed is not None:
            seed = check_int("seed", seed, 0)
            with torch.random.fork_rng(devices=[]):
                torch.random.default_generator.manual_seed(seed)
                self._build(num_features, num_labels, cfg, process_group, seed, device)
        else:
            self._build(num_features, num_labels, cfg, process_group, torch.initial_seed(),
                        device)

    def _build(self, num_features, num_labels, cfg, process_group, seed: int, device) -> None:
        self.num_features = int(num_features)
        self.num_labels = int(num_labels)
        self.cfg = cfg
        arch = dict(hidden=tuple(cfg.hidden), residual=cfg.residual, normalize=cfg.normalize,
                    dropout=cfg.dropout)
        if cfg.encoder == "dense":
            self.encoder = DenseEncoder(num_features, cfg.dim, **arch)
        else:
            self.encoder = SparseEncoder(num_features, cfg.dim, sparse=cfg.sparse_input, **arch)
        if device is not None:
            self.encoder.to(device)
        dtype = {"float32": torch.float32, "bfloat16": torch.bfloat16}[cfg.dtype]
        self.label_table = ShardedLabelTable(num_labels, cfg.dim, num_shards=cfg.num_shards,
                                             bias=cfg.label_bias, process_group=process_group,
                                             dtype=dtype, device=device)
        init_label_rows(self.label_table, seed=seed)

    def embed(self, X, rows: Optional[np.ndarray] = None) -> torch.Tensor:
        """φ(x) for the given rows of ``X`` → ``f32[len(rows), dim]`` (all rows: ``rows=None``).

        ``X``: a CSR matrix ``[n, ≤ num_features]`` for the sparse encoder; for the dense one a
        float array or tensor ``[n, num_features]`` (a sparse matrix is densified row by row).
        """
        if X.shape[1] > self.num_features or (self.cfg.encoder == "dense"
                                               and X.shape[1] != self.num_features):
            raise MetadataMismatchError(
                f"the input has {X.shape[1]} feature columns; the model was trained on "
                f"{self.num_features}")
        dev = self.label_table.weight.device
        if self.cfg.encoder == "dense":
            return self.encoder(_dense_rows(X, rows, dev))
        if rows is None:
            rows = np.arange(X.shape[0])
        inp, offsets, weights = csr_to_bag(X, rows)
        p = float(getattr(self.cfg, "input_dropout", 0.0))
        if self.training and p > 0 and weights.numel():
            # feature dropout on the bag (torch's global RNG: checkpointed with the run)
            keep = torch.rand(weights.shape[0]) >= p
            weights = torch.where(keep, weights / (1.0 - p), torch.zeros_like(weights))
        return self.encoder(inp.to(dev), offsets.to(dev), weights.to(dev))

    @torch.no_grad()
    def predict(self, X: sp.csr_matrix, k: int = 5, batch_size: int = 2048,
                progress: bool = False, index=None) -> Tuple[np.ndarray, np.ndarray]:
        """Top-k labels of every row: ``(scores f32[n, k], ids i64[n, k])``.

        xmr's top-k contract (:mod:`xmr.index.exact`): scores ``s_j(x) = <φ(x), w_j> (+ b_j)``
        decreasing, equal scores by lower label id, padded with id -1 and score ``PAD_SCORE``.
        Without ``index`` the top-k is exact (:meth:`ShardedLabelTable.topk`); with ``index``, a
        :class:`xmr.index.LabelIndex` built on this model's label table (e.g.
        ``xmr.build_index(model)``), it is that index's search of the embeddings φ(x):
        approximate unless the factory is ``Flat``.
        """
        from tqdm.auto import tqdm

        k = check_int("k", k, 1)
        if index is not None:
            from xmr.index.label_index import LabelIndex

            want = f"a LabelIndex over this model's {self.num_labels} labels of dim {self.cfg.dim}"
            if not isinstance(index, LabelIndex):
                raise TypeError(f"index: expected {want}, got {type(index).__name__}")
            if (index.num_labels, index.dim) != (self.num_labels, self.cfg.dim):
                raise ValueError(f"index: expected {want}, got one over {index.num_labels} "
                                 f"labels of dim {index.dim}")
            if self.label_table.bias is not None:
                raise ValueError("index: expected a model without label bias (an index scores "
                                 "<φ(x), w_j> only), got one with model.label_bias = true")
        was_training = self.training
        self.eval()
        n = X.shape[0]
        scores = np.empty((n, k), dtype=np.float32)
        ids = np.empty((n, k), dtype=np.int64)
        for lo in tqdm(range(0, n, batch_size), disable=not progress, desc="predict", unit="batch"):
            rows = np.arange(lo, min(lo + batch_size, n))
            emb = self.embed(X, rows)
            if index is None:
                s, i = self.label_table.topk(emb, k)
            else:
                s, i = index.search(emb.float().cpu().numpy(), k)
            scores[rows], ids[rows] = np.asarray(s), np.asarray(i)
        self.train(was_training)
        return scores, ids

    # ------------------------------------------------------------------ persistence
    def save(self, path, train_config=None, extra: Optional[dict] = None,
             state: Optional[dict] = None) -> Path:
        """Write the model folder atomically. ``train_config`` (a
        :class:`~xmr.train.config.TrainConfig`, anything with ``to_dict()``) is recorded;
        ``state`` overrides the state dict (a distributed run passes the full, gathered label
        table so that one process can load the model)."""
        meta = {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "xmr_version": xmr.__version__,
            "num_features": self.num_features,
            "num_labels": self.num_labels,
            "model": {k: v for k, v in vars(self.cfg).items()},
            "train_config": train_config.to_dict() if train_config else None,
        }
        meta.update(extra or {})
        state = {k: v.detach().cpu().contiguous() for k, v in (state or self.state_dict()).items()}
        with atomic_dir(path) as tmp:
            torch.save(state, tmp / "weights.pt")
            (tmp / "config.json").write_text(json.dumps(meta, indent=2, default=str) + "\n")
        return Path(path)

    @classmethod
    def load(cls, path, expect_num_labels: Optional[int] = None,
             expect_num_features: Optional[int] = None, device="cpu") -> "XMRModel":
        """Read a model folder written by :meth:`save`.

        Every defect of the folder is a one-line :class:`FormatError` naming the file: a missing
        or invalid ``config.json`` (bad JSON, missing or unknown keys, wrong types), a
        ``format_version`` newer than this xmr reads, a ``weights.pt`` that torch refuses to load
        safely, is truncated, does not match the config, or holds NaN/inf weights.
        """
        path = Path(path)
        cfg_path = path / "config.json"
        meta = read_meta(cfg_path, FORMAT, FORMAT_VERSION, "an xmr model")
        for key in ("num_features", "num_labels"):
            v = meta.get(key)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise FormatError(cfg_path, None, f"{key}: a positive integer", repr(v))
        mcfg = read_section(cfg_path, meta, "model", ModelConfig)
        if expect_num_labels is not None and meta["num_labels"] != expect_num_labels:
            raise MetadataMismatchError(
                f"model {path} was trained for {meta['num_labels']} labels; the data has {expect_num_labels}")
        if expect_num_features is not None and meta["num_features"] != expect_num_features:
            raise MetadataMismatchError(
                f"model {path} expects {meta['num_features']} input features; the data has {expect_num_features}")
        # seeded: the weights are overwritten below, and loading leaves torch's RNG untouched
        model = cls(meta["num_features"], meta["num_labels"], mcfg, seed=0)
        weights = path / "weights.pt"
        if not weights.is_file():
            raise FormatError(weights, None, "the weights of the model", "no such file")
        state = load_torch(weights)
        if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
            raise FormatError(weights, None, "a flat state dict of tensors",
                              f"a {type(state).__name__}")
        want = model.state_dict()
        if set(state) != set(want) or any(state[k].shape != want[k].shape for k in want):
            missing = sorted(set(want) - set(state))
            extra = sorted(set(state) - set(want))
            shape = [k for k in want if k in state and state[k].shape != want[k].shape]
            got = "; ".join(x for x in (
                f"missing {missing[:3]}" if missing else "", f"unexpected {extra[:3]}" if extra else "",
                f"{shape[0]} of shape {tuple(state[shape[0]].shape)}, config.json implies "
                f"{tuple(want[shape[0]].shape)}" if shape else "") if x)
            raise FormatError(weights, None, "the tensors config.json describes", got)
        for k, v in state.items():
            if v.is_floating_point() and not bool(torch.isfinite(v).all()):
                raise FormatError(weights, None, "finite weights", f"NaN or inf in {k}")
        model.load_state_dict(state)
        model.to(resolve_device(device))
        model.meta = meta
        model.eval()
        return model


def load_label_table(model_dir) -> np.ndarray:
    """The label table ``f32[L, d]`` of a saved model folder (``weights.pt``, key
    ``label_table.weight``), read without building the model — what a label index is built
    from."""
    path = Path(model_dir) / "weights.pt"
    if not path.is_file():
        raise FormatError(path, None, "the weights.pt of a saved xmr model", "no such file")
    state = load_torch(path)
    key = "label_table.weight"
    if not isinstance(state, dict) or key not in state:
        keys = sorted(state)[:8] if isinstance(state, dict) else type(state).__name__
        raise FormatError(path, None, f"a state dict with key {key!r}", f"keys {keys}")
    w = state[key]
    if w.ndim != 2:
        raise FormatError(path, None, f"{key} of shape [L, d]", f"shape {tuple(w.shape)}")
    return w.detach().float().cpu().numpy()
