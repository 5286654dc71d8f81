"""End-to-end ``double-distill`` training on a 1M-label synthetic problem, on this CPU.

The problem is :class:`xmr.data.synthetic.SyntheticXMC` with L = 1,000,000 labels and known
Bayes probabilities p*(y|x) (DESIGN.md §3), so the trained student is scored against the truth:

* **teacher** = the generator's Bayes top-K (K = 20) with logits log p*(j|x): the *ideal*
  teacher of Menon et al. (2020, §3) — its probabilities on its top-K are exact, so the run
  measures the objective and the machinery (FAISS miner, candidate assembly, sparse updates)
  rather than a teacher's quality;
* **student** = an :class:`~xmr.models.XMRModel` with the dense-input encoder
  (``ModelConfig(encoder="dense")``: linear, d_in → d) and a label table with a per-label bias
  (rows re-drawn from N(0, init_std²)), trained by the library's own step,
  :class:`~xmr.train.step.TrainStep` (the trainer's), with the
  :class:`~xmr.objectives.loss.UnifiedObjective` (preset ``double-distill``, log-uniform random
  negatives: the generator's label ids are sorted by popularity), a
  :class:`~xmr.negatives.miner.HardNegativeMiner` over an IVF index of W, Adam on the encoder
  and :class:`~xmr.models.RowAdagrad` on the touched rows of W; the epoch loop here is the
  trainer's without its checkpoints and evaluations (dense inputs instead of CSR);
* **evaluation** on held-out points whose labels are drawn from p*: P@1 of the student, P@1 of
  the Bayes-optimal rule argmax p* on the same points, the *expected* P@1 of both
  (E_x p*(prediction | x): the same quantity without the label-sampling noise), and
  KL(p* ‖ student) restricted to the Bayes top-K (both distributions renormalised on those K
  labels; cheap, and it is where the mass is).

Drawing labels from p* and the Bayes top-K streams over all L labels for every point (about
10 ms per point on the shared 2-core machine), so the generated data is cached under
``benchmarks/results/tmp/`` (git-ignored) keyed by its parameters; the JSON records the
generation time separately from the training time.

Usage::

    python -m benchmarks.throughput.scaling_run            # L = 1M, n_train = 50k: data ~10 min once, then a few minutes
    python -m benchmarks.throughput.scaling_run --tiny     # seconds, for the smoke test (writes to a temp dir)

Writes ``benchmarks/results/scaling_run.json``.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import sys
import tempfile
import time
from pathlib import Path

import numpy as np


from benchmarks._common import RESULTS, vmhwm_bytes, write_result

log = logging.getLogger("scaling_run")
CACHE = RESULTS / "tmp" / "scaling_cache"


# ------------------------------------------------------------------------------------ data
def make_data(cfg: dict, cache_dir: Path) -> dict:
    """Train/test inputs, labels drawn from p*, and the Bayes top-K of every point (cached).

    Returns a dict of arrays: ``X_trn f32[n, d_in]``, ``y_trn i64[n]``, ``T_ids i64[n, K]``,
    ``T_logp f32[n, K]`` (log p* of the top-K, the teacher's logits), the same for the test
    points (``X_tst``, ``y_tst``, ``B_ids``, ``B_logp``), and ``gen_seconds``.
    """
    from xmr.data.synthetic import SyntheticXMC

    keys = ("labels", "in_dim", "rank", "zipf", "scale", "seed", "n_train", "n_test", "teacher_k")
    tag = hashlib.sha256(json.dumps({k: cfg[k] for k in keys}, sort_keys=True).encode()).hexdigest()[:16]
    path = cache_dir / f"data_{tag}.npz"
    if path.is_file():
        with np.load(path) as z:
            out = {k: z[k] for k in z.files}
        out["gen_seconds"] = float(out["gen_seconds"])
        out["cached"] = True
        log.info("loaded cached data %s", path)
        return out
    gen = SyntheticXMC(cfg["labels"], cfg["in_dim"], rank=cfg["rank"], zipf=cfg["zipf"],
                       scale=cfg["scale"], seed=cfg["seed"])
    t0 = time.perf_counter()
    out = {}
    for split, n, seed in (("trn", cfg["n_train"], 1), ("tst", cfg["n_test"], 2)):
        X = gen.sample_x(n, seed)
        ids = np.empty(n, dtype=np.int64)
        tk_p = np.empty((n, cfg["teacher_k"]), dtype=np.float32)
        tk_i = np.empty((n, cfg["teacher_k"]), dtype=np.int64)
        step = 2048
        for r0 in range(0, n, step):  # pieces: progress in the log, bounded memory
            r1 = min(n, r0 + step)
            ids[r0:r1] = gen.sample_labels(X[r0:r1], seed * 1_000_003 + r0, 1)[:, 0]
            tk_p[r0:r1], tk_i[r0:r1] = gen.bayes_topk(X[r0:r1], cfg["teacher_k"])
            log.info("data %s: %d / %d rows (%.0fs)", split, r1, n, time.perf_counter() - t0)
        logp = np.log(np.maximum(tk_p, 1e-30)).astype(np.float32)
        if split == "trn":
            out.update(X_trn=X, y_trn=ids, T_ids=tk_i, T_logp=logp)
        else:
            out.update(X_tst=X, y_tst=ids, B_ids=tk_i, B_logp=logp)
    out["gen_seconds"] = time.perf_counter() - t0
    cache_dir.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp.npz")
    np.savez(tmp, **out)
    tmp.rename(path)
    out["cached"] = False
    return out



# ------------------------------------------------------------------------------- training
def train(cfg: dict, data: dict) -> dict:
    """Train the student with ``double-distill``; returns the model parts and the run's figures."""
    import torch
    from tqdm.auto import tqdm

    from xmr.models import RowAdagrad, XMRModel
    from xmr.models.config import ModelConfig
    from xmr.negatives.miner import HardNegativeMiner
    from xmr.negatives.sources import CandidateSources
    from xmr.objectives.config import LossConfig
    from xmr.objectives.loss import UnifiedObjective
    from xmr.teachers.store import TeacherStore
    from xmr.train.step import TrainStep

    torch.manual_seed(cfg["seed"])
    L, B, K = cfg["labels"], cfg["batch"], cfg["teacher_k"]
    X, y = data["X_trn"], data["y_trn"]
    n = X.shape[0]
    # linear: the Bayes scores are linear in x
    model = XMRModel(cfg["in_dim"], L, ModelConfig(dim=cfg["dim"], encoder="dense",
                                                   label_bias=True))
    table = model.label_table
    with torch.no_grad():  # the run's small initial rows (the model's default is N(0, 1/d))
        table.weight.normal_(0, cfg["init_std"])
    opt_enc = torch.optim.Adam(model.encoder.parameters(), lr=cfg["lr_encoder"])
    opt_tab = RowAdagrad(table.parameters(), lr=cfg["lr_table"])
    loss_cfg = LossConfig(preset="double-distill", proposal="log-uniform", teacher_k=K).resolved()
    miner = HardNegativeMiner(L, k=cfg["miner_k"], refresh_every=cfg["refresh_every"],
                              num_negatives=cfg["miner_negatives"], factory="IVF{nlist},Flat",
                              use_gpu=False, seed=cfg["seed"],
                              index_params=dict(nlist=cfg["nlist"], nprobe=cfg["nprobe"],
                                                train_points_per_list=cfg["train_per_list"]))
    teacher = TeacherStore(indptr=np.arange(0, n * K + 1, K, dtype=np.int64),
                           ids=data["T_ids"].reshape(-1), logits=data["T_logp"].reshape(-1),
                           num_labels=L)
    sources = CandidateSources(loss_cfg, L, seed=cfg["seed"], teacher=teacher, miner=miner,
                               label_rows=table.weight_numpy)
    objective = UnifiedObjective(loss_cfg, L, sources=sources)
    train_step = TrainStep(model, sources, objective, [opt_enc, opt_tab])
    base_rss = vmhwm_bytes()
    steps_per_epoch = (n + B - 1) // B
    step, history = 0, []
    bar = tqdm(total=steps_per_epoch * cfg["epochs"], desc="double-distill", unit="step",
               disable=cfg.get("quiet", False), mininterval=5.0)
    t_start = time.perf_counter()
    for epoch in range(cfg["epochs"]):
        perm = np.random.default_rng([cfg["seed"], epoch]).permutation(n)
        losses = []
        for b in range(steps_per_epoch):
            rows = np.sort(perm[b * B:(b + 1) * B])
            pos = (np.arange(rows.size + 1, dtype=np.int64), y[rows])
            losses.append(train_step(X, rows, pos, step).loss)  # raises on a non-finite loss
            step += 1
            bar.update(1)
        history.append({"epoch": epoch + 1, "step": step, "mean_loss": float(np.mean(losses)),
                        "elapsed_s": time.perf_counter() - t_start})
        log.info("epoch %d: mean loss %.4f (%.0fs)", epoch + 1, history[-1]["mean_loss"],
                 history[-1]["elapsed_s"])
    t_all = time.perf_counter() - t_start
    bar.close()
    st = miner.stats()
    tm = sources.timings
    run = {
        "steps": step, "train_seconds": t_all, "samples_per_s": step and n * cfg["epochs"] / t_all,
        "mining_share": tm["mining"] / t_all, "refreshes": st["refreshes"],
        "refresh_seconds_total": st["refresh_time_s"],
        "assembly_share": (tm["sample"] + tm["assemble"]) / t_all,
        "peak_rss_gib": vmhwm_bytes() / 2**30,
        "peak_extra_over_model_and_data_gib": (vmhwm_bytes() - base_rss) / 2**30,
        "history": history,
    }
    return {"enc": model.encoder, "table": table, "run": run}


def evaluate(cfg: dict, data: dict, enc, table) -> dict:
    """Student vs the Bayes-optimal rule on held-out points whose labels are drawn from p*.

    * ``P@1`` = mean [top-1 prediction == drawn label]; ``P@1_bayes`` the same for argmax p*;
    * ``expected_P@1`` = mean p*(prediction | x) (the P@1 expected over the label draw),
      ``expected_P@1_bayes`` = mean max_j p*(j | x);
    * ``KL_topK`` = mean KL(p̃* ‖ q̃) with both the Bayes distribution and the student's softmax
      restricted to the Bayes top-K labels and renormalised there.
    """
    import torch

    from xmr.data.synthetic import SyntheticXMC

    gen = SyntheticXMC(cfg["labels"], cfg["in_dim"], rank=cfg["rank"], zipf=cfg["zipf"],
                       scale=cfg["scale"], seed=cfg["seed"])
    X, y, B_ids, B_logp = data["X_tst"], data["y_tst"], data["B_ids"], data["B_logp"]
    t0 = time.perf_counter()
    with torch.no_grad():
        emb = enc(torch.from_numpy(X))  # [n, d]
        _, pred = table.topk(emb, 1)  # exact over all L labels
        pred = pred[:, 0]
        # student scores on the Bayes top-K: [n, K]
        ids = torch.from_numpy(B_ids)
        sK = torch.einsum("nd,nkd->nk", emb, table.weight[ids]) + table.bias[ids]
    log_q = torch.log_softmax(sK.double(), dim=1).numpy()
    logp = B_logp.astype(np.float64)
    log_p = logp - np.logaddexp.reduce(logp, axis=1, keepdims=True)
    kl = float(np.mean(np.sum(np.exp(log_p) * (log_p - log_q), axis=1)))
    # p*(pred | x) = exp(s*_pred − s*_top1) · p*(top1 | x): no pass over the L labels
    s_pred = gen.logits(X, pred[:, None])[:, 0].astype(np.float64)
    s_top = gen.logits(X, B_ids[:, :1])[:, 0].astype(np.float64)
    exp_p1 = np.exp(s_pred - s_top + B_logp[:, 0])
    return {
        "n_test": int(X.shape[0]),
        "P@1": float(np.mean(pred == y)),
        "P@1_bayes": float(np.mean(B_ids[:, 0] == y)),
        "expected_P@1": float(np.mean(exp_p1)),
        "expected_P@1_bayes": float(np.mean(np.exp(B_logp[:, 0]))),
        "KL_topK": kl,
        "pred_in_bayes_topK": float(np.mean((B_ids == pred[:, None]).any(axis=1))),
        "eval_seconds": time.perf_counter() - t0,
    }


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--tiny", action="store_true", help="tiny sizes, seconds (smoke test)")
    ap.add_argument("--epochs", type=int, default=None)
    ap.add_argument("--threads", type=int, default=1, help="torch and FAISS threads (default 1: "
                    "the shared 2-core machine stalls 2-thread OpenMP barriers)")
    ap.add_argument("--out", default=None, help="results file (default benchmarks/results/scaling_run.json)")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")

    cfg = dict(labels=1_000_000, in_dim=64, rank=16, zipf=1.0, scale=3.0, seed=0,
               n_train=50_000, n_test=5_000, teacher_k=20, dim=64, batch=256, epochs=3,
               init_std=0.01, lr_encoder=2e-3, lr_table=0.1, miner_k=32, miner_negatives=16,
               refresh_every=100, nlist=1024, nprobe=16, train_per_list=32, threads=args.threads)
    cache = CACHE
    if args.tiny:
        cfg.update(labels=5000, in_dim=16, n_train=2000, n_test=500, dim=16, batch=64, epochs=2,
                   refresh_every=10, nlist=32, nprobe=8, train_per_list=39, quiet=True)
        cache = Path(tempfile.mkdtemp())
        if args.out is None:
            args.out = str(cache / "scaling_run_tiny.json")
    if args.epochs:
        cfg["epochs"] = args.epochs

    import torch

    from xmr.utils.threads import omp_threads

    torch.set_num_threads(cfg["threads"])  # a script's own process: nothing to restore
    data = make_data(cfg, cache)
    with omp_threads(cfg["threads"]):
        model = train(cfg, data)
        ev = evaluate(cfg, data, model["enc"], model["table"])
    run = model["run"]
    run["data_generation_seconds"] = data["gen_seconds"]
    run["data_from_cache"] = bool(data["cached"])
    results = {**ev, **{k: v for k, v in run.items() if k != "history"},
               "history": run["history"],
               "P@1_ratio_to_bayes": ev["P@1"] / max(ev["P@1_bayes"], 1e-12),
               "expected_P@1_ratio_to_bayes": ev["expected_P@1"] / ev["expected_P@1_bayes"]}
    config = {**cfg, "preset": "double-distill", "proposal": "log-uniform",
              "teacher": "Bayes top-K of the generator, logits log p* (the ideal teacher)",
              "student": "XMRModel(ModelConfig(dim, encoder='dense', label_bias=True)): linear "
                         "encoder, label rows re-drawn from N(0, init_std^2); xmr.train.step.TrainStep",
              "index": "IVF{nlist},Flat (FAISS CPU), k-means on train_per_list*nlist points"}
    path = write_result("scaling_run", config, results, path=args.out)
    log.info("P@1 %.4f (Bayes %.4f), expected P@1 %.4f (Bayes %.4f), KL_topK %.3f, %.0f samples/s, "
             "peak %.2f GiB", ev["P@1"], ev["P@1_bayes"], ev["expected_P@1"],
             ev["expected_P@1_bayes"], ev["KL_topK"], run["samples_per_s"], run["peak_rss_gib"])
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
