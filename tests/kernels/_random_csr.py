"""Random CSR inputs for the negatives-kernel tests (imported by name, not a fixture)."""

import numpy as np


def random_csr(rng, num_rows, num_labels, max_per_row, p_empty=0.2, p_edge=0.2, pool=None):
    """Random CSR (indptr i64[B+1], ids i64) with empty rows, duplicates and ids at 0 and L-1.

    ``pool``: draw ids from this small array (forces collisions between rows)."""
    counts = rng.integers(0, max_per_row + 1, size=num_rows)
    counts[rng.random(num_rows) < p_empty] = 0
    indptr = np.zeros(num_rows + 1, dtype=np.int64)
    indptr[1:] = np.cumsum(counts)
    n = int(indptr[-1])
    if pool is None:
        ids = rng.integers(0, num_labels, size=n)
    else:
        ids = rng.choice(pool, size=n)
    edge = rng.random(n) < p_edge
    ids[edge] = rng.choice([0, num_labels - 1], size=int(edge.sum()))
    dup = rng.random(n) < 0.1  # in-row duplicates: copy the previous entry of the same row
    for i in np.flatnonzero(dup):
        r = np.searchsorted(indptr, i, side="right") - 1
        if i > indptr[r]:
            ids[i] = ids[i - 1]
    return indptr, ids.astype(np.int64)
