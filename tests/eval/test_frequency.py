"""P@1 / PSP@1 per bucket of the most frequent positive's training frequency."""

import numpy as np
import scipy.sparse as sp

from xmr.eval.frequency import EDGES, bucket_names, by_frequency, plot_by_frequency
from xmr.eval.propensity import inverse_propensity


def test_buckets_and_values(tmp_path):
    L = 4
    # training frequencies: label 0 x1200, label 1 x30, label 2 x2, label 3 x0
    Y_trn = sp.csr_matrix((np.ones(1232), (np.arange(1232), [0] * 1200 + [1] * 30 + [2] * 2)),
                          shape=(1232, L))
    Y_tst = sp.csr_matrix(np.array([[1, 0, 1, 0],   # top positive: label 0 -> ">= 1000"
                                    [0, 1, 0, 0],   # 30 -> "20-99"
                                    [0, 0, 1, 0],   # 2 -> "1-4"
                                    [0, 0, 0, 1],   # 0 -> "0"
                                    [0, 0, 0, 0],   # no positive: left out
                                    [0, 1, 1, 0]],  # 30 -> "20-99"
                                   dtype=np.float32))
    ids = np.array([[2, 0], [1, 0], [0, 1], [0, 1], [0, 1], [0, 2]])
    inv = inverse_propensity(Y_trn)
    rows = {r["bucket"]: r for r in by_frequency(Y_trn, Y_tst, ids, inv)}
    assert bucket_names() == ["0", "1-4", "5-19", "20-99", "100-999", ">= 1000"]
    assert [rows[b]["points"] for b in bucket_names()] == [1, 1, 0, 2, 0, 1]
    assert rows[">= 1000"]["P@1"] == 1.0  # label 2 is a positive there
    assert rows["20-99"]["P@1"] == 0.5
    assert rows["1-4"]["P@1"] == 0.0 and rows["0"]["P@1"] == 0.0
    assert "P@1" not in rows["5-19"]
    assert 0 < rows["20-99"]["PSP@1"] < 1
    assert len(EDGES) == 6
    plot_by_frequency({"a": list(rows.values()), "b": list(rows.values())}, tmp_path / "f.png")
    assert (tmp_path / "f.png").read_bytes()[:4] == b"\x89PNG"
