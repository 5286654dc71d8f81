"""Estimated time per epoch and peak memory of every public recipe, from a cost model.

    python -m benchmarks.recipes.estimate_costs [--root DIR] [--out FILE] [--no-readme]

For each dataset of ``benchmarks/recipes/configs/`` and each model (teacher, student) it counts the work
of one training step (DESIGN.md §10) and divides it by rates:

* output layer: ``6·B·d·L`` FLOP for the exact softmax, ``6·B·d·C`` for a shared candidate set
  of ``C ≈ B·(labels/point + teacher_k + mined) + |R|`` columns (the union of the batch's
  candidates, an upper bound, capped at L); ``2·B·d·L`` more when the table's rows are all
  updated (dense gradient of the exact softmax goes through the optimizer: counted as bytes);
* encoder: the EmbeddingBag, ``4·B·f·d`` FLOP (forward + weight gradient) for ``f`` non-zero
  features per row; its dense Adam update streams ``32·D·d`` bytes per step (parameter, gradient,
  two moments, read and written);
* miner (student): the index search, ``2·B·d·S`` FLOP with ``S = L`` for ``Flat`` and
  ``S = nprobe·L/nlist`` for IVF, plus the rebuild (k-means, 25 iterations over
  ``min(L, 64·nlist)`` points, and the assignment of all L labels) amortised over
  ``refresh_every`` steps.

Rates: **CPU** — the matmul rate and the exact step's fraction of it measured by
``benchmarks/micro/bench_softmax.py`` (``benchmarks/results/bench_softmax.json``; and
``bench_step.json`` when present), else a matmul measured here; memory bandwidth from a
streaming add measured here. **GPU (H100, bf16)** — DESIGN.md §11's anchor of ≈ 800 TFLOP/s in a
large bf16 matmul (an anchor, not a measurement of this code) at an assumed 50 % efficiency, and
the H100 SXM's 3.35 TB/s HBM3 bandwidth (the vendor's figure), unless a
``bench_softmax_cuda_bf16.json`` measured on the GPU is present.

Memory = parameters + gradients + optimizer state + activations (+ miner index and teacher store
for the student; + the CSR training data on the host for the CPU column).

Every figure is an **estimate**. It writes ``benchmarks/results/public_estimates.json`` and the
table between the markers of ``benchmarks/recipes/configs/README.md``.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path
from typing import Optional


from benchmarks._common import RESULTS, write_result

CONFIGS = Path(__file__).resolve().parent / "configs"
README = CONFIGS / "README.md"
BEGIN, END = "<!-- estimates:begin -->", "<!-- estimates:end -->"

GPU_ANCHOR_FLOPS = 800e12   # DESIGN.md §11: bf16 large-matmul rate of an H100 (anchor)
GPU_EFFICIENCY = 0.5        # assumed fraction of the anchor reached by a training step
GPU_BANDWIDTH = 3.35e12     # H100 SXM HBM3, vendor figure (bytes/s)
CPU_EFFICIENCY_DEFAULT = 0.5  # used only when no benchmark measured the exact step
FEATURES_PER_ROW = {"bow": 100, "lf": 8}  # assumed when the dataset is not prepared
#: teacher overrides estimated as well where the exact softmax takes over CPU_ALT_ABOVE_S per
#: epoch on the CPU (run_public.py --teacher-set ...)
CPU_ALTERNATIVE = ["loss.preset=sampled", "loss.num_random=16384"]
CPU_ALT_ABOVE_S = 3600.0
KMEANS_ITERS = 25           # FAISS's default
IVF_POINTS_PER_LIST = 64    # xmr.index.label_index default


# --------------------------------------------------------------------------------------------
# rates
# --------------------------------------------------------------------------------------------

def _rows(path: Path):
    try:
        payload = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    res = payload.get("results", {})
    rows = res.get("rows") if isinstance(res, dict) else res
    return rows if isinstance(rows, list) else None


def _measure_matmul() -> float:
    """FLOP/s of ``emb @ Wᵀ`` (B=256, d=256, L=100k, fp32), best of 3, measured now."""
    import torch

    e, W = torch.randn(256, 256), torch.randn(100_000, 256)
    e @ W.T
    best = min(_timed(lambda: e @ W.T) for _ in range(3))
    return 2.0 * 256 * 256 * 100_000 / best


def _measure_bandwidth() -> float:
    """Bytes/s of ``a += b`` over 2 × 256 MB fp32 (three streams), best of 3, measured now."""
    import torch

    a, b = torch.ones(1 << 26), torch.ones(1 << 26)
    a.add_(b)
    best = min(_timed(lambda: a.add_(b)) for _ in range(3))
    return 3 * 4 * (1 << 26) / best


def _timed(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def _from_bench(rows) -> Optional[dict]:
    """Matmul rate and the step's fraction of it from bench_softmax rows (``kind`` "exact")
    or bench_step rows (``preset``; a full-softmax row preferred), at the largest L."""
    rows = [r for r in rows if isinstance(r, dict) and r.get("matmul_gflops")
            and r.get("achieved_gflops") and not r.get("sweep")]
    full = [r for r in rows if r.get("kind") == "exact" or r.get("preset") == "softmax"]
    pick = full or rows
    if not pick:
        return None
    top = max(pick, key=lambda r: r.get("labels", 0))
    return {"matmul_flops": max(r["matmul_gflops"] for r in pick) * 1e9,
            "efficiency": float(top["achieved_gflops"] / top["matmul_gflops"])}


def cpu_rates(results_dir: Path) -> dict:
    """Matmul rate, exact-step efficiency and memory bandwidth of this CPU, with their sources."""
    out = None
    for name in ("bench_step.json", "bench_softmax.json"):
        rows = _rows(results_dir / name)
        got = _from_bench(rows) if rows else None
        if got:
            out = {**got, "source": f"benchmarks/results/{name}"}
            break
    if out is None:
        out = {"matmul_flops": _measure_matmul(), "efficiency": CPU_EFFICIENCY_DEFAULT,
               "source": "matmul measured by estimate_costs.py (no bench_softmax.json yet); "
                         f"step efficiency assumed {CPU_EFFICIENCY_DEFAULT}"}
    out["bandwidth"] = _measure_bandwidth()
    out["bandwidth_source"] = "streaming add measured by estimate_costs.py"
    return out


def gpu_rates(results_dir: Path) -> dict:
    rows = _rows(results_dir / "bench_softmax_cuda_bf16.json")
    got = _from_bench(rows) if rows else None
    if got:
        return {**got, "bandwidth": GPU_BANDWIDTH,
                "source": "benchmarks/results/bench_softmax_cuda_bf16.json (measured)",
                "bandwidth_source": "H100 SXM vendor figure"}
    return {"matmul_flops": GPU_ANCHOR_FLOPS, "efficiency": GPU_EFFICIENCY, "bandwidth": GPU_BANDWIDTH,
            "source": f"DESIGN.md §11 anchor {GPU_ANCHOR_FLOPS / 1e12:.0f} TFLOP/s bf16 (not a "
                      f"measurement) at an assumed {GPU_EFFICIENCY:.0%} efficiency",
            "bandwidth_source": "H100 SXM vendor figure"}


# --------------------------------------------------------------------------------------------
# the cost model
# --------------------------------------------------------------------------------------------

def features_per_row(name: str, kind: str, root: Optional[str]) -> tuple:
    """Average non-zeros per training row: measured on the prepared X_trn, else assumed."""
    if root is not None:
        from xmr.data.prepare import dataset_dir, is_prepared

        if is_prepared(name, root):
            import numpy as np

            with np.load(dataset_dir(name, root) / "X_trn.npz") as z:
                indptr = z["indptr"]
            return float(indptr[-1] / max(len(indptr) - 1, 1)), "measured"
    return float(FEATURES_PER_ROW[kind]), "assumed"


def miner_cost(L: int, d: int, B: int, factory: str, refresh_every: int) -> dict:
    """FLOP per step of mining: search plus the amortised rebuild."""
    if factory.lower() == "flat":
        search = 2.0 * B * d * L
        build = 0.0
    else:  # IVF (the configs use no other factory for large L)
        nlist = max(1, min(L, round(4 * math.sqrt(L))))
        nprobe = max(1, min(nlist, max(32, nlist // 64)))
        search = 2.0 * B * d * (nprobe * L / nlist + nlist)
        n_train = min(L, IVF_POINTS_PER_LIST * nlist)
        build = 2.0 * d * nlist * (KMEANS_ITERS * n_train + L)
    return {"search_flop": search, "rebuild_flop_per_step": build / max(refresh_every, 1)}


def model_cost(name: str, info, cfg, role: str, f: float) -> dict:
    """Work per step and sizes of one model (device independent)."""
    st = info.stats
    L, D, N = st.num_labels, st.num_features, st.n_train
    if info.kind == "lf":
        D = None  # xmr builds its own TF-IDF vocabulary; see below
    lc = cfg.loss.resolved()
    B, d = cfg.optim.batch_size, cfg.model.dim
    n_rows = N * (1 - cfg.data.valid_fraction)
    steps = math.ceil(n_rows / B)
    lpp = st.labels_per_point
    if lc.all_labels:
        C = L
    else:
        C = B * lpp + lc.num_random
        if lc.teacher_negatives:
            C += B * lc.teacher_k
        if lc.mined:
            C += B * (cfg.miner.num_negatives or cfg.miner.k)
        C = int(min(L, math.ceil(C)))
    out = {"preset": lc.preset, "dim": d, "batch": B, "epochs": cfg.optim.epochs,
           "steps_per_epoch": steps, "candidates": int(C),
           "output_flop": 6.0 * B * d * C, "encoder_flop": 4.0 * B * f * d}
    # LF sets: the vocabulary of title words is not published; assume the BoW D (an upper
    # bound: the repository's D for these sets is a token vocabulary of the same texts).
    D_eff = D if D is not None else st.num_features
    out["num_features"] = D_eff
    out["encoder_params"] = D_eff * d
    out["table_params"] = L * d
    out["encoder_opt_bytes"] = 32.0 * D_eff * d  # dense Adam: p, g, m, v read and written
    # table optimizer traffic: dense gradient of all rows (softmax) or the touched rows
    rows_touched = L if lc.all_labels else C
    out["table_opt_bytes"] = 16.0 * rows_touched * d
    if lc.mined and not lc.all_labels:
        out.update(miner_cost(L, d, B, cfg.miner.factory, cfg.miner.refresh_every))
    else:
        out.update(search_flop=0.0, rebuild_flop_per_step=0.0)
    out["chunk"] = min(L, cfg.optim.full_softmax_chunk)
    out["eval_flop_per_epoch"] = (2.0 * N * cfg.data.valid_fraction * d * L
                                  if cfg.eval_every else 0.0)
    out["predict_train_flop"] = 2.0 * N * d * L   # teacher export (exact top-k)
    out["predict_test_flop"] = 2.0 * st.n_test * d * L
    out["teacher_k"] = lc.teacher_k if lc.needs_teacher else 0
    out["n_train"] = N
    out["features_per_row"] = f
    return out


def device_estimate(c: dict, rates: dict, gpu: bool) -> dict:
    """Seconds per epoch and peak bytes of one model on one device (estimates)."""
    flops = rates["matmul_flops"] * rates["efficiency"]
    bw = rates["bandwidth"]
    step_flop = c["output_flop"] + c["encoder_flop"] + c["search_flop"] + c["rebuild_flop_per_step"]
    step_bytes = c["encoder_opt_bytes"] + c["table_opt_bytes"]
    t_compute = step_flop / flops
    t_memory = step_bytes / bw
    epoch = c["steps_per_epoch"] * (t_compute + t_memory) + c["eval_flop_per_epoch"] / flops
    # memory
    wt = 2 if gpu else 4  # W in bf16 on the GPU (DESIGN §4), fp32 on the CPU
    B, d, C = c["batch"], c["dim"], c["candidates"]
    enc = 16.0 * c["encoder_params"]  # fp32 param + grad + Adam m, v
    table = c["table_params"] * wt + 4.0 * c["table_params"] / d  # W + row-wise Adagrad state
    if c["preset"] in ("softmax", "distill"):
        table_grad = c["table_params"] * wt  # dense gradient of every row
        act = 3 * 4.0 * B * c["chunk"]       # a chunk of logits, its softmax and gradient
    else:
        table_grad = C * d * wt              # sparse rows
        act = 4 * 4.0 * B * C                # logits, offsets, targets, gradient
    act += 4 * 4.0 * B * d
    parts = {"encoder": enc, "label_table": table + table_grad, "activations": act}
    host = {}
    if c["search_flop"]:
        host["miner_index"] = 4.0 * c["table_params"] + 8.0 * c["table_params"] / d
    if c["teacher_k"]:
        host["teacher_store"] = 6.0 * c["n_train"] * c["teacher_k"] + 8.0 * c["n_train"]
    host["training_data"] = 8.0 * c["n_train"] * c["features_per_row"]
    peak = sum(parts.values()) + (sum(host.values()) if not gpu else 0.0)
    return {"epoch_s": epoch, "step_s": t_compute + t_memory, "compute_s_per_step": t_compute,
            "memory_traffic_s_per_step": t_memory, "peak_bytes": peak,
            "device_bytes": parts, "host_bytes": host,
            "teacher_export_s": c["predict_train_flop"] / flops,
            "test_predict_s": c["predict_test_flop"] / flops}


def estimate_all(root: Optional[str] = None, results_dir: Path = RESULTS) -> dict:
    from xmr.data.registry import get_dataset
    from xmr.train.config import TrainConfig

    rates = {"cpu": cpu_rates(results_dir), "gpu": gpu_rates(results_dir)}
    datasets = {}
    for folder in sorted(p for p in CONFIGS.iterdir() if p.is_dir()):
        info = get_dataset(folder.name)
        f, f_src = features_per_row(info.name, info.kind, root)
        entry = {"kind": info.kind, "L": info.stats.num_labels, "N_train": info.stats.n_train,
                 "features_per_row": f, "features_per_row_source": f_src, "models": {}}
        for role in ("teacher", "student"):
            cfg = TrainConfig.from_json(folder / f"{role}.json")
            c = model_cost(info.name, info, cfg, role, f)
            entry["models"][role] = {"work": c, "cpu": device_estimate(c, rates["cpu"], False),
                                     "gpu": device_estimate(c, rates["gpu"], True)}
            if role == "teacher" and entry["models"][role]["cpu"]["epoch_s"] > CPU_ALT_ABOVE_S:
                # where the exact softmax is impractical on the CPU: the sampled alternative
                alt = cfg.with_overrides(CPU_ALTERNATIVE)
                c = model_cost(info.name, info, alt, role, f)
                if c["candidates"] > info.stats.num_labels // 4:
                    continue  # L too small for sampling to save much
                entry["models"]["teacher (CPU alternative)"] = {
                    "overrides": CPU_ALTERNATIVE, "work": c,
                    "cpu": device_estimate(c, rates["cpu"], False),
                    "gpu": device_estimate(c, rates["gpu"], True)}
        datasets[info.name] = entry
    return {"rates": rates, "datasets": datasets}


# --------------------------------------------------------------------------------------------
# rendering
# --------------------------------------------------------------------------------------------

def _t(s: float) -> str:
    if s < 1:
        return f"{s * 1000:.0f} ms"
    if s < 120:
        return f"{s:.0f} s"
    if s < 7200:
        return f"{s / 60:.0f} min"
    if s < 2 * 86400:
        return f"{s / 3600:.1f} h"
    return f"{s / 86400:.0f} d"


def _gib(b: float) -> str:
    g = b / 2**30
    return f"{g:.2f} GiB" if g < 10 else f"{g:.0f} GiB"


def render_table(est: dict) -> str:
    order = ["EURLex-4K", "Wiki10-31K", "AmazonCat-13K", "Amazon-670K", "Wiki-500K", "Amazon-3M",
             "LF-AmazonTitles-131K", "LF-AmazonTitles-1.3M"]
    names = [n for n in order if n in est["datasets"]] + sorted(
        n for n in est["datasets"] if n not in order)
    lines = ["| dataset | model | preset | d | B | C | GPU epoch (est.) | GPU peak (est.) | "
             "CPU epoch (est.) | CPU peak (est.) |",
             "|---|---|---|---:|---:|---:|---:|---:|---:|---:|"]
    for n in names:
        for role, m in est["datasets"][n]["models"].items():
            w, g, c = m["work"], m["gpu"], m["cpu"]
            lines.append(f"| {n} | {role} | {w['preset']} | {w['dim']} | {w['batch']} | "
                         f"{w['candidates']:,} | {_t(g['epoch_s'])} | {_gib(g['peak_bytes'])} | "
                         f"{_t(c['epoch_s'])} | {_gib(c['peak_bytes'])} |")
    r = est["rates"]
    lines += ["", f"Rates — CPU: matmul {r['cpu']['matmul_flops'] / 1e9:.0f} GFLOP/s × step "
              f"efficiency {r['cpu']['efficiency']:.2f} ({r['cpu']['source']}), memory "
              f"{r['cpu']['bandwidth'] / 1e9:.1f} GB/s ({r['cpu']['bandwidth_source']}); "
              f"GPU: {r['gpu']['matmul_flops'] / 1e12:.0f} TFLOP/s × {r['gpu']['efficiency']:.2f} "
              f"({r['gpu']['source']}), {r['gpu']['bandwidth'] / 1e12:.2f} TB/s "
              f"({r['gpu']['bandwidth_source']})."]
    return "\n".join(lines)


def update_readme(table: str, path: Path = README) -> bool:
    """Replace the text between the estimate markers of the README; False if none."""
    if not path.is_file():
        return False
    text = path.read_text()
    i, j = text.find(BEGIN), text.find(END)
    if i < 0 or j < i:
        return False
    from xmr.utils.atomic import atomic_open

    with atomic_open(path, "w") as f:
        f.write(text[:i + len(BEGIN)] + "\n" + table + "\n" + text[j:])
    return True


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--root", default=None, help="data root: measure features/row on prepared sets")
    ap.add_argument("--out", default=None, help="results file (default: "
                    "benchmarks/results/public_estimates.json)")
    ap.add_argument("--no-readme", action="store_true", help="do not rewrite the README table")
    args = ap.parse_args(argv)
    est = estimate_all(args.root)
    table = render_table(est)
    print(table)
    path = write_result("public_estimates", {"root": args.root, "note": "all figures are "
                        "estimates from a cost model, not measurements of training runs"},
                        est, path=args.out)
    print(f"wrote {path}")
    if not args.no_readme and update_readme(table):
        print(f"updated {README}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
