import json

import numpy as np
import pytest
import scipy.sparse as sp

from xmr.errors import FormatError, MetadataMismatchError
from xmr.teachers.store import TeacherStore, from_scores_csr, from_topk


def _random_topk(n=50, L=300, k=7, seed=0):
    rng = np.random.default_rng(seed)
    ids = np.stack([rng.choice(L, k, replace=False) for _ in range(n)])
    logits = rng.normal(size=(n, k)).astype(np.float32)
    ids[3, 4:] = -1  # short row
    ids[5, :] = -1  # empty row
    return ids, logits, L


def test_round_trip_memory_mapped(tmp_path):
    ids, logits, L = _random_topk()
    store = from_topk(ids, logits, L, meta={"source": "test"})
    store.save(tmp_path / "s")
    back = TeacherStore.load(tmp_path / "s")
    assert isinstance(back.ids, np.memmap)
    assert back.num_rows == 50 and back.num_labels == L
    np.testing.assert_array_equal(back.indptr, store.indptr)
    np.testing.assert_array_equal(back.ids, store.ids)
    np.testing.assert_array_equal(back.logits, store.logits)
    assert back.ids.dtype == np.int32 and back.logits.dtype == np.float16
    # rows are sorted by decreasing logit and the padding is gone
    for i in range(50):
        lo, hi = back.indptr[i], back.indptr[i + 1]
        valid = ids[i] >= 0
        assert hi - lo == valid.sum()
        assert np.all(np.diff(back.logits[lo:hi].astype(np.float32)) <= 0)
        assert set(back.ids[lo:hi]) == set(ids[i][valid])


def test_rows_gathers_csr(tmp_path):
    ids, logits, L = _random_topk()
    store = from_topk(ids, logits, L)
    rows = np.array([5, 3, 0, 3])
    ptr, got_ids, got_logits = store.rows(rows)
    assert ptr.tolist()[0] == 0 and ptr[-1] == got_ids.size
    for j, r in enumerate(rows):
        lo, hi = store.indptr[r], store.indptr[r + 1]
        np.testing.assert_array_equal(got_ids[ptr[j]:ptr[j + 1]], store.ids[lo:hi])
        np.testing.assert_array_equal(got_logits[ptr[j]:ptr[j + 1]], store.logits[lo:hi].astype(np.float32))


def test_mismatch_is_a_clear_error(tmp_path):
    ids, logits, L = _random_topk()
    from_topk(ids, logits, L).save(tmp_path / "s")
    store = TeacherStore.load(tmp_path / "s")
    with pytest.raises(MetadataMismatchError, match=r"holds 50 rows over 300 labels; the training set has 51 rows over 300 labels"):
        store.check_matches(51, 300, "the training set")


def test_corrupt_store_is_rejected(tmp_path):
    ids, logits, L = _random_topk()
    from_topk(ids, logits, L).save(tmp_path / "s")
    meta = json.loads((tmp_path / "s" / "meta.json").read_text())
    meta["num_labels"] = 10
    (tmp_path / "s" / "meta.json").write_text(json.dumps(meta))
    with pytest.raises(FormatError, match=r"expected label ids in \[0, 10\)"):
        TeacherStore.load(tmp_path / "s")
    (tmp_path / "s" / "ids.npy").unlink()
    with pytest.raises(FormatError, match="ids.npy: expected a teacher store file, got no such file"):
        TeacherStore.load(tmp_path / "s")


def test_from_scores_csr_keeps_top_k():
    S = sp.csr_matrix(np.array([[0, 0.5, 0.1, 0.9], [0, 0, 0, 0], [0.2, 0, 0, 0]], dtype=np.float32))
    store = from_scores_csr(S, 2)
    assert store.indptr.tolist() == [0, 2, 2, 3]
    assert store.ids.tolist() == [3, 1, 0]


def test_save_is_atomic_on_failure(tmp_path, monkeypatch):
    ids, logits, L = _random_topk()
    store = from_topk(ids, logits, L)
    store.save(tmp_path / "s")
    before = (tmp_path / "s" / "ids.npy").read_bytes()

    def boom(*a, **k):
        raise OSError("disk full")

    monkeypatch.setattr(np, "save", boom)
    with pytest.raises(OSError, match="disk full"):
        from_topk(ids[:10], logits[:10], L).save(tmp_path / "s")
    assert (tmp_path / "s" / "ids.npy").read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["s"]
