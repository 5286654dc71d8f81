"""Fault injection: a full disk (``OSError(ENOSPC)`` injected into the write) or a read-only
folder never costs the user the artefact they already had, and the CLI says so in one line
naming the path."""

import errno
import os
from pathlib import Path

import numpy as np
import pytest
import scipy.sparse as sp
import torch

from xmr.cli.main import main


def _enospc(*args, **kwargs):
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


def _partial_then_enospc(*args, **kwargs):
    """Write a few bytes into the file argument (torch.save, np.save and sp.save_npz order their
    arguments differently), then fail as a full disk does."""
    for f in args:
        if hasattr(f, "write"):
            f.write(b"PK\x03\x04 half")
            break
        if isinstance(f, (str, os.PathLike)):
            Path(f).write_bytes(b"PK\x03\x04 half")
            break
    _enospc()


def _model(tmp_path, seed):
    from xmr.models import ModelConfig, XMRModel

    torch.manual_seed(seed)
    return XMRModel(20, 7, ModelConfig(dim=4))


def test_model_save_on_a_full_disk_keeps_the_old_model(tmp_path, monkeypatch):
    from xmr.models import XMRModel

    old = _model(tmp_path, 0)
    old.save(tmp_path / "m")
    monkeypatch.setattr(torch, "save", _partial_then_enospc)
    with pytest.raises(OSError) as info:
        _model(tmp_path, 1).save(tmp_path / "m")
    monkeypatch.undo()
    assert info.value.errno == errno.ENOSPC and info.value.filename == str(tmp_path / "m")
    back = XMRModel.load(tmp_path / "m")
    for k, v in old.state_dict().items():
        torch.testing.assert_close(back.state_dict()[k], v, rtol=0, atol=0)
    assert [p.name for p in tmp_path.iterdir()] == ["m"]  # no .tmp left behind


def test_teacher_store_save_on_a_full_disk_keeps_the_old_store(tmp_path, monkeypatch):
    from xmr.teachers.store import TeacherStore, from_topk

    ids = np.array([[0, 1], [2, -1]])
    old = from_topk(ids, np.array([[2.0, 1.0], [0.5, 0.0]], np.float32), 3, {"k": 2})
    old.save(tmp_path / "s")
    monkeypatch.setattr(np, "save", _partial_then_enospc)
    with pytest.raises(OSError):
        from_topk(ids, np.zeros((2, 2), np.float32), 3, {"k": 2}).save(tmp_path / "s")
    monkeypatch.undo()
    back = TeacherStore.load(tmp_path / "s")
    np.testing.assert_array_equal(back.logits, old.logits)


def test_npz_write_on_a_full_disk_keeps_the_old_file_and_names_it(tmp_path, monkeypatch):
    from xmr.data.formats import read_npz, write_npz

    f = tmp_path / "X.npz"
    write_npz(f, sp.csr_matrix(np.eye(3, dtype=np.float32)))
    monkeypatch.setattr(sp, "save_npz", _partial_then_enospc)
    with pytest.raises(OSError) as info:
        write_npz(f, sp.csr_matrix(np.ones((3, 3), np.float32)))
    monkeypatch.undo()
    assert info.value.filename == str(f)
    assert read_npz(f).toarray().tolist() == np.eye(3).tolist()


def _index(tmp_path, seed=0):
    from xmr.index import LabelIndex

    emb = np.random.default_rng(seed).random((30, 4), dtype=np.float32)
    return LabelIndex.build(emb, factory="Flat"), emb


@pytest.mark.parametrize("fault", ["full-disk", "read-only"])
def test_cli_index_build_fault_is_one_line_and_keeps_the_old_index(tmp_path, monkeypatch, capsys,
                                                                   fault):
    import tempfile

    from xmr.index import LabelIndex
    from xmr.utils.optional import faiss

    old, emb = _index(tmp_path)
    old.save(tmp_path / "idx")
    np.save(tmp_path / "emb.npy", np.random.default_rng(1).random((30, 4), dtype=np.float32))
    if fault == "full-disk":
        monkeypatch.setattr(faiss(), "write_index", lambda idx, f: _enospc())
    else:  # the folder refuses new entries (simulated: the tests may run as root)
        def refuse(*a, **k):
            raise PermissionError(errno.EACCES, os.strerror(errno.EACCES))
        monkeypatch.setattr(tempfile, "mkdtemp", refuse)
    capsys.readouterr()
    code = main(["index", "build", "--embeddings", str(tmp_path / "emb.npy"), "--out",
                 str(tmp_path / "idx"), "--factory", "Flat", "--gpu", "no"])
    monkeypatch.undo()
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 1 and len(err) == 1
    assert str(tmp_path / "idx") in err[0]
    assert ("No space left" if fault == "full-disk" else "Permission denied") in err[0]
    back = LabelIndex.load(tmp_path / "idx")
    q = emb[:3]
    np.testing.assert_array_equal(back.search(q, 3)[1], old.search(q, 3)[1])


@pytest.mark.skipif(os.geteuid() == 0, reason="root ignores folder permissions")
def test_a_real_read_only_folder_keeps_the_old_model(tmp_path):
    from xmr.models import XMRModel

    old = _model(tmp_path, 0)
    old.save(tmp_path / "ro" / "m")
    os.chmod(tmp_path / "ro", 0o555)
    try:
        with pytest.raises(OSError):
            _model(tmp_path, 1).save(tmp_path / "ro" / "m")
    finally:
        os.chmod(tmp_path / "ro", 0o755)
    XMRModel.load(tmp_path / "ro" / "m")


def test_out_naming_a_regular_file_is_refused_and_the_file_survives(tmp_path):
    f = tmp_path / "precious.txt"
    f.write_text("keep me")
    with pytest.raises(Exception, match="not a folder"):
        _model(tmp_path, 0).save(f)
    assert f.read_text() == "keep me"
    assert [p.name for p in tmp_path.iterdir()] == ["precious.txt"]


def _raw_eurlex(root: Path, value: str = "1"):
    raw = root / "EURLex-4K" / "raw" / "Eurlex"
    raw.mkdir(parents=True, exist_ok=True)
    (raw / "eurlex_train.txt").write_text(f"2 4 3\n0,1 0:{value} 2:1\n2 1:1\n")
    (raw / "eurlex_test.txt").write_text("1 4 3\n1 3:1\n")


def test_prepare_force_on_a_full_disk_keeps_the_prepared_dataset(tmp_path, monkeypatch):
    """Before: meta.json was deleted first, so the good dataset became "not prepared"."""
    from xmr.data import formats
    from xmr.data.prepare import is_prepared, load_prepared, prepare

    _raw_eurlex(tmp_path)
    prepare("EURLex-4K", root=tmp_path, progress=False)
    before = load_prepared("EURLex-4K", root=tmp_path).X_trn.toarray()
    calls = []
    real = formats.sp.save_npz

    def third_fails(f, M, **kw):
        calls.append(1)
        if len(calls) == 3:
            _enospc()
        return real(f, M, **kw)

    monkeypatch.setattr(formats.sp, "save_npz", third_fails)
    with pytest.raises(OSError):
        prepare("EURLex-4K", root=tmp_path, force=True, progress=False)
    monkeypatch.undo()
    assert is_prepared("EURLex-4K", root=tmp_path)
    np.testing.assert_array_equal(load_prepared("EURLex-4K", root=tmp_path).X_trn.toarray(),
                                  before)
    assert not list((tmp_path / "EURLex-4K").glob(".layout.*"))


def test_prepare_force_rebuilds(tmp_path):
    from xmr.data.prepare import load_prepared, prepare

    _raw_eurlex(tmp_path)
    prepare("EURLex-4K", root=tmp_path, progress=False)
    _raw_eurlex(tmp_path, value="5")
    prepare("EURLex-4K", root=tmp_path, force=True, progress=False)
    assert load_prepared("EURLex-4K", root=tmp_path).X_trn[0, 0] == 5
