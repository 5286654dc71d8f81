"""Benchmark of the sharded softmax layer: exact chunked full softmax vs plain cross-entropy on
materialised logits, and the candidate step, over L labels (DESIGN.md §10).

For every L, in a **fresh subprocess per configuration** (so peak memory is that configuration's
own), it measures

* ``exact``: ``ShardedLabelTable.full_softmax_loss`` forward + backward (soft CSR targets, one
  positive per row), with its default cache of exponentiated logits (≤ 1 GiB, backward skips
  recomputing the chunks kept); ``exact_nocache``: the same with ``cache_bytes=0`` (every chunk
  recomputed, minimum memory);
* ``plain``: ``F.cross_entropy(emb @ Wᵀ, y)`` forward + backward on the materialised B × L logits;
* ``matmul``: ``emb @ Wᵀ`` of the same shapes, measured in the same process, so that the
  achieved rate of a full step (6·B·d·L FLOP) is reported as a ratio to it;
* ``candidates``: a step over ``C`` shared candidates — candidate logits, cross-entropy, backward
  (sparse row gradients), and a RowAdagrad / SparseAdam update of the table — whose time must not
  grow with L.

Peak memory is the growth of the process's peak RSS (``VmHWM`` in /proc/self/status) over a
baseline taken after W and a gradient-sized buffer were allocated and touched (CPU), or
``torch.cuda.max_memory_allocated`` above the same baseline (GPU): ``peak_extra_bytes``. The
buffer is freed before the step (gradients set to None between steps, as
``zero_grad(set_to_none=True)`` does), so the step's own gradient reuses that memory;
``peak_over_weights_bytes`` is the peak above W alone, the gradient included. Times are best-of-N wall
times with ``--threads`` torch threads (default 1); the machine is shared, so ratios measured
side by side are the figures to read.

Usage::

    python -m benchmarks.micro.bench_softmax                      # CPU, L ∈ {10k, 100k, 1M}, fp32
    python -m benchmarks.micro.bench_softmax --tiny               # seconds; smoke test of every path
    python -m benchmarks.micro.bench_softmax --device cuda --dtype bf16 --labels 1000000 10000000

Writes ``benchmarks/results/bench_softmax[_<device>_<dtype>].json`` (``--tiny`` writes to a
temporary folder unless ``--out`` is given).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path


from benchmarks._common import run_worker, vmhwm_bytes, write_result




def _worker(cfg: dict) -> dict:
    """One configuration in this (fresh) process; returns its figures."""
    import torch
    import torch.nn.functional as F

    from xmr.models import RowAdagrad, ShardedLabelTable

    torch.set_num_threads(cfg["threads"])
    torch.manual_seed(0)
    dev = torch.device(cfg["device"])
    dtype = {"fp32": torch.float32, "bf16": torch.bfloat16}[cfg["dtype"]]
    L, d, B, kind = cfg["labels"], cfg["dim"], cfg["batch"], cfg["kind"]
    cuda = dev.type == "cuda"

    def sync():
        if cuda:
            torch.cuda.synchronize()

    def best(fn, repeat):
        fn()
        sync()
        ts = []
        for _ in range(repeat):
            t0 = time.perf_counter()
            fn()
            sync()
            ts.append(time.perf_counter() - t0)
        return min(ts)

    table = ShardedLabelTable(L, d, num_shards=cfg.get("shards", 1), dtype=dtype, device=dev)
    emb = torch.nn.functional.normalize(torch.randn(B, d, device=dev), dim=1).requires_grad_()
    y = torch.randint(0, L, (B,), device=dev)

    # baselines: W alone; W plus a gradient-sized buffer, touched
    sync()
    base_w = torch.cuda.max_memory_allocated() if cuda else vmhwm_bytes()
    table.weight.grad = torch.ones_like(table.weight)
    sync()
    base = torch.cuda.max_memory_allocated() if cuda else vmhwm_bytes()
    table.weight.grad = None
    out = {}

    def peak():
        sync()
        now = torch.cuda.max_memory_allocated() if cuda else vmhwm_bytes()
        out["peak_over_weights_bytes"] = now - base_w  # gradient included
        return max(0, now - base)

    if kind in ("exact", "exact_nocache", "plain"):
        indptr = torch.arange(B + 1, device=dev)
        vals = torch.ones(B, device=dev)
        W = table.weight

        def step_exact():
            table.weight.grad = None
            emb.grad = None
            kw = {"cache_bytes": 0} if kind == "exact_nocache" else {}
            table.full_softmax_loss(emb, indptr, y, vals, chunk_size=cfg["chunk"], **kw).backward()

        def step_plain():
            W.grad = None
            emb.grad = None
            logits = (emb.to(W.dtype) @ W.T).float()
            F.cross_entropy(logits, y).backward()

        step = step_plain if kind == "plain" else step_exact
        step()
        out["peak_extra_bytes"] = peak()
        out["step_s"] = best(step, cfg["repeat"])
        with torch.no_grad():
            e = emb.detach().to(W.dtype)
            out["matmul_s"] = best(lambda: e @ W.T, cfg["repeat"] + 1)
        out["step_flop"] = 6.0 * B * d * L
        out["achieved_gflops"] = out["step_flop"] / out["step_s"] / 1e9
        out["matmul_gflops"] = 2.0 * B * d * L / out["matmul_s"] / 1e9
        out["fraction_of_matmul_rate"] = out["achieved_gflops"] / out["matmul_gflops"]
        out["samples_per_s"] = B / out["step_s"]
    elif kind == "candidates":
        C = cfg["candidates"]
        cand = torch.randperm(L, device=dev)[:C]
        target = torch.arange(B, device=dev) % C
        opt_name = cfg["optimizer"]
        opt = (RowAdagrad(table.parameters(), lr=0.1) if opt_name == "rowadagrad"
               else torch.optim.SparseAdam(list(table.parameters()), lr=1e-3))

        def step_cand():
            opt.zero_grad(set_to_none=True)
            emb.grad = None
            F.cross_entropy(table.candidate_logits(emb, cand), target).backward()
            opt.step()

        step_cand()  # creates optimizer state
        out["peak_extra_bytes"] = peak()
        out["step_s"] = best(step_cand, cfg["repeat"])
        out["step_flop"] = 6.0 * B * d * C
    return out


def _run_config(cfg: dict) -> dict:
    t0 = time.perf_counter()
    proc = run_worker("benchmarks.micro.bench_softmax", ["--worker", json.dumps(cfg)])
    if proc.returncode != 0:
        raise RuntimeError(f"worker {cfg} failed:\n{proc.stderr[-3000:]}")
    res = json.loads(proc.stdout.strip().splitlines()[-1])
    res["process_wall_s"] = round(time.perf_counter() - t0, 2)
    return {**cfg, **res}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--worker", help=argparse.SUPPRESS)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--dtype", default="fp32", choices=["fp32", "bf16"])
    ap.add_argument("--labels", type=int, nargs="+", default=[10_000, 100_000, 1_000_000])
    ap.add_argument("--dim", type=int, default=256)
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--chunk", type=int, default=None, help="labels per chunk (default: the "
                    "library's automatic choice)")
    ap.add_argument("--chunk-sweep", type=int, nargs="*", default=[], help="also time the exact "
                    "step with these chunk sizes at --sweep-labels (to pick the default)")
    ap.add_argument("--sweep-labels", type=int, default=100_000)
    ap.add_argument("--candidates", type=int, default=2048)
    ap.add_argument("--repeat", type=int, default=2, help="timed runs after one warm-up")
    ap.add_argument("--no-plain", action="store_true", help="skip the materialised baseline "
                    "(e.g. where B × L logits do not fit)")
    ap.add_argument("--threads", type=int, default=1, help="torch threads per worker (default 1: "
                    "on a CPU shared with other jobs, 2 spinning threads make small ops 10× "
                    "slower and the timings meaningless)")
    ap.add_argument("--tiny", action="store_true", help="tiny sizes, for a smoke test")
    ap.add_argument("--out", default=None, help="results file (default: benchmarks/results/...)")
    args = ap.parse_args(argv)

    if args.worker:
        print(json.dumps(_worker(json.loads(args.worker))))
        return 0

    if args.tiny:
        args.labels, args.dim, args.batch, args.candidates = [1000, 5000], 32, 16, 64
        args.chunk = args.chunk or 512
    base = dict(device=args.device, dtype=args.dtype, dim=args.dim, batch=args.batch,
                repeat=args.repeat, threads=args.threads)
    rows = []
    for L in args.labels:
        kinds = ["exact", "exact_nocache"] + ([] if args.no_plain else ["plain"])
        for kind in kinds:
            rows.append(_run_config({**base, "kind": kind, "labels": L, "chunk": args.chunk}))
            print(_fmt(rows[-1]), flush=True)
        for opt in ("rowadagrad", "sparseadam"):
            rows.append(_run_config({**base, "kind": "candidates", "labels": L,
                                     "candidates": args.candidates, "optimizer": opt,
                                     "repeat": max(args.repeat, 10)}))
            print(_fmt(rows[-1]), flush=True)

    for c in args.chunk_sweep:
        rows.append(_run_config({**base, "kind": "exact", "labels": args.sweep_labels, "chunk": c,
                                 "sweep": True}))
        print(_fmt(rows[-1]) + f"  (chunk {c})", flush=True)

    summary = _summary(rows, args)
    print(json.dumps(summary, indent=2))
    name = "bench_softmax" + ("" if (args.device, args.dtype) == ("cpu", "fp32")
                              else f"_{args.device}_{args.dtype}")
    if args.tiny and args.out is None:
        args.out = str(Path(tempfile.mkdtemp()) / f"{name}_tiny.json")
    path = write_result(name, {k: v for k, v in vars(args).items() if k != "worker"},
                        {"rows": rows, "summary": summary}, path=args.out)
    print(f"wrote {path}")
    return 0


def _fmt(r: dict) -> str:
    extra = (f"  {r['fraction_of_matmul_rate']:.2f}× matmul rate"
             if "fraction_of_matmul_rate" in r else "")
    opt = f" ({r['optimizer']})" if "optimizer" in r else ""
    return (f"L={r['labels']:>9,} {r['kind']:<10}{opt:<13} step {r['step_s'] * 1e3:9.1f} ms  "
            f"peak +{r['peak_extra_bytes'] / 2**20:8.0f} MiB{extra}")


def _summary(rows, args) -> dict:
    """Ratios and the brief's targets, at the largest L measured."""
    by = {(r["kind"], r["labels"], r.get("optimizer")): r for r in rows if not r.get("sweep")}
    Lmax, Lmin = max(args.labels), min(args.labels)
    s = {"labels_max": Lmax}
    ex, pl = by.get(("exact", Lmax, None)), by.get(("plain", Lmax, None))
    nc = by.get(("exact_nocache", Lmax, None))
    if nc and pl:
        s["exact_nocache_peak_extra_gib"] = nc["peak_extra_bytes"] / 2**30
        s["exact_nocache_peak_over_weights_gib"] = nc["peak_over_weights_bytes"] / 2**30
        s["exact_nocache_speed_vs_plain"] = pl["step_s"] / nc["step_s"]
    if ex:
        s["exact_peak_extra_gib"] = ex["peak_extra_bytes"] / 2**30
        s["exact_peak_over_weights_gib"] = ex["peak_over_weights_bytes"] / 2**30
        s["exact_fraction_of_matmul_rate"] = ex["fraction_of_matmul_rate"]
        s["exact_samples_per_s"] = ex["samples_per_s"]
    if ex and pl:
        s["plain_peak_extra_gib"] = pl["peak_extra_bytes"] / 2**30
        s["plain_peak_over_weights_gib"] = pl["peak_over_weights_bytes"] / 2**30
        s["plain_fraction_of_matmul_rate"] = pl["fraction_of_matmul_rate"]
        s["exact_speed_vs_plain"] = pl["step_s"] / ex["step_s"]
        s["target_exact_within_1.5GiB"] = s["exact_peak_extra_gib"] <= 1.5
        s["target_exact_speed_at_least_0.8x_plain"] = s["exact_speed_vs_plain"] >= 0.8
    for opt in ("rowadagrad", "sparseadam"):
        hi, lo = by.get(("candidates", Lmax, opt)), by.get(("candidates", Lmin, opt))
        if hi and lo:
            s[f"candidate_step_{opt}_time_ratio_Lmax_vs_Lmin"] = hi["step_s"] / lo["step_s"]
            s[f"target_candidate_step_{opt}_within_1.5x"] = hi["step_s"] / lo["step_s"] <= 1.5
    return s


if __name__ == "__main__":
    sys.exit(main())
