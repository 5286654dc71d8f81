"""Table-driven: bad inputs across formats, stores, models, indexes, configs and archives.

Each case runs the real CLI in-process (``xmr.cli.main.main``) on a damaged copy of a tiny, valid
artefact and asserts the exit code, that stderr is exactly one line, and that the line names the
file (and line / key) at fault. Every case here was found answered by a traceback, a vague
message, or silent acceptance (exit 0) before issue 10, or guards a case that already worked.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import tarfile
import zipfile

import numpy as np
import pytest
import scipy.sparse as sp

from xmr.cli.main import main

N, D, L, DIM, K = 40, 30, 12, 8, 3
DS = "EURLex-4K"  # a registry name; the fixture writes a tiny prepared layout under it


def _csr(rng, n, d, density=0.2, binary=False):
    M = sp.random(n, d, density=density, format="csr", random_state=rng, dtype=np.float32)
    if binary:
        M.data[:] = 1.0
    for r in range(n):  # at least one entry per row
        if M.indptr[r + 1] == M.indptr[r]:
            M = M.tolil()
            M[r, r % d] = 1.0
            M = M.tocsr()
    return sp.csr_matrix(M)


@pytest.fixture(scope="module")
def fx(tmp_path_factory):
    """root/EURLex-4K (prepared), model/, store/, index/, queries.npy — all valid."""
    import torch

    from xmr.data.prepare import _write_layout
    from xmr.data.registry import get_dataset
    from xmr.models import ModelConfig, XMRModel
    from xmr.teachers.store import from_topk

    base = tmp_path_factory.mktemp("valid")
    rng = np.random.RandomState(0)
    root = base / "root"
    folder = root / DS
    folder.mkdir(parents=True)
    mats = {"X_trn": _csr(rng, N, D), "Y_trn": _csr(rng, N, L, 0.25, True),
            "X_tst": _csr(rng, 10, D), "Y_tst": _csr(rng, 10, L, 0.25, True)}
    _write_layout(folder, get_dataset(DS), mats, None, {}, {"sources": [], "sha256_seen": {}})
    torch.manual_seed(0)
    model = XMRModel(D, L, ModelConfig(dim=DIM))
    model.save(base / "model")
    ids = np.stack([rng.permutation(L)[:K] for _ in range(N)])
    logits = np.sort(rng.rand(N, K).astype(np.float32), axis=1)[:, ::-1]  # decreasing per row
    from_topk(ids, logits, L, {"k": K, "temperature": 1.0}).save(base / "store")
    assert main(["index", "build", "--model", str(base / "model"), "--out", str(base / "index"),
                 "--factory", "Flat", "--gpu", "no"]) == 0
    np.save(base / "queries.npy", rng.rand(5, DIM).astype(np.float32))
    assert main(_train(base, base)) == 0  # base/run: a finished run with its checkpoint
    return base


def _copy(fx, tmp, name):
    src = fx / name
    dst = tmp / name
    shutil.copytree(src, dst) if src.is_dir() else shutil.copy(src, dst)
    return dst


# ---- mutations -----------------------------------------------------------------------------

def _text(tmp, body: str, name="scores.txt"):
    p = tmp / name
    p.write_text(body)
    return p


def _import(tmp, body, *extra):
    p = _text(tmp, body)
    return ["teacher", "import", "--scores", str(p), "-k", "2", "--out", str(tmp / "st"),
            *extra], p


def _bow(fx, tmp, train: str):
    """A raw EURLex-4K folder whose train file is ``train`` (prepare converts it)."""
    root = tmp / "r"
    raw = root / DS / "raw" / "Eurlex"
    raw.mkdir(parents=True)
    (raw / "eurlex_train.txt").write_text(train)
    (raw / "eurlex_test.txt").write_text("1 4 3\n0 1:1\n")
    return ["data", "prepare", DS, "--root", str(root)], raw / "eurlex_train.txt"


def _dataset(fx, tmp, key=None, mutate=None):
    """A copy of the prepared dataset with ``key``.npz rewritten by ``mutate(arrays) -> arrays``."""
    root = tmp / "root"
    shutil.copytree(fx / "root", root)
    f = None
    if key is not None:
        f = root / DS / f"{key}.npz"
        z = dict(np.load(f, allow_pickle=False))
        out = mutate(z)
        f.unlink()
        if isinstance(out, bytes):
            f.write_bytes(out)
        else:
            np.savez(f, **out)
    return root, f


def _evaluate(fx, tmp, root=None, model=None):
    return ["evaluate", "--model", str(model or fx / "model"), "--dataset", DS, "--root",
            str(root or fx / "root")]


def _with(arrs, **kw):
    arrs = dict(arrs)
    arrs.update(kw)
    return arrs


def _model(fx, tmp, mutate_cfg=None, mutate_weights=None):
    m = _copy(fx, tmp, "model")
    if mutate_cfg is not None:
        cfg = json.loads((m / "config.json").read_text())
        out = mutate_cfg(cfg)
        (m / "config.json").write_text(out if isinstance(out, str) else json.dumps(out))
    if mutate_weights is not None:
        mutate_weights(m / "weights.pt")
    return m


def _cfg_set(cfg, path, value):
    node = cfg
    *head, last = path.split(".")
    for h in head:
        node = node[h]
    if value is _DEL:
        del node[last]
    else:
        node[last] = value
    return cfg


_DEL = object()


def _weights_evil(p):
    import torch

    class Evil:
        def __reduce__(self):
            return (os.system, ("echo pwned > /dev/null",))

    torch.save({"label_table.weight": Evil()}, p)


def _weights_trunc(p):
    b = p.read_bytes()
    p.write_bytes(b[: len(b) // 2])


def _weights_nan(p):
    import torch

    st = torch.load(p, weights_only=True)
    for k in st:
        st[k] = torch.full_like(st[k], float("nan"))
    torch.save(st, p)


def _weights_shape(p):
    import torch

    st = torch.load(p, weights_only=True)
    st["label_table.weight"] = torch.zeros(L, DIM + 1)
    torch.save(st, p)


def _train_with_store(fx, tmp, mutate):
    s = _copy(fx, tmp, "store")
    target = mutate(s)
    return ["train", "--set", f"data.dataset={DS}", "--set", f"data.root={fx / 'root'}",
            "--set", "loss.preset=distill", "--set", f"teacher={s}", "--set", "optim.epochs=1",
            "--no-progress", "--no-test-eval", "--out", str(tmp / "run")], target


def _write(path, text):
    path.write_text(text)
    return path


def _npy(path, arr):
    path.unlink()
    np.save(path, arr)
    return path


def _store_meta(s, **kw):
    m = json.loads((s / "meta.json").read_text())
    m.update(kw)
    (s / "meta.json").write_text(json.dumps(m))
    return s / "meta.json"


def _shift_indptr(s):
    ip = np.load(s / "indptr.npy")
    ip[1:-1] -= 1  # still monotonic, rows now misaligned by one entry
    return _npy(s / "indptr.npy", ip)


def _search(fx, tmp, mutate):
    i = _copy(fx, tmp, "index")
    target = mutate(i)
    return ["index", "search", "--index", str(i), "--queries", str(fx / "queries.npy"),
            "-k", "3"], target


def _index_meta(i, fn):
    m = json.loads((i / "meta.json").read_text())
    out = fn(m)
    (i / "meta.json").write_text(out if isinstance(out, str) else json.dumps(m))
    return i / "meta.json"


def _train(fx, tmp, *sets, extra=()):
    argv = ["train", "--set", f"data.dataset={DS}", "--set", f"data.root={fx / 'root'}",
            "--set", "loss.preset=sampled", "--set", "optim.epochs=1", "--set", "model.dim=8"]
    for s in sets:
        argv += ["--set", s]
    return argv + ["--no-progress", "--no-test-eval", "--out", str(tmp / "run"), *extra]


def _archive(fx, tmp, build):
    root = tmp / "r"
    raw = root / DS / "raw"
    raw.mkdir(parents=True)
    a = build(raw)
    return ["data", "prepare", DS, "--root", str(root)], a


def _tar(raw, members, name="evil.tar"):
    p = raw / name
    with tarfile.open(p, "w") as tf:
        for kind, mname, arg in members:
            ti = tarfile.TarInfo(mname)
            if kind == "sym":
                ti.type, ti.linkname = tarfile.SYMTYPE, arg
                tf.addfile(ti)
            elif kind == "hard":
                ti.type, ti.linkname = tarfile.LNKTYPE, arg
                tf.addfile(ti)
            elif kind == "dir":
                ti.type = tarfile.DIRTYPE
                tf.addfile(ti)
            elif kind == "fifo":
                ti.type = tarfile.FIFOTYPE
                tf.addfile(ti)
            else:
                data = arg.encode()
                ti.size = len(data)
                tf.addfile(ti, io.BytesIO(data))
    return p


def _zip(raw, names):
    p = raw / "evil.zip"
    with zipfile.ZipFile(p, "w") as zf:
        for n in names:
            zf.writestr(n, "x")
    return p


def _reg_file(tmp):
    f = tmp / "out_is_a_file"
    f.write_text("keep me")
    return f


# ---- the table -----------------------------------------------------------------------------
# name -> builder(fx, tmp) -> (argv, path that must be named, [other substrings]); exit code 1
# unless the builder returns a 4th element.

BIG = 2 ** 63
CASES = {
    # sparse text (teacher import --scores)
    "txt-empty": lambda fx, t: (*_import(t, ""), ["line 1", "empty file"]),
    "txt-header-words": lambda fx, t: (*_import(t, "a b\n"), ["line 1", "header"]),
    "txt-header-3-fields": lambda fx, t: (*_import(t, "1 2 3\n0:1\n"), ["line 1"]),
    "txt-header-huge": lambda fx, t: (*_import(t, f"1 {BIG}\n0:1\n"), ["line 1", "2^62"]),
    "txt-id-out-of-range": lambda fx, t: (*_import(t, "1 3\n5:1\n"), ["line 2", "[0, 3)"]),
    "txt-negative-id": lambda fx, t: (*_import(t, "1 3\n-1:1\n"), ["line 2"]),
    "txt-bad-value": lambda fx, t: (*_import(t, "1 3\n1:abc\n"), ["line 2", "'1:abc'"]),
    "txt-nan": lambda fx, t: (*_import(t, "1 3\n1:nan\n"), ["line 2"]),
    "txt-inf": lambda fx, t: (*_import(t, "1 3\n0:inf\n"), ["line 2"]),
    "txt-no-colon": lambda fx, t: (*_import(t, "1 3\n7\n"), ["line 2", "'id:value'"]),
    "txt-too-few-lines": lambda fx, t: (*_import(t, "3 3\n0:1\n"), ["3 data lines"]),
    "txt-extra-line": lambda fx, t: (*_import(t, "1 3\n0:1\n1:1\n"), ["line 3"]),
    "txt-f32-overflow": lambda fx, t: (*_import(t, "1 3\n0:1e39\n"), ["line 2", "float32"]),
    "txt-f32-overflow-sum": lambda fx, t: (*_import(t, "2 3\n0:1\n1:3e38 1:3e38\n"),
                                           ["line 3", "float32"]),
    "txt-probabilities-out": lambda fx, t: (*_import(t, "1 3\n0:2\n", "--probabilities"),
                                            ["[0, 1]"]),
    "txt-fp16-overflow": lambda fx, t: (*_import(t, "1 3\n0:1e6\n"), ["fp16"]),
    "txt-missing-file": lambda fx, t: (["teacher", "import", "--scores", str(t / "nope.txt"),
                                        "--out", str(t / "st")], t / "nope.txt",
                                       ["No such file"]),
    "txt-is-a-folder": lambda fx, t: (["teacher", "import", "--scores", str(t),
                                       "--out", str(t / "st")], t, []),
    # XC BoW (data prepare from raw files)
    "bow-label-out-of-range": lambda fx, t: (*_bow(fx, t, "1 4 3\n7 0:1\n"), ["line 2",
                                                                               "[0, 3)"]),
    "bow-bad-label": lambda fx, t: (*_bow(fx, t, "1 4 3\nx,1 0:1\n"), ["line 2"]),
    "bow-header-2-fields": lambda fx, t: (*_bow(fx, t, "1 4\n0 0:1\n"), ["line 1"]),
    "bow-f32-overflow": lambda fx, t: (*_bow(fx, t, "1 4 3\n0 0:-5e38\n"), ["line 2",
                                                                             "float32"]),
    "bow-feature-out-of-range": lambda fx, t: (*_bow(fx, t, "1 4 3\n0 9:1\n"), ["line 2"]),
    # npz in a prepared dataset (evaluate reads it)
    "npz-y-explicit-zero": lambda fx, t: _npz_case(fx, t, "Y_tst", lambda z: _with(
        z, data=np.where(np.arange(z["data"].size) == 0, 0, z["data"]).astype(np.float32)),
        ["binary"]),
    "npz-y-two": lambda fx, t: _npz_case(fx, t, "Y_trn", lambda z: _with(
        z, data=np.full_like(z["data"], 2)), ["binary"]),
    "npz-y-minus-one": lambda fx, t: _npz_case(fx, t, "Y_trn", lambda z: _with(
        z, data=-np.ones_like(z["data"])), ["binary"]),
    "npz-x-f32-overflow": lambda fx, t: _npz_case(fx, t, "X_tst", lambda z: _with(
        z, data=np.full(z["data"].shape, 1e39)), ["float32"]),
    "npz-x-nan": lambda fx, t: _npz_case(fx, t, "X_trn", lambda z: _with(
        z, data=np.full_like(z["data"], np.nan)), ["finite"]),
    "npz-indptr-not-monotonic": lambda fx, t: _npz_case(fx, t, "X_trn", lambda z: _with(
        z, indptr=np.r_[z["indptr"][:2], z["indptr"][1:2] - 1, z["indptr"][3:]]),
        ["non-decreasing"]),
    "npz-indices-out-of-range": lambda fx, t: _npz_case(fx, t, "X_trn", lambda z: _with(
        z, indices=np.full_like(z["indices"], D + 5)), ["[0, 30)"]),
    "npz-garbage": lambda fx, t: _npz_case(fx, t, "X_trn", lambda z: b"not a zip at all",
                                           ["not an .npz"]),
    "npz-no-format": lambda fx, t: _npz_case(fx, t, "X_trn", lambda z: {"a": np.zeros(3)},
                                             ["arrays"]),
    "npz-huge-shape": lambda fx, t: _npz_case(fx, t, "X_trn", lambda z: _with(
        z, shape=np.array([N, BIG - 1], dtype=np.int64)), ["shape"]),
    "npz-test-wider": lambda fx, t: _npz_case(fx, t, "X_tst", lambda z: _with(
        z, shape=np.array([z["shape"][0], D + 7])), ["features"]),
    "dataset-meta-bad-json": lambda fx, t: _meta_case(fx, t),
    # models (evaluate --model)
    "model-no-config": lambda fx, t: _model_case(fx, t, lambda m: (m / "config.json").unlink(),
                                                 "config.json", ["no such file"]),
    "model-config-bad-json": lambda fx, t: _model_case(
        fx, t, lambda m: (m / "config.json").write_text("{\n  \"format\": \n"), "config.json",
        ["line 3"]),
    "model-config-list": lambda fx, t: _model_case(
        fx, t, lambda m: (m / "config.json").write_text("[]"), "config.json", ["list"]),
    "model-format-version-99": lambda fx, t: _cfg_case(fx, t, "format_version", 99,
                                                       ["format_version", "99"]),
    "model-unknown-key": lambda fx, t: _cfg_case(fx, t, "model.colour", 1, ["model.colour"]),
    "model-missing-num-labels": lambda fx, t: _cfg_case(fx, t, "num_labels", _DEL,
                                                        ["num_labels"]),
    "model-wrong-type": lambda fx, t: _cfg_case(fx, t, "model.dim", "wide", ["model.dim"]),
    "model-negative-dim": lambda fx, t: _cfg_case(fx, t, "model.dim", -4, ["model.dim"]),
    "model-wrong-format": lambda fx, t: _cfg_case(fx, t, "format", "pecos", ["xmr-model"]),
    "model-weights-pickle": lambda fx, t: _w_case(fx, t, _weights_evil, ["pickle"]),
    "model-weights-truncated": lambda fx, t: _w_case(fx, t, _weights_trunc, ["truncated"]),
    "model-weights-missing": lambda fx, t: _w_case(fx, t, lambda p: p.unlink(),
                                                   ["no such file"]),
    "model-weights-nan": lambda fx, t: _w_case(fx, t, _weights_nan, ["NaN"]),
    "model-weights-shape": lambda fx, t: _w_case(fx, t, _weights_shape, ["label_table.weight"]),
    "model-labels-mismatch": lambda fx, t: _cfg_case(fx, t, "num_labels", L + 1, ["labels"],
                                                     named=False),
    # teacher stores (train --set teacher=...)
    "store-missing-ids": lambda fx, t: (*_train_with_store(
        fx, t, lambda s: (s / "ids.npy").unlink() or s / "ids.npy"), ["no such file"]),
    "store-float-ids": lambda fx, t: (*_train_with_store(
        fx, t, lambda s: _npy(s / "ids.npy", np.load(s / "ids.npy").astype(np.float32) + .5)),
        ["integer"]),
    "store-truncated-logits": lambda fx, t: (*_train_with_store(fx, t, _truncate_npy),
                                             ["truncated"]),
    "store-shifted-indptr": lambda fx, t: (*_train_with_store(fx, t, _shift_indptr),
                                           ["indptr"]),
    "store-indptr-decreasing": lambda fx, t: (*_train_with_store(
        fx, t, lambda s: _npy(s / "indptr.npy", np.r_[0, 5, 2, np.load(s / "indptr.npy")[3:]])),
        ["non-decreasing"]),
    "store-ids-out-of-range": lambda fx, t: (*_train_with_store(
        fx, t, lambda s: _npy(s / "ids.npy", np.load(s / "ids.npy") + L)), ["[0, 12)"]),
    "store-meta-bad-json": lambda fx, t: (*_train_with_store(
        fx, t, lambda s: _write(s / "meta.json", "{oops")), ["line 1"]),
    "store-format-version-99": lambda fx, t: (*_train_with_store(
        fx, t, lambda s: _store_meta(s, format_version=99)), ["99"]),
    "store-row-longer-than-k": lambda fx, t: (*_train_with_store(
        fx, t, lambda s: _store_meta(s, k=1) and s / "indptr.npy"), ["k=1"]),
    "store-rows-mismatch": lambda fx, t: (*_train_with_store(fx, t, _fewer_rows), ["rows"]),
    # indexes (index search)
    "index-damaged-faiss": lambda fx, t: (*_search(fx, t, _damage_faiss), ["FAISS"]),
    "index-shard-outside": lambda fx, t: (*_search(fx, t, lambda i: _index_meta(
        i, lambda m: m["shards"][0].update(file="../../../../etc/hostname"))), ["leaves"]),
    "index-shard-absolute": lambda fx, t: (*_search(fx, t, lambda i: _index_meta(
        i, lambda m: m["shards"][0].update(file="/etc/hostname"))), ["file name"]),
    "index-no-meta": lambda fx, t: (*_search(fx, t, lambda i: (i / "meta.json").unlink() or
                                             i / "meta.json"), ["no such file"]),
    "index-meta-bad-json": lambda fx, t: (*_search(fx, t, lambda i: _index_meta(
        i, lambda m: "{\"format\": [")), ["line 1"]),
    "index-format-version-99": lambda fx, t: (*_search(fx, t, lambda i: _index_meta(
        i, lambda m: m.update(format_version=99))), ["99"]),
    "index-shard-missing": lambda fx, t: (*_search(fx, t, lambda i: (i / "index.faiss").unlink()
                                                   or i), ["missing"]),
    # configs (train)
    "cfg-batch-size-0": lambda fx, t: (_train(fx, t, "optim.batch_size=0"), "optim.batch_size",
                                       [">= 1", "0"]),
    "cfg-batch-size-neg": lambda fx, t: (_train(fx, t, "optim.batch_size=-1"),
                                         "optim.batch_size", ["-1"]),
    "cfg-epochs-neg": lambda fx, t: (_train(fx, t, "optim.epochs=-1"), "optim.epochs", ["-1"]),
    "cfg-valid-fraction": lambda fx, t: (_train(fx, t, "data.valid_fraction=1.5"),
                                         "data.valid_fraction", ["1.5"]),
    "cfg-checkpoint-every": lambda fx, t: (_train(fx, t, "checkpoint_every=-3"),
                                           "checkpoint_every", ["-3"]),
    "cfg-threads": lambda fx, t: (_train(fx, t, "threads=-1"), "threads", ["-1"]),
    "cfg-device": lambda fx, t: (_train(fx, t, "device=tpu"), "device", ["tpu"]),
    "cfg-dropout": lambda fx, t: (_train(fx, t, "model.dropout=1.5"), "model.dropout", []),
    "cfg-lr": lambda fx, t: (_train(fx, t, "optim.lr_table=0"), "optim.lr_table", []),
    "cfg-unknown-key": lambda fx, t: (_train(fx, t, "optim.colour=1"), "optim.colour", []),
    "cfg-file-bad-json": lambda fx, t: _cfg_file(fx, t, "{\n\"optim\": {,}\n}", ["line 2"]),
    "cfg-file-wrong-type": lambda fx, t: _cfg_file(fx, t, '{"optim": {"epochs": "many"}}',
                                                   ["optim.epochs"]),
    "cfg-resume-nothing": lambda fx, t: (_train(fx, t, extra=["--resume"]), "checkpoint",
                                         ["no checkpoint"]),
    "cfg-resume-no-state": lambda fx, t: _resume_no_state(fx, t),
    # checkpoints (train --resume on a damaged copy of a finished run)
    "ckpt-state-truncated": lambda fx, t: _ckpt(fx, t, "state.pt", _weights_trunc, ["truncated"]),
    "ckpt-state-pickle": lambda fx, t: _ckpt(fx, t, "state.pt", _weights_evil, ["pickle"]),
    "ckpt-history-bad-json": lambda fx, t: _ckpt(
        fx, t, "history.json", lambda p: p.write_text("[{"), ["line 1"]),
    "ckpt-config-tampered": lambda fx, t: _ckpt(
        fx, t, "config.json", lambda p: p.write_text(p.read_text().replace('"seed"', '"sead"')),
        ["sead"]),
    # CLI arguments
    "arg-k-negative": lambda fx, t: (["predict", "--model", str(fx / "model"), "-k", "-1",
                                      "--out", str(t / "p.npz")], "-k", ["-1"], 2),
    "arg-ks-not-int": lambda fx, t: (_evaluate(fx, t) + ["--ks", "1,x"], "--ks", ["'x'"], 2),
    "arg-import-k-0": lambda fx, t: (["teacher", "import", "--scores", "s", "-k", "0", "--out",
                                      str(t / "o")], "-k", ["'0'"], 2),
    "out-is-a-file": lambda fx, t: _out_file(fx, t),
    # archives (data prepare with an archive in raw/)
    "tar-symlink-chain": lambda fx, t: (*_archive(fx, t, lambda raw: _tar(raw, [
        ("dir", "d", None), ("sym", "d/l", ".."), ("sym", "d/l/m", ".."),
        ("file", "d/l/m/x.txt", "owned")])), ["d/l/m"]),
    "tar-absolute": lambda fx, t: (*_archive(fx, t, lambda raw: _tar(raw, [
        ("file", "/tmp/xmr_evil_abs.txt", "x")])), ["absolute"]),
    "tar-dotdot": lambda fx, t: (*_archive(fx, t, lambda raw: _tar(raw, [
        ("file", "a/../../x.txt", "x")])), ["'..'"]),
    "tar-symlink-out": lambda fx, t: (*_archive(fx, t, lambda raw: _tar(raw, [
        ("sym", "a/l", "../../../etc")])), ["symlink"]),
    "tar-hardlink-out": lambda fx, t: (*_archive(fx, t, lambda raw: _tar(raw, [
        ("hard", "a/h", "../etc/passwd")])), ["hard link"]),
    "tar-fifo": lambda fx, t: (*_archive(fx, t, lambda raw: _tar(raw, [
        ("fifo", "a/f", None)])), ["FIFO"]),
    "zip-dotdot": lambda fx, t: (*_archive(fx, t, lambda raw: _zip(raw, ["../x.txt"])),
                                 ["'..'"]),
}


def _npz_case(fx, t, key, mutate, subs):
    root, f = _dataset(fx, t, key, mutate)
    return _evaluate(fx, t, root=root), f, subs


def _meta_case(fx, t):
    root, _ = _dataset(fx, t)
    m = root / DS / "meta.json"
    m.write_text(m.read_text()[:-20])
    return _evaluate(fx, t, root=root), m, ["JSON"]


def _model_case(fx, t, mutate, name, subs):
    m = _copy(fx, t, "model")
    mutate(m)
    return _evaluate(fx, t, model=m), m / name, subs


def _cfg_case(fx, t, key, value, subs, named=True):
    m = _model(fx, t, mutate_cfg=lambda c: _cfg_set(c, key, value))
    return _evaluate(fx, t, model=m), (m / "config.json") if named else m, subs


def _w_case(fx, t, mutate, subs):
    m = _model(fx, t, mutate_weights=mutate)
    return _evaluate(fx, t, model=m), m / "weights.pt", subs


def _truncate_npy(s):
    p = s / "logits.npy"
    b = p.read_bytes()
    p.write_bytes(b[: len(b) - 20])
    return p


def _fewer_rows(s):
    from xmr.teachers.store import TeacherStore

    st = TeacherStore.load(s, mmap=False)
    ip = np.asarray(st.indptr)[:N]
    nnz = int(ip[-1])
    TeacherStore(ip, np.asarray(st.ids)[:nnz], np.asarray(st.logits)[:nnz], L,
                 {"k": K}).save(s)
    return s


def _damage_faiss(i):
    p = i / "index.faiss"
    b = p.read_bytes()
    p.write_bytes(b[: len(b) // 3])
    return p


def _cfg_file(fx, t, text, subs):
    c = t / "cfg.json"
    c.write_text(text)
    return ["train", "--config", str(c), "--out", str(t / "run")], c, subs


def _resume_no_state(fx, t):
    (t / "run" / "checkpoint").mkdir(parents=True)
    return _train(fx, t, extra=["--resume"]), t / "run" / "checkpoint", ["state.pt"]


def _ckpt(fx, t, name, mutate, subs):
    shutil.copytree(fx / "run", t / "run")
    f = t / "run" / "checkpoint" / name
    mutate(f)
    return _train(fx, t, extra=["--resume"]), f, subs


def _out_file(fx, t):
    f = _reg_file(t)
    return (["index", "build", "--model", str(fx / "model"), "--out", str(f), "--factory", "Flat",
             "--gpu", "no"], f, ["not a folder"])


def test_the_table_is_large_enough():
    assert len(CASES) >= 60


@pytest.mark.parametrize("name", sorted(CASES))
def test_bad_input_is_one_line_naming_the_culprit(name, fx, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    case = CASES[name](fx, tmp_path)
    argv, culprit, subs = case[:3]
    want_code = case[3] if len(case) > 3 else 1
    capsys.readouterr()
    try:
        code = main([str(a) for a in argv])
    except SystemExit as exc:  # argparse errors
        code = exc.code
    err = capsys.readouterr().err
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert code == want_code, err
    assert len(lines) == 1, err
    assert "Traceback" not in err
    assert str(culprit) in lines[0], lines[0]
    for s in subs:
        assert s in lines[0], lines[0]


def test_symlink_chain_writes_nothing_outside_even_without_the_stdlib_filter(tmp_path,
                                                                             monkeypatch):
    """The fallback branch (Python < 3.11.4, no ``tarfile.data_filter``) used to write
    ``d/l/m/x.txt`` two levels above the target before failing."""
    from xmr.data.download import UnsafeArchiveError, safe_extract

    monkeypatch.delattr(tarfile, "data_filter", raising=False)
    a = _tar(tmp_path, [("dir", "d", None), ("sym", "d/l", ".."), ("sym", "d/l/m", ".."),
                        ("file", "d/l/m/x.txt", "owned")])
    target = tmp_path / "a" / "b" / "t"
    target.mkdir(parents=True)
    with pytest.raises(UnsafeArchiveError, match="d/l/m"):
        safe_extract(a, target)
    assert not list(tmp_path.rglob("x.txt"))


def test_links_that_stay_inside_still_extract(tmp_path):
    from xmr.data.download import safe_extract

    a = _tar(tmp_path, [("file", "d/f.txt", "hi"), ("sym", "d/g.txt", "f.txt"),
                        ("sym", "e", "d"), ("file", "e/h.txt", "via link")])
    out = safe_extract(a, tmp_path / "t")
    assert (tmp_path / "t" / "d" / "h.txt").read_text() == "via link"
    assert len(out) == 4
