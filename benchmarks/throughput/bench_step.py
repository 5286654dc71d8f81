"""Training-step throughput and peak memory as the label count L grows (DESIGN.md §10).

For L ∈ {10k, 100k, 1M} on CPU, one full training step — the library's own
:class:`~xmr.train.step.TrainStep` (the trainer's step) on an :class:`~xmr.models.XMRModel` with
the dense-input encoder (``ModelConfig(encoder="dense")``: d_in → hidden → d = 256), batch
B = 256, :class:`~xmr.negatives.sources.CandidateSources` and
:class:`~xmr.objectives.loss.UnifiedObjective`, Adam on the encoder, :class:`~xmr.models.RowAdagrad`
on the label table — is timed for four presets of the loss family (DESIGN.md §5):

* ``softmax``: the exact sharded softmax over all L labels (|A| = L, dense table gradient);
* ``sampled``: positives + 2048 random negatives (log-uniform proposal, logQ-corrected);
* ``mined``: positives + FAISS-mined hard negatives + 512 random ones. The miner uses the
  library's default index (``factory="auto"``: ``IVF1024,SQ8`` with nprobe 2 from 100k labels,
  ``HNSW32`` below, chosen by ``benchmarks.micro.bench_mining_index``) and refreshes it **in a
  background thread** (``async_refresh``, one FAISS thread, ``swap_lag = refresh_every``) every
  ``refresh_every`` steps (100 / 500 / 1000 at L = 10k / 100k / 1M: long enough that a build
  finishes within a period on this machine). One whole period is run and its mean step is
  reported, so the snapshot of the table and any wait for the build at the swap are in it
  (``--sync-refresh``: the old measurement, a rebuild on the training thread timed once and
  divided by ``refresh_every``). The label table is **planted** (clustered rows, as a trained
  table has; a random init has no neighbourhoods), and the recall@k of the mined shortlist
  against exact search over the table the index was built from is reported beside the step
  (``shortlist_recall``, on the pool batches' embeddings);
* ``double-distill``: positives + the teacher's top-K (soft targets and negatives) + mined +
  random negatives. The teacher is the generator's **Bayes top-K** (K = 20, logits log p*):
  the ideal teacher; its cost in a real run is reading a memory-mapped store, not included.

Data: :class:`~xmr.data.synthetic.SyntheticXMC` (dense x, labels drawn from p*, 2 per point;
random negatives are log-uniform since the generator's ids are sorted by popularity). A pool of
a few batches is generated once per L in this process and cycled through.

Each (preset, L) runs in a **fresh subprocess**, so that its peak memory is its own: the peak is
the growth of ``VmHWM`` (/proc/self/status) over its value after the model, optimizers and data
were allocated. Where the time goes — encoder (forward + backward), candidate assembly (+
sampling and reading the teacher rows), mining (search + amortised refresh), logits + loss
forward/backward, optimizer — is read per step from the step's phase timings (backward split
at φ(x), ``TrainStep(split_backward=True)``); the step reported is the fastest of the timed steps (best-of-N: the machine is
shared) with its own breakdown, and the median is recorded too.

**FLOP floor.** A step costs at least 6·B·d·|A| FLOP in the output layer (forward logits,
∂W, ∂φ) plus 6·B·Σ(in·out) in the encoder's linear layers. In the same process, the three
matmuls of each layer are timed at the step's own shapes ([B,d]·[d,|A|], [|A|,B]·[B,d],
[B,|A|]·[|A|,d], and likewise for the encoder); their sum is the floor time, and
``x_floor`` = step time / floor time (1.0 would be a step that is nothing but its matmuls).
Note the exact softmax recomputes the logits in backward (8·B·d·L FLOP done), so its ratio
cannot go below ≈ 1.33.

Usage::

    python -m benchmarks.throughput.bench_step                       # L = 10k, 100k, 1M (≈ 10 min)
    python -m benchmarks.throughput.bench_step --labels 10000,100000
    python -m benchmarks.throughput.bench_step --tiny                # seconds (smoke test; temp output)

Writes ``benchmarks/results/bench_step.json``.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np


from benchmarks._common import reset_vmhwm, run_worker, vmhwm_bytes, write_result

PRESETS = ("softmax", "sampled", "mined", "double-distill")
#: the miner's index and refresh cadence (see the module docstring)
MINER_FACTORY = "auto"  # the library's default (xmr.negatives.miner.auto_index)
MINER_PARAMS = ""
#: long enough that the background build (one FAISS thread) finishes within a period
REFRESH_EVERY = "10000:100,100000:500,1000000:1000"
COMPONENTS = ("encoder", "assembly", "mining", "logits_loss", "optimizer")




# ------------------------------------------------------------------------------------ data
def make_data(L: int, cfg: dict, path: Path) -> float:
    """A pool of ``cfg['pool_batches']`` batches for L labels, saved to ``path`` (npz).

    X f32[n, d_in]; positives (2 per row, drawn from p*) as CSR; the Bayes top-K teacher as CSR
    with logits log p*. Returns the generation time (s).
    """
    from xmr.data.synthetic import SyntheticXMC

    t0 = time.perf_counter()
    gen = SyntheticXMC(L, cfg["in_dim"], rank=16, seed=0)
    n = cfg["batch"] * cfg["pool_batches"]
    X = gen.sample_x(n, seed=1)
    pos = gen.sample_labels(X, seed=1, labels_per_point=cfg["labels_per_point"])  # i64[n, m]
    probs, tids = gen.bayes_topk(X, cfg["teacher_k"])  # [n, K]
    np.savez(path, X=X, pos=pos, t_ids=tids,
             t_logits=np.log(np.maximum(probs, 1e-30)).astype(np.float32))
    return time.perf_counter() - t0


def _rows_csr(M: np.ndarray, rows: slice):
    """Rows of a dense id matrix ``[n, m]`` as CSR ``(indptr i64[B+1], ids i64[B*m])``."""
    sub = M[rows]
    B, m = sub.shape
    return np.arange(0, B * m + 1, m, dtype=np.int64), sub.reshape(-1).astype(np.int64)


# ---------------------------------------------------------------------------------- worker
def _worker(cfg: dict) -> dict:
    """One (preset, L) configuration in this fresh process; returns its figures."""
    import torch

    from xmr.index.label_index import default_nlist
    from xmr.models import RowAdagrad, XMRModel
    from xmr.models.config import ModelConfig
    from xmr.negatives.miner import HardNegativeMiner
    from xmr.negatives.sources import CandidateSources
    from xmr.objectives.config import LossConfig
    from xmr.objectives.loss import UnifiedObjective
    from xmr.teachers.store import TeacherStore
    from xmr.train.step import TrainStep

    torch.manual_seed(0)
    if cfg.get("threads"):  # a fresh process: nothing to restore
        torch.set_num_threads(cfg["threads"])
        if cfg["preset"] in ("mined", "double-distill"):
            from xmr.utils.optional import faiss

            # the miner's search (the training thread waits for it; the background build sets
            # its own count, build_threads)
            faiss().omp_set_num_threads(cfg.get("search_threads") or cfg["threads"])
    pc = time.perf_counter
    L, d, B, d_in = cfg["labels"], cfg["dim"], cfg["batch"], cfg["in_dim"]
    preset = cfg["preset"]
    z = np.load(cfg["data"])
    X, P, TI, TL = z["X"], z["pos"], z["t_ids"], z["t_logits"]
    nb = X.shape[0] // B
    pos_of = [_rows_csr(P, slice(b * B, (b + 1) * B)) for b in range(nb)]
    K = TI.shape[1]
    teacher = TeacherStore(indptr=np.arange(0, TI.size + 1, K, dtype=np.int64),
                           ids=TI.reshape(-1), logits=TL.reshape(-1), num_labels=L)

    model = XMRModel(d_in, L, ModelConfig(dim=d, hidden=list(cfg["hidden"]), encoder="dense"))
    enc, table = model.encoder, model.label_table
    opt_enc = torch.optim.Adam(enc.parameters(), lr=1e-3)
    opt_tab = RowAdagrad(table.parameters(), lr=0.05)
    rc = LossConfig(preset=preset, proposal="log-uniform").resolved()
    miner = None
    R = int(cfg["refresh_every"][str(L)]) if isinstance(cfg["refresh_every"], dict) \
        else int(cfg["refresh_every"])
    snaps = {}  # step -> the table the miner snapshotted there (for the recall check)

    def label_rows():
        W = table.weight_numpy()
        snaps[miner.current_step_] = W
        for old in [t for t in snaps if t not in (miner.current_step_, miner.index_step_)]:
            del snaps[old]
        return W

    if rc.needs_miner:
        params = dict(cfg["miner_params"])
        if "{nlist}" in cfg["miner_factory"] and "nlist" not in params:
            params["nlist"] = min(cfg["nlist_max"], default_nlist(L))
            params.setdefault("train_points_per_list", cfg["train_per_list"])
        if "nprobe" in params and "nlist" in params:
            params["nprobe"] = min(params["nprobe"], params.get("nlist", params["nprobe"]))
        miner = HardNegativeMiner(L, k=cfg["miner_k"], refresh_every=R,
                                  num_negatives=cfg["miner_negatives"],
                                  factory=cfg["miner_factory"], use_gpu=False, seed=0,
                                  index_params=params, async_refresh=cfg["async_refresh"],
                                  swap_lag=R if cfg["async_refresh"] else 1,
                                  build_threads=cfg["build_threads"] or None)
    if cfg.get("planted_table"):
        # a clustered table, as a trained one is (a random init has no neighbourhoods, so the
        # recall of an approximate index on it measures nothing a trained run meets); rows
        # scaled to the init's norm (about 1)
        from xmr.data.planted import planted_labels

        with torch.no_grad():
            Wp = planted_labels(L, d, num_centres=512, noise=1.0, seed=0)
            table.weight.copy_(torch.from_numpy(Wp / np.sqrt(2.0)))
            del Wp
    sources = CandidateSources(rc, L, seed=0, teacher=teacher, miner=miner,
                               label_rows=label_rows)
    objective = UnifiedObjective(rc, L, sources=sources)
    train_step = TrainStep(model, sources, objective, [opt_enc, opt_tab], split_backward=True)
    # Load what the first step would load (FAISS, the Numba kernels from their cache) before
    # the baseline, so that the peak is the step's own memory, not the libraries'.
    if miner is not None:
        from xmr.utils.optional import faiss

        faiss()
    with torch.no_grad():
        two = np.arange(2)
        pos0 = pos_of[0]
        objective(model.embed(X, two), table, (pos0[0][:3], pos0[1][:pos0[0][2]]),
                  teacher.rows(two), None, step=0)
    # the planted table's transient copies (2 GB at 1M) must not hide the step's own peak
    import gc

    gc.collect()
    if not reset_vmhwm():
        raise RuntimeError("cannot reset VmHWM (/proc/self/clear_refs): the peak would be "
                           "masked by the table's initialisation")
    base = vmhwm_bytes()

    refresh_s = 0.0
    if miner is not None:  # the first build, timed: amortised over refresh_every steps below
        t0 = pc()
        miner.maybe_refresh(0, label_rows)
        refresh_s = pc() - t0

    n_cand = []

    def step(t: int) -> dict:
        b = t % nb
        res = train_step(X, np.arange(b * B, (b + 1) * B), pos_of[b], t)
        n_cand.append(res.num_candidates)
        tm = res.timings
        return {"encoder": tm["embed"] + tm["encoder_backward"], "assembly": tm["candidates"],
                "mining": tm["mining"], "logits_loss": tm["loss"] + tm["backward"],
                "optimizer": tm["optimizer"]}

    slow = preset == "softmax" and L >= 500_000
    warm = cfg["warmup"] if not slow else 1
    timed = cfg["steps"] if not slow else cfg["steps_slow"]
    if miner is not None and cfg["async_refresh"]:
        # One whole refresh period, measured: steps 1 .. R run on the first index (built above,
        # synchronously); step R snapshots the table and starts the background build; steps
        # R+1 .. 2R mine from the first index while it builds, and step 2R swaps the new one in
        # (waiting there if the build is not done) and snapshots again. Figures are the means
        # over steps R+1 .. 2R, so the snapshot and the wait are in them once per period.
        for t in range(1, R + 1):
            step(t)
        steps = [step(t) for t in range(R + 1, 2 * R + 1)]
        timed = R
        peak = max(0, vmhwm_bytes() - base)
        st = miner.stats()
        assert st["refreshes"] == 2 and st["async_builds"] == 2, st
        totals = [sum(s.values()) for s in steps]
        mean = {k: float(np.mean([s[k] for s in steps])) for k in steps[0]}
        out = {"steps_timed": timed, "step_s": float(np.mean(totals)),
               "step_best_s": float(np.min(totals)), "step_median_s": float(np.median(totals)),
               "breakdown_s": mean, "peak_extra_bytes": peak, "timing": "mean over one refresh period"}
    else:
        for t in range(warm):
            step(t)
        steps = [step(warm + t) for t in range(timed)]
        peak = max(0, vmhwm_bytes() - base)
        if miner is not None:
            assert miner.stats()["refreshes"] == 1, "timed steps must not rebuild the index"
            for s in steps:
                s["mining"] += refresh_s / R
        totals = [sum(s.values()) for s in steps]
        best = int(np.argmin(totals))
        out = {"steps_timed": timed, "step_s": totals[best],
               "step_median_s": float(np.median(totals)), "breakdown_s": steps[best],
               "peak_extra_bytes": peak, "timing": "best of the timed steps"}
    out["samples_per_s"] = B / out["step_s"]
    out["num_candidates"] = float(np.mean(n_cand))
    if miner is not None:
        st = miner.stats()
        out.update(refresh_s=refresh_s, refresh_every=R, async_refresh=cfg["async_refresh"],
                   index_factory=miner.index_.shards_[0].factory,
                   index_params=miner.index_.search_params,
                   search_s_per_step=st["search_time_s"] / max(st["searches"], 1),
                   mining_share=out["breakdown_s"]["mining"] / out["step_s"],
                   staleness_mean=st["staleness_mean"], staleness_max=st["staleness_max"])
        swap_wait = st["swap_wait_s"]
        miner.wait()  # the next period's build: not on this machine's cores during what follows
        if cfg["async_refresh"]:
            out.update(background_build_s=st["refresh_time_s"] - refresh_s,
                       snapshot_s=st["snapshot_time_s"] / 2, swap_wait_s=swap_wait)
        out["shortlist_recall"] = _shortlist_recall(model, miner, snaps[miner.index_step_], X,
                                                    pos_of, B, cfg["miner_k"])
    # FLOP floor: the step's own matmul shapes, timed here (after the peak was read)
    A = L if rc.all_labels else int(round(out["num_candidates"]))
    layers = [(m.in_features, m.out_features) for m in enc.modules() if isinstance(m, torch.nn.Linear)]
    flop_out = 6.0 * B * d * A
    flop_enc = 6.0 * B * sum(i * o for i, o in layers)

    def mm_time(rows, inner, cols, repeat):
        a, b = torch.randn(rows, inner), torch.randn(inner, cols)
        best_t = float("inf")
        a @ b
        for _ in range(repeat):
            t0 = pc()
            a @ b
            best_t = min(best_t, pc() - t0)
        return best_t

    rep = 2 if A >= 500_000 else 5
    floor_out = mm_time(B, d, A, rep) + mm_time(A, B, d, rep) + mm_time(B, A, d, rep)
    floor_enc = sum(mm_time(B, i, o, 5) + mm_time(o, B, i, 5) + mm_time(B, o, i, 5)
                    for i, o in layers)
    floor = floor_out + floor_enc
    out.update(candidates_A=A, flop_output=flop_out, flop_encoder=flop_enc,
               floor_s=floor, x_floor=out["step_s"] / floor,
               matmul_gflops=(flop_out + flop_enc) / floor / 1e9,
               achieved_gflops=(flop_out + flop_enc) / out["step_s"] / 1e9)
    return out


def _shortlist_recall(model, miner, W_snap: np.ndarray, X, pos_of, B: int, k: int) -> float:
    """Recall@k of the mined shortlist against exact search, on every pool batch: the index in
    use vs :func:`xmr.index.exact_search` over the table it was built from, positives removed,
    the top ``k`` kept (what the miner samples its negatives from)."""
    import torch

    from xmr.index import exact_search

    hits = []
    for b, (indptr, ids) in enumerate(pos_of):
        with torch.no_grad():
            Q = model.embed(X, np.arange(b * B, (b + 1) * B)).float().numpy()
        depth = k + int(np.diff(indptr).max())
        approx = miner.index_.search(Q, depth)[1]
        exact = exact_search(W_snap, Q, depth)[1]
        for r in range(B):
            pos = set(ids[indptr[r]:indptr[r + 1]].tolist())
            a = [j for j in approx[r] if j not in pos and j >= 0][:k]
            e = [j for j in exact[r] if j not in pos][:k]
            hits.append(len(set(a) & set(e)) / k)
    return float(np.mean(hits))


def _run_configs(cfgs: list) -> list:
    """Run configurations one after another in one fresh subprocess; their figures."""
    t0 = time.perf_counter()
    proc = run_worker("benchmarks.throughput.bench_step", ["--worker", json.dumps(cfgs)])
    if proc.returncode != 0:
        names = ", ".join(f"{c['preset']} L={c['labels']}" for c in cfgs)
        raise RuntimeError(f"worker ({names}) failed:\n{proc.stderr[-3000:]}")
    res = json.loads(proc.stdout.strip().splitlines()[-1])
    wall = round(time.perf_counter() - t0, 2)
    return [{"preset": c["preset"], "labels": c["labels"], **r, "process_wall_s": wall}
            for c, r in zip(cfgs, res)]


def _fmt(r: dict) -> str:
    b = r["breakdown_s"]
    parts = " ".join(f"{k}={b[k] * 1e3:.1f}" for k in COMPONENTS)
    return (f"L={r['labels']:>9,} {r['preset']:<15} |A|={r['candidates_A']:>9,} "
            f"step {r['step_s'] * 1e3:9.1f} ms  {r['samples_per_s']:8.0f} samples/s  "
            f"{r['x_floor']:6.2f}x floor  peak +{r['peak_extra_bytes'] / 2**20:6.0f} MiB  [{parts} ms]")


def _summary(rows) -> dict:
    by = {(r["preset"], r["labels"]): r for r in rows}
    Ls = sorted({r["labels"] for r in rows})
    s = {}
    for p in PRESETS:
        got = [by[(p, L)] for L in Ls if (p, L) in by]
        if not got:
            continue
        s[p] = {
            "samples_per_s": {str(r["labels"]): r["samples_per_s"] for r in got},
            "x_floor": {str(r["labels"]): r["x_floor"] for r in got},
            "peak_extra_mib": {str(r["labels"]): r["peak_extra_bytes"] / 2**20 for r in got},
            "time_share": {str(r["labels"]): {k: v / r["step_s"] for k, v in r["breakdown_s"].items()}
                           for r in got},
        }
        if len(got) > 1:
            s[p]["step_time_ratio_Lmax_vs_Lmin"] = got[-1]["step_s"] / got[0]["step_s"]
    Lmax = Ls[-1]
    for p in PRESETS[1:]:
        if ("softmax", Lmax) in by and (p, Lmax) in by:
            s.setdefault("speedup_vs_softmax_at_Lmax", {})[p] = \
                by[("softmax", Lmax)]["step_s"] / by[(p, Lmax)]["step_s"]
    return s


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--worker", help=argparse.SUPPRESS)
    ap.add_argument("--labels", default="10000,100000,1000000", help="comma-separated L values")
    ap.add_argument("--presets", default=",".join(PRESETS))
    ap.add_argument("--threads", type=int, default=1,
                    help="torch threads per worker (default 1: on the shared 2-core machine, "
                         "2-thread OpenMP barriers stall whenever a thread is descheduled)")
    ap.add_argument("--miner-factory", default=MINER_FACTORY,
                    help=f"the miner's index (default {MINER_FACTORY!r}, chosen by "
                         "benchmarks.micro.bench_mining_index)")
    ap.add_argument("--miner-params", default=MINER_PARAMS,
                    help=f"its parameters, k=v comma separated (default {MINER_PARAMS!r})")
    ap.add_argument("--refresh-every", default=REFRESH_EVERY,
                    help="steps between index refreshes per label count, L:R comma separated "
                         f"(default {REFRESH_EVERY!r})")
    ap.add_argument("--sync-refresh", action="store_true",
                    help="rebuild the index on the training thread (timed once, amortised over "
                         "refresh_every) instead of the default background refresh")
    ap.add_argument("--search-threads", type=int, default=0,
                    help="FAISS threads of the miner's search (default: --threads); the training "
                         "thread waits during the search, so a second core can take half of it")
    ap.add_argument("--tiny", action="store_true", help="tiny sizes, seconds (smoke test)")
    ap.add_argument("--out", default=None, help="results file (default benchmarks/results/bench_step.json)")
    args = ap.parse_args(argv)
    if args.worker:
        print(json.dumps([_worker(c) for c in json.loads(args.worker)]))
        return 0

    labels = [int(v) for v in args.labels.split(",")]
    refresh = {k.strip(): int(v) for k, v in (kv.split(":") for kv in args.refresh_every.split(","))}
    params = {k.strip(): int(v) for k, v in (kv.split("=") for kv in args.miner_params.split(",")
                                             if kv.strip())}
    cfg = dict(dim=256, batch=256, in_dim=128, hidden=[512], labels_per_point=2, teacher_k=20,
               pool_batches=4, warmup=2, steps=6, steps_slow=2, miner_k=32, miner_negatives=16,
               refresh_every=refresh, miner_factory=args.miner_factory, miner_params=params,
               async_refresh=not args.sync_refresh, build_threads=1, planted_table=True,
               nlist_max=4096, train_per_list=32, threads=args.threads,
               search_threads=args.search_threads or args.threads)
    if args.tiny:
        cfg.update(dim=32, batch=32, in_dim=16, hidden=[32], pool_batches=2, warmup=1, steps=2,
                   nlist_max=32, miner_factory="IVF{nlist},Flat", miner_params={"nprobe": 4},
                   train_per_list=39,
                   refresh_every={"5000": 3}, threads=args.threads)
        labels = [5000]
        if args.out is None:
            args.out = str(Path(tempfile.mkdtemp()) / "bench_step_tiny.json")
    presets = args.presets.split(",")
    for p in presets:
        if p not in PRESETS:
            raise SystemExit(f"--presets: expected names from {list(PRESETS)}, got {p!r}")

    rows, gen_s = [], {}
    with tempfile.TemporaryDirectory() as tmp:
        for L in labels:
            data = Path(tmp) / f"data_{L}.npz"
            gen_s[str(L)] = make_data(L, cfg, data)
            cfgs = [{**cfg, "preset": p, "labels": L, "data": str(data)} for p in presets]
            # one fresh process per configuration (its own peak memory); --tiny: one for all,
            # to keep the smoke test fast (its peaks are then high-water marks of the sequence)
            for group in ([cfgs] if args.tiny else [[c] for c in cfgs]):
                for r in _run_configs(group):
                    rows.append(r)
                    print(_fmt(r), flush=True)
    summary = _summary(rows)
    config = {**cfg, "labels": labels, "presets": presets, "tiny": args.tiny,
              "loss": "LossConfig(preset, proposal='log-uniform'); other fields from the preset",
              "step": "xmr.train.step.TrainStep(split_backward=True) on XMRModel(encoder=dense)",
              "index": f"{cfg['miner_factory']}, nlist = min(nlist_max, 4*sqrt(L)), k-means on "
                       "train_per_list*nlist points, search parameters as given; FAISS CPU, "
                       "MIPS->L2; built in a background thread on build_threads FAISS threads "
                       "unless async_refresh is false",
              "teacher": "generator's Bayes top-K (K = teacher_k), logits = log p*",
              "data_generation_s": gen_s}
    path = write_result("bench_step", config, {"rows": rows, "summary": summary},
                        path=args.out)
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
