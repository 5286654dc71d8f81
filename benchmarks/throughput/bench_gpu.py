"""GPU throughput of the output layer at millions of labels, against the bf16 matmul rate.

One script for a GPU machine, sized to finish in under 5 minutes (``--budget-s`` stops starting
new configurations once it is spent and records the rest as skipped). It measures

1. **the bf16 matmul rate** of the device: a large square GEMM (8192³), TFLOP/s — the roof
   every step below is read against (DESIGN.md §10: the ratio is the figure);
2. **the exact sharded softmax step** (preset ``softmax``: A = all L labels, W in bf16 through
   ``ShardedLabelTable(dtype=torch.bfloat16)``: bf16 matmuls, fp32 log-sum-exp) and
3. **the ``double-distill`` step** (positives ∪ teacher top-K ∪ FAISS-mined ∪ 512 random
   negatives, soft targets) at L ∈ {1M, 2.8M, 10M} and d ∈ {256, 768}: samples/s, the achieved
   fraction of the bf16 matmul rate (6·B·d·|A| FLOP per step over the step time, divided by the
   GEMM rate), the matmul-rate bound on samples/s = rate / (6·d·|A|), and peak GPU memory
   (``torch.cuda.max_memory_allocated`` during the step, the table and its gradient included).
   Configurations that do not fit are skipped with the reason (an estimate against free memory
   before trying, or the out-of-memory error itself);
4. **FAISS GPU index build and search** (IVF over 1M × 256 label vectors) when
   ``faiss.get_num_gpus() > 0``; otherwise the JSON says "no GPU faiss" (or that faiss is not
   installed).

Both steps are the library's own :class:`~xmr.train.step.TrainStep` (the trainer's step) on an
:class:`~xmr.models.XMRModel` built on the device with the dense-input encoder and the table's
dtype (``ModelConfig(encoder="dense", dtype="bfloat16")``; the encoder is linear and fp32): the
encoder, the backward pass and the optimizer (Adam on the encoder, ``RowAdagrad`` on the table:
dense rows for the softmax, the touched rows only for ``double-distill``). Data are synthetic and random (throughput does not
depend on what the labels mean): one positive per row, Zipf-distributed ids; the **teacher** is
a random top-K (K = 20) with random logits — a stand-in with the right shapes, not a model. The
miner's index rebuild is timed once and amortised over ``refresh_every`` steps; without faiss
the ``double-distill`` step runs without mined negatives (``loss.mined=False``, recorded).

The candidate path builds the sparse candidate layout on the host
(:class:`~xmr.negatives.sources.CandidateSources`) and moves it to the device.

The JSON carries the anchors of DESIGN.md §11 (Renée ≈ 24.5k samples/s at 2.8M labels on one
V100 with a 64-d bottleneck; an H100 ≈ 800 TFLOP/s bf16, so the output layer alone is bounded
near 31k samples/s at 2.8M × 768).

Usage::

    python -m benchmarks.throughput.bench_gpu                 # on a GPU machine, < 5 min
    python -m benchmarks.throughput.bench_gpu --tiny          # CPU, seconds: exercises every code path

Writes ``benchmarks/results/bench_gpu_<device-slug>.json`` (``--tiny``: a temporary folder
unless ``--out`` is given).
"""

from __future__ import annotations

import argparse
import gc
import math
import re
import sys
import tempfile
import time
from pathlib import Path

import numpy as np


from benchmarks._common import RESULTS, write_result

ANCHORS = {
    "renee_samples_per_s_2.8M_labels_V100_64d": 24_500,
    "renee_plain_pytorch_baseline_samples_per_s": [800, 1_700],
    "h100_bf16_matmul_tflops": 800,
    "output_layer_bound_samples_per_s_2.8M_x_768_at_800TFLOPs": 800e12 / (6 * 768 * 2.8e6),
    "output_layer_bound_samples_per_s_2.8M_x_64_at_800TFLOPs": 800e12 / (6 * 64 * 2.8e6),
    "source": "DESIGN.md §11",
}


def device_slug(dev) -> str:
    """``nvidia-h100-80gb-hbm3`` from the CUDA device name; ``cpu`` on CPU."""
    import torch

    if dev.type != "cuda":
        return "cpu"
    return re.sub(r"[^a-z0-9]+", "-", torch.cuda.get_device_name(dev).lower()).strip("-")


class Clock:
    """Wall time with device synchronisation (CUDA kernels are asynchronous)."""

    def __init__(self, dev):
        import torch

        self.cuda = dev.type == "cuda"
        self.torch = torch

    def __call__(self) -> float:
        if self.cuda:
            self.torch.cuda.synchronize()
        return time.perf_counter()


def matmul_rate(dev, n: int, dtype, repeat: int = 10) -> dict:
    """FLOP/s of an ``n × n × n`` matmul in ``dtype`` (best of ``repeat`` after 3 warm-ups)."""
    import torch

    clock = Clock(dev)
    a = torch.randn(n, n, device=dev).to(dtype)
    b = torch.randn(n, n, device=dev).to(dtype)
    for _ in range(3):
        a @ b
    best = float("inf")
    for _ in range(repeat):
        t0 = clock()
        a @ b
        best = min(best, clock() - t0)
    del a, b
    return {"n": n, "dtype": str(dtype).replace("torch.", ""), "seconds": best,
            "tflops": 2.0 * n ** 3 / best / 1e12}


def _zipf_ids(rng, L: int, size) -> np.ndarray:
    """Label ids with P(l) ∝ 1/(l+1) (log-uniform): the head is frequent, as in XMC data."""
    u = rng.random(size)
    return np.minimum((np.exp(u * math.log(L + 1)) - 1).astype(np.int64), L - 1)


def _batch(rng, L: int, B: int, K: int):
    pos = (np.arange(B + 1, dtype=np.int64), _zipf_ids(rng, L, B))
    t_ids = np.stack([rng.choice(L, K, replace=False) for _ in range(B)]) if L < 4 * K else \
        np.sort(rng.integers(0, L, (B, K)), axis=1)
    # distinct ids per row (duplicates of a random draw are nudged; K ≪ L)
    for _ in range(3):
        dup = np.zeros_like(t_ids, dtype=bool)
        dup[:, 1:] = t_ids[:, 1:] == t_ids[:, :-1]
        if not dup.any():
            break
        t_ids[dup] = (t_ids[dup] + 1) % L
        t_ids.sort(axis=1)
    t_logits = rng.standard_normal((B, K)).astype(np.float32) * 2.0
    teacher = (np.arange(0, B * K + 1, K, dtype=np.int64), t_ids.reshape(-1), t_logits.reshape(-1))
    return pos, teacher


def _need_bytes(preset: str, L: int, d: int, B: int, chunk: int, es: int) -> float:
    """Rough device memory of a step: W, its gradient, the optimizer's temporaries and (bf16)
    fp32 master rows, buffers."""
    master = 4 if es == 2 else 0  # RowAdagrad's fp32 master rows of a bf16 table
    if preset == "softmax":  # dense grad + RowAdagrad's fp32 copy and update of it
        return L * d * (2 * es + 8 + master) + L * 4 + 4 * B * chunk * 4
    return L * d * (es + master) + L * 4 + 8 * B * 200_000  # sparse grads; [B, C] logits etc.


def run_config(dev, preset: str, L: int, d: int, args, free_bytes) -> dict:
    """Time one (preset, L, d) step configuration; returns its figures (or why it was skipped)."""
    import torch

    from xmr.models import RowAdagrad, XMRModel
    from xmr.models.config import ModelConfig
    from xmr.negatives.sources import CandidateSources
    from xmr.objectives.config import LossConfig
    from xmr.objectives.loss import UnifiedObjective
    from xmr.teachers.store import TeacherStore
    from xmr.train.step import TrainStep

    cuda = dev.type == "cuda"
    dtype = torch.bfloat16 if args.dtype == "bf16" else torch.float32
    es = 2 if dtype == torch.bfloat16 else 4
    B = args.batch
    row = {"preset": preset, "labels": L, "dim": d, "batch": B, "dtype": args.dtype}
    need = _need_bytes(preset, L, d, B, args.chunk, es)
    row["estimated_bytes"] = need
    if free_bytes is not None and need > 0.95 * free_bytes:
        row["skipped"] = (f"does not fit: needs about {need / 2**30:.1f} GiB, "
                          f"{free_bytes / 2**30:.1f} GiB free")
        return row
    clock = Clock(dev)
    rng = np.random.default_rng(0)
    torch.manual_seed(0)
    try:
        mcfg = ModelConfig(dim=d, encoder="dense",
                           dtype="bfloat16" if dtype == torch.bfloat16 else "float32")
        model = XMRModel(args.in_dim, L, mcfg, device=dev)
        table = model.label_table
        opt_enc = torch.optim.Adam(model.encoder.parameters(), lr=1e-3)
        opt_tab = RowAdagrad(table.parameters(), lr=0.05)
        batches = [_batch(rng, L, B, args.teacher_k) for _ in range(2)]
        X = torch.randn(2 * B, args.in_dim, device=dev)  # rows [b·B, (b+1)·B) are batch b
        K = args.teacher_k
        teacher = TeacherStore(indptr=np.arange(0, 2 * B * K + 1, K, dtype=np.int64),
                               ids=np.concatenate([t[1] for _, t in batches]),
                               logits=np.concatenate([t[2] for _, t in batches]), num_labels=L)
        miner, refresh_s = None, 0.0
        if preset != "softmax":
            miner, row["mining"] = _make_miner(L, args)
            if miner is not None:
                t0 = clock()
                miner.maybe_refresh(0, table.weight_numpy)
                refresh_s = clock() - t0
                row.update(refresh_s=refresh_s, refresh_every=args.refresh_every,
                           index_on_gpu=bool(miner.index_.shards_[0].on_gpu))
        no_h = preset != "softmax" and miner is None  # without faiss: P ∪ T ∪ R only
        loss_cfg = LossConfig(preset=preset, proposal="log-uniform",
                              mined=False if no_h else None).resolved()
        sources = CandidateSources(loss_cfg, L, seed=0, teacher=teacher, miner=miner,
                                   label_rows=table.weight_numpy)
        objective = UnifiedObjective(loss_cfg, L, full_softmax_chunk=args.chunk, sources=sources)
        train_step = TrainStep(model, sources, objective, [opt_enc, opt_tab], clock=clock)
        n_cand = []

        def step(t: int) -> dict:
            b = t % 2
            res = train_step(X, np.arange(b * B, (b + 1) * B), batches[b][0], t)
            n_cand.append(res.num_candidates)
            tm = res.timings
            return {"assembly": tm["candidates"],
                    "mining": tm["mining"] + (refresh_s / args.refresh_every if miner else 0.0),
                    "forward_backward": tm["embed"] + tm["loss"] + tm["backward"],
                    "optimizer": tm["optimizer"]}

        for t in range(args.warmup):
            step(t)
        if cuda:
            torch.cuda.reset_peak_memory_stats(dev)
        steps = [step(args.warmup + t) for t in range(args.steps)]
        if cuda:
            row["peak_gpu_bytes"] = torch.cuda.max_memory_allocated(dev)
        totals = [sum(s.values()) for s in steps]
        best = int(np.argmin(totals))
        A = float(np.mean(n_cand))
        row.update(step_s=totals[best], step_median_s=float(np.median(totals)),
                   breakdown_s=steps[best], candidates_A=A, samples_per_s=B / totals[best])
        row["output_layer_flop"] = 6.0 * B * d * A
        row["achieved_tflops"] = row["output_layer_flop"] / row["step_s"] / 1e12
    except (torch.OutOfMemoryError, RuntimeError) as e:  # recorded: the next configuration runs
        msg = str(e).splitlines()[0] if str(e) else type(e).__name__
        if not isinstance(e, torch.OutOfMemoryError) and "out of memory" not in msg.lower() \
                and "ALLOC" not in msg:
            raise
        row["skipped"] = f"out of memory: {msg}"
    return row


def _make_miner(L: int, args):
    """The library's miner over an IVF index (GPU when faiss has one), or None without faiss."""
    from xmr.errors import MissingDependencyError
    from xmr.negatives.miner import HardNegativeMiner

    try:
        from xmr.utils.optional import faiss

        faiss()
    except (MissingDependencyError, ImportError) as e:
        return None, f"skipped: faiss not installed ({type(e).__name__}); P ∪ T ∪ R only"
    nlist = min(args.nlist, max(1, L // 64))
    m = HardNegativeMiner(L, k=32, refresh_every=args.refresh_every, num_negatives=16,
                          factory="IVF{nlist},Flat", use_gpu="auto", seed=0,
                          index_params=dict(nlist=nlist, nprobe=min(nlist, 16),
                                            train_points_per_list=32))
    return m, f"IVF{nlist},Flat, nprobe 16, k=32, 16 sampled per row"


def faiss_gpu_bench(args) -> dict:
    """Build and search an IVF index on the GPU (FAISS); or why not."""
    try:
        from xmr.utils.optional import faiss

        fa = faiss()
    except Exception as e:  # MissingDependencyError or a broken install
        return {"status": f"no GPU faiss (faiss not installed: {type(e).__name__})"}
    if fa.get_num_gpus() <= 0:
        return {"status": "no GPU faiss", "faiss_version": getattr(fa, "__version__", "?")}
    from xmr.data.planted import planted_labels, planted_queries
    from xmr.index import LabelIndex

    L, d = args.faiss_labels, 256
    W = planted_labels(L, d, seed=0)
    Q, _ = planted_queries(W, args.faiss_queries, seed=1)
    t0 = time.perf_counter()
    idx = LabelIndex.build(W, factory="IVF{nlist},Flat", use_gpu=True, seed=0,
                           nlist=args.nlist, train_points_per_list=64)
    build = time.perf_counter() - t0
    idx.search(Q[:256], 100)
    t0 = time.perf_counter()
    idx.search(Q, 100)
    search = time.perf_counter() - t0
    return {"status": "ok", "labels": L, "dim": d, "factory": f"IVF{args.nlist},Flat",
            "build_s": build, "queries": int(Q.shape[0]), "k": 100, "search_s": search,
            "queries_per_s": Q.shape[0] / search}


def main(argv=None) -> int:
    import torch

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--labels", default="1000000,2800000,10000000")
    ap.add_argument("--dims", default="256,768")
    ap.add_argument("--batch", type=int, default=2048)
    ap.add_argument("--in-dim", type=int, default=256)
    ap.add_argument("--chunk", type=int, default=65536, help="labels per exact-softmax chunk")
    ap.add_argument("--dtype", default="bf16", choices=["bf16", "fp32"])
    ap.add_argument("--teacher-k", type=int, default=20)
    ap.add_argument("--refresh-every", type=int, default=100)
    ap.add_argument("--nlist", type=int, default=4096)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--matmul-n", type=int, default=8192)
    ap.add_argument("--faiss-labels", type=int, default=1_000_000)
    ap.add_argument("--faiss-queries", type=int, default=4096)
    ap.add_argument("--budget-s", type=float, default=240.0,
                    help="start no new configuration after this many seconds")
    ap.add_argument("--device", default=None, help="default: cuda if available, else cpu")
    ap.add_argument("--tiny", action="store_true", help="CPU-sized smoke run (seconds)")
    ap.add_argument("--out", default=None)
    args = ap.parse_args(argv)
    dev = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    if args.tiny:
        args.labels, args.dims, args.batch, args.in_dim, args.chunk = "3000", "32", 32, 16, 1024
        args.nlist, args.warmup, args.steps, args.matmul_n = 16, 1, 2, 256
        args.faiss_labels, args.faiss_queries = 5000, 64
    if args.tiny and dev.type == "cpu":
        torch.set_num_threads(1)  # this script's own process; 2-thread barriers stall on a busy box
    labels = [int(v) for v in args.labels.split(",")]
    dims = [int(v) for v in args.dims.split(",")]
    t_start = time.perf_counter()

    mm = {"bf16": matmul_rate(dev, args.matmul_n, torch.bfloat16)}
    if dev.type != "cuda" or args.dtype == "fp32":
        mm["fp32"] = matmul_rate(dev, args.matmul_n, torch.float32)
    rate = mm[args.dtype]["tflops"] * 1e12
    print(f"matmul {args.matmul_n}^3: " + ", ".join(f"{k} {v['tflops']:.2f} TFLOP/s"
                                                   for k, v in mm.items()), flush=True)
    rows = []
    for d in dims:
        for L in labels:
            for preset in ("softmax", "double-distill"):
                if time.perf_counter() - t_start > args.budget_s:
                    rows.append({"preset": preset, "labels": L, "dim": d,
                                 "skipped": f"time budget of {args.budget_s:.0f} s spent"})
                    continue
                free = torch.cuda.mem_get_info(dev)[0] if dev.type == "cuda" else None
                r = run_config(dev, preset, L, d, args, free)
                gc.collect()  # the configuration's tensors are garbage now: give them back
                if dev.type == "cuda":
                    torch.cuda.empty_cache()
                if "step_s" in r:
                    r["fraction_of_matmul_rate"] = r["achieved_tflops"] * 1e12 / rate
                    r["matmul_bound_samples_per_s"] = rate / (6.0 * d * r["candidates_A"])
                    print(f"{preset:<15} L={L:>10,} d={d:<4} |A|={r['candidates_A']:>10,.0f} "
                          f"{r['samples_per_s']:9.0f} samples/s  "
                          f"{r['fraction_of_matmul_rate']:.3f} of the matmul rate  "
                          f"peak {r.get('peak_gpu_bytes', 0) / 2**30:.1f} GiB", flush=True)
                else:
                    print(f"{preset:<15} L={L:>10,} d={d:<4} skipped: {r['skipped']}", flush=True)
                rows.append(r)
    fa = faiss_gpu_bench(args)
    print(f"faiss: {fa}", flush=True)
    slug = device_slug(dev)
    name = f"bench_gpu_{slug}" + ("_tiny" if args.tiny else "")
    out = args.out
    if out is None:
        out = str(Path(tempfile.mkdtemp()) / f"{name}.json") if args.tiny else \
            str(RESULTS / f"{name}.json")
    results = {"device": slug, "matmul": mm, "rows": rows, "faiss_gpu": fa, "anchors": ANCHORS,
               "wall_s": time.perf_counter() - t_start}
    config = {k: v for k, v in vars(args).items()}
    config["data"] = ("random: Zipf positives (1 per row), random teacher top-K with N(0, 4) "
                      "logits (a stand-in with the right shapes)")
    path = write_result(name, config, results, path=out)
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
