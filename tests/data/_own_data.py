"""Small planted datasets in every layout xmr reads (tests of bring-your-own-data)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import scipy.sparse as sp

WORDS = [f"w{i:02d}" for i in range(40)]
TOPICS = [f"topic-{c}" for c in "abcdefghij"]


def planted_text(n: int = 300, seed: int = 0):
    """Points whose words reveal their labels: label t owns words 4t..4t+3."""
    rng = np.random.default_rng(seed)
    rows = []
    for _ in range(n):
        k = 1 + int(rng.integers(0, 2))
        labs = sorted(set(int(x) for x in rng.choice(len(TOPICS), k, replace=False)))
        words = [WORDS[4 * t + int(rng.integers(0, 4))] for t in labs for _ in range(3)]
        words += [WORDS[int(rng.integers(0, 40))]]
        rng.shuffle(words)
        rows.append((" ".join(words), [TOPICS[t] for t in labs]))
    return rows


def write_tsv(path: Path, rows) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(f"{t}\t{','.join(ls)}\n" for t, ls in rows), encoding="utf-8")
    return path


def tsv_folder(folder: Path, n: int = 300, seed: int = 0) -> Path:
    rows = planted_text(n, seed)
    cut = int(0.8 * n)
    write_tsv(folder / "train.tsv", rows[:cut])
    write_tsv(folder / "test.tsv", rows[cut:])
    return folder


def planted_matrices(n_trn: int = 120, n_tst: int = 30, D: int = 50, L: int = 12, seed: int = 0):
    """CSR float32 X/Y with every row holding at least one feature and one label."""
    rng = np.random.default_rng(seed)

    def make(n):
        Y = sp.random(n, L, density=0.15, random_state=rng, format="csr", dtype=np.float32)
        Y.data[:] = 1
        Y = (Y + sp.csr_matrix((np.ones(n, np.float32), (np.arange(n), rng.integers(0, L, n))),
                                shape=(n, L))).tocsr()
        Y.data[:] = 1
        X = sp.random(n, D, density=0.2, random_state=rng, format="csr", dtype=np.float32)
        X = (X + sp.csr_matrix((np.ones(n, np.float32), (np.arange(n), rng.integers(0, D, n))),
                                shape=(n, D))).tocsr()
        X.sum_duplicates()
        X.sort_indices()
        Y.sort_indices()
        return X, Y

    X_trn, Y_trn = make(n_trn)
    X_tst, Y_tst = make(n_tst)
    return {"X_trn": X_trn, "Y_trn": Y_trn, "X_tst": X_tst, "Y_tst": Y_tst}
