"""Micro-benchmarks of the negatives kernels against vectorised numpy references.

Sizes (the brief's "realistic" batch): B = 1,024 rows, 5 positives per row, a shared candidate
set of about C = 8,192 columns, L = 1M labels. Each kernel is timed side by side with its
vectorised reference (np.unique / searchsorted / fancy indexing / bincount, never a Python loop)
in the same run, best of N after a warm-up that also compiles the kernel; the figures are the
ratios. Samplers are reported in draws/s against ``numpy.random.Generator.choice`` with ``p``.

Candidate assembly is timed in the sparse layout the library builds (``col_bias`` + row
exceptions + CSR targets; kernel ``assemble_candidates_sparse`` vs the vectorised
``assemble_candidates_sparse_ref``) with ``share_columns`` on and off (off: the exceptions are
each row's visibility list), and the union alone. ``assembly_plus_loss`` compares the sparse
loss with the dense one on the densified batch (``sparse_to_dense``, what
``SparseCandidateBatch.to_dense`` gives the ova / pal / decoupled reductions).

Dropped rows (issue 9; older results files still hold them): kernels that only tests used,
now in ``tests/_oracles/`` — the dense-layout assembly kernel (``fresh_outputs``,
``reused_outputs``: ``logit_bias``/``targets`` f32[B, C] written directly, with or without
reused ``out=`` buffers) and the copies-kept sampled-logit correction (``correction``, never on
the training path) — and the streaming frequency estimator (``freq``), removed with
``InBatchFrequency``, which no configuration reached.

Run: ``python -m benchmarks.micro.bench_kernels [--repeat 5] [--quick] [--threads 1]``
→ ``benchmarks/results/bench_kernels.json``.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

import numpy as np

from benchmarks._common import best_time, write_result

log = logging.getLogger("bench_kernels")


def _csr(rng, B, per_row, L):
    indptr = np.arange(0, B * per_row + 1, per_row, dtype=np.int64)
    return indptr, rng.integers(0, L, B * per_row).astype(np.int64)


def bench_assembly(rng, B, L, C_target, repeat, teacher_k=3):
    from xmr.kernels.assembly import assemble_candidates_sparse
    from xmr.negatives.candidates import MASK_VALUE
    from xmr.negatives.samplers import LogUniformSampler

    p_ptr, p_ids = _csr(rng, B, 5, L)
    t_ptr, t_ids = _csr(rng, B, teacher_k, L)
    t_ids[::2] = p_ids[: len(t_ids[::2])]  # teachers often rank positives first
    t_log = rng.normal(0, 2, len(t_ids)).astype(np.float32)
    h_ptr, h_ids = np.zeros(B + 1, np.int64), np.zeros(0, np.int64)
    det = len(np.unique(np.concatenate([p_ids, t_ids])))
    sampler = LogUniformSampler(L)
    m = max(C_target - det, 1)
    for _ in range(20):  # pick m so that the union has about C_target columns
        r_ids, r_lec = sampler.sample(m, np.random.default_rng(1))
        C = len(np.unique(np.concatenate([p_ids, t_ids, r_ids])))
        if abs(C - C_target) < 0.01 * C_target:
            break
        m = int(m * (C_target - det) / max(C - det, 1))
    args = (B, p_ptr, p_ids, t_ptr, t_ids, t_log, h_ptr, h_ids, r_ids, r_lec, 0.5, 1.0, False,
            True, True, MASK_VALUE)
    got = assemble_candidates_sparse(*args)
    # the union and column maps alone (everything but the bias and target layout)
    from xmr.kernels.assembly import candidate_union

    def union_ref():
        all_ids = np.concatenate([p_ids, t_ids, h_ids, r_ids])
        uniq, first, inv = np.unique(all_ids, return_index=True, return_inverse=True)
        order = np.argsort(first, kind="stable")
        rank = np.empty(len(uniq), np.int64)
        rank[order] = np.arange(len(uniq))
        cols = rank[inv]
        r_cols = cols[len(all_ids) - len(r_ids):]
        cnt = np.bincount(r_cols, minlength=len(uniq))
        lec = np.zeros(len(uniq))
        lec[r_cols[::-1]] = r_lec[::-1]
        with np.errstate(divide="ignore"):
            neg = np.where(cnt > 0, np.log(np.maximum(cnt, 1)) - lec, 0.0).astype(np.float32)
        return uniq[order], cnt > 0, neg, cols

    assert np.array_equal(union_ref()[0], candidate_union(p_ids, t_ids, h_ids, r_ids, r_lec,
                                                          True)[0])
    t_u = best_time(lambda: candidate_union(p_ids, t_ids, h_ids, r_ids, r_lec, True),
                    repeat=repeat, warmup=1)
    t_ur = best_time(union_ref, repeat=repeat, warmup=1)
    sparse, loss = {}, {}
    for share in (True, False):
        sargs = args[:13] + (share,) + args[14:]
        sparse[f"share_columns_{share}"] = _bench_sparse(sargs, repeat)
        loss[f"share_columns_{share}"] = _bench_loss(sargs, repeat)
    return {"B": B, "L": L, "C": int(len(got[0])), "positives_per_row": 5,
            "teacher_per_row": teacher_k, "random_draws": int(m),
            "random_columns": int(got[1].sum()), "share_columns": True, "alpha": 0.5,
            "union_only": {"kernel_s": t_u, "ref_s": t_ur, "speedup": t_ur / t_u},
            "dense_output_bytes": int(2 * 4 * B * len(got[0])),  # what B x C arrays take
            # sparse layout, share_columns=True as the rows above (and the loss default)
            "sparse": sparse["share_columns_True"],
            "sparse_share_columns_false": sparse["share_columns_False"],
            "assembly_plus_loss": loss}


def _bench_loss(args, repeat):
    """What the layout costs the training step: assembly + loss forward and gradient on fixed
    logits ``s f32[B, C]`` (the matmul excluded), dense (the sparse assembly densified with
    ``sparse_to_dense``, then ``candidate_loss(s + logit_bias, targets)``) vs sparse
    (``sparse_candidate_loss``).

    The gradient d loss / d s is taken with ``torch.autograd.grad``: this times a loss
    function's forward and backward, not a training step (no model, no optimizer, so nothing
    of :class:`~xmr.train.step.TrainStep` to drive). It runs the same backward graph as
    ``Tensor.backward`` but returns the gradient instead of accumulating it into ``s.grad``,
    which a repeated backward call would do (an extra B x C add per timed call after the
    first, included in the figures committed before this change); the training step sets its
    gradients to None before backward, so it never pays that add either."""
    import torch

    from xmr.kernels.assembly import assemble_candidates_sparse, sparse_to_dense
    from xmr.negatives.candidates import SparseCandidateBatch
    from xmr.objectives.loss import candidate_loss, sparse_candidate_loss

    B = args[0]
    C = len(assemble_candidates_sparse(*args)[0])
    s = torch.randn(B, C, requires_grad=True)

    def dense():
        out = assemble_candidates_sparse(*args)
        bias, targets = sparse_to_dense(B, *out[2:9])
        loss = candidate_loss(s + torch.from_numpy(bias), torch.from_numpy(targets))
        (grad,) = torch.autograd.grad(loss, s)
        return loss, grad

    def sparse():
        out = assemble_candidates_sparse(*args)
        batch = SparseCandidateBatch(out[0], *out[2:9], out[1], out[9])
        loss = sparse_candidate_loss(s, batch)
        (grad,) = torch.autograd.grad(loss, s)
        return loss, grad

    l_d, g_d = dense()
    l_s, g_s = sparse()
    torch.testing.assert_close(l_s, l_d, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(g_s, g_d, rtol=1e-4, atol=1e-7)
    t_d = best_time(dense, repeat=repeat, warmup=1)
    t_s = best_time(sparse, repeat=repeat, warmup=1)
    return {"dense_s": t_d, "sparse_s": t_s, "speedup": t_d / t_s,
            "torch_threads": torch.get_num_threads()}


def _bench_sparse(args, repeat):
    """Sparse layout: kernel vs vectorised reference on the same inputs (checked equal first;
    the tests hold it equal to the dense-layout oracle)."""
    from xmr.kernels.assembly import assemble_candidates_sparse, assemble_candidates_sparse_ref

    got = assemble_candidates_sparse(*args)
    ref = assemble_candidates_sparse_ref(*args)
    for i, (g, r) in enumerate(zip(got, ref)):
        assert (np.allclose(g, r, rtol=1e-6, atol=1e-7) if i == 8 else np.array_equal(g, r)), i
    t_k = best_time(lambda: assemble_candidates_sparse(*args), repeat=repeat, warmup=1)
    t_r = best_time(lambda: assemble_candidates_sparse_ref(*args), repeat=repeat, warmup=1)
    n_out = sum(a.nbytes for a in got[2:9])
    return {"kernel_s": t_k, "ref_s": t_r, "speedup": t_r / t_k,
            "exceptions": int(got[3].size), "target_nnz": int(got[7].size),
            "output_bytes": int(n_out)}


def bench_samplers(rng, L, m, m_unique, repeat):
    from xmr.negatives.samplers import LogUniformSampler, UniformSampler, UnigramSampler

    counts = 1.0 / (np.arange(L) + 1.0)
    q = counts / counts.sum()
    samplers = {"uniform": UniformSampler(L), "log-uniform": LogUniformSampler(L),
                "unigram": UnigramSampler(counts, 1.0)}
    g = np.random.default_rng(0)
    out = {"L": L, "m": m, "m_unique": m_unique}
    t_choice = best_time(lambda: g.choice(L, m, p=q), repeat=repeat, warmup=1)
    t_integers = best_time(lambda: g.integers(0, L, m), repeat=repeat, warmup=1)
    t_choice_u = best_time(lambda: g.choice(L, m_unique, replace=False, p=q), repeat=repeat,
                           warmup=1)
    out["numpy_choice_p_draws_per_s"] = m / t_choice
    out["numpy_integers_draws_per_s"] = m / t_integers
    out["numpy_choice_p_unique_draws_per_s"] = m_unique / t_choice_u
    for name, s in samplers.items():
        t = best_time(lambda: s.sample(m, g), repeat=repeat, warmup=1)
        tu = best_time(lambda: s.sample(m_unique, g, unique=True), repeat=repeat, warmup=1)
        out[name] = {"draws_per_s": m / t, "vs_numpy_choice_p": t_choice / t,
                     "unique_draws_per_s": m_unique / tu,
                     "unique_vs_numpy_choice_p_unique": t_choice_u / tu}
    out["uniform"]["vs_numpy_integers"] = t_integers * out["uniform"]["draws_per_s"] / m
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=7)
    ap.add_argument("--quick", action="store_true", help="smaller sizes (smoke run)")
    ap.add_argument("--no-write", action="store_true")
    ap.add_argument("--threads", type=int, default=None,
                    help="Numba and torch thread count during the run (the kernels timed here are "
                         "serial; use 1 on a busy machine)")
    a = ap.parse_args(argv)
    if a.threads is not None:
        import numba
        import torch

        prev = numba.get_num_threads(), torch.get_num_threads()
        numba.set_num_threads(a.threads)
        torch.set_num_threads(a.threads)
        try:
            return _run(a)
        finally:
            numba.set_num_threads(prev[0])
            torch.set_num_threads(prev[1])
    return _run(a)


def _run(a) -> int:
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    B, L, C = (128, 100_000, 1024) if a.quick else (1024, 1_000_000, 8192)
    rng = np.random.default_rng(0)
    results = {}
    results["assembly"] = bench_assembly(rng, B, L, C, a.repeat)
    log.info("assembly   %s", results["assembly"])
    results["samplers"] = bench_samplers(rng, L, 1_000_000 if not a.quick else 100_000,
                                         C, a.repeat)
    log.info("samplers   %s", results["samplers"])
    results["goals"] = {
        "assembly_sparse_speedup_ge_3": all(
            results["assembly"][k]["speedup"] >= 3.0
            for k in ("sparse", "sparse_share_columns_false")),
    }
    config = {"B": B, "L": L, "C_target": C, "repeat": a.repeat, "quick": a.quick,
              "threads": ("numba serial kernels; numpy single call"
                          + (f"; --threads {a.threads}" if a.threads is not None else ""))}
    if not a.no_write:
        path = write_result("bench_kernels", config, results)
        log.info("wrote %s", path)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
