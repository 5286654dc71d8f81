"""Shared fixtures; the plain helpers they use are in ``tests/_helpers.py``."""

import os

import pytest

# Keep tests deterministic and light on the 2-core CI machine.
os.environ.setdefault("OMP_NUM_THREADS", "2")
os.environ.setdefault("TQDM_DISABLE", "1")


@pytest.fixture(scope="session")
def planted():
    """``(X, Y)``: :func:`_helpers.planted_sparse` at its defaults (400 points, 300 features,
    60 labels), built once per session."""
    from _helpers import planted_sparse

    return planted_sparse()


@pytest.fixture(scope="module")
def one_faiss_thread():
    """One FAISS (OpenMP) thread for the whole module, restored afterwards: on a shared 2-core
    machine spinning OpenMP teams only add waiting. Request it module-wide with
    ``pytestmark = pytest.mark.usefixtures("one_faiss_thread")`` (it needs faiss)."""
    from xmr.utils.threads import omp_threads

    with omp_threads(1):
        yield
