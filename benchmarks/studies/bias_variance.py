"""The statistics of distillation, checked on data whose Bayes probabilities are known.

Menon, Rawat, Reddi, Kim & Kumar, *A statistical perspective on distillation* (ICML 2021):

(a) **Variance identity** (the variance reduction of the Bayes-distilled risk): for a fixed
    scorer f and loss ℓ, the one-hot empirical risk R̂_onehot = mean_i ℓ(y_i, f(x_i)) and the
    Bayes-distilled risk R̂_Bayes = mean_i Σ_y p*(y|x_i) ℓ(y, f(x_i)) have the same mean and

        Var[R̂_onehot] − Var[R̂_Bayes] = E_x Var_{y|x} ℓ(y, f(x)) / N      (law of total variance).

    We resample R training sets of size N for several N and compare the measured gap with the
    prediction (estimated on a large independent sample); ratio and bootstrap standard error.

(b) **Teacher-quality sweep** (the bias–variance bound for an imperfect teacher): students
    (linear softmax on x, full softmax, L2-regularised, λ tuned on held-out one-hot log-loss
    from a small grid, the same protocol for every target) trained on one-hot labels, on p*
    itself, and on teachers of controlled quality: p* sharpened/flattened by a temperature,
    softmax(log p*/T), and p* corrupted by logit noise, softmax(log p* + σ ε). Reported per
    teacher: teacher error E_x ‖p^t − p*‖₁ (L1, on the training inputs), student KL(p*‖student)
    on fresh inputs (= test log-loss minus the Bayes entropy), student P@1 =
    E_x p*(argmax student | x) (the expected precision against labels drawn from p*), mean ±
    standard error over seeds.

Run:  python -m benchmarks.studies.bias_variance            (default, a few minutes on 2 cores)
      python -m benchmarks.studies.bias_variance --quick    (seconds; the smoke test uses it)
Writes benchmarks/results/bias_variance.json and bias_variance.png (or under --out).
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from pathlib import Path
from typing import Dict, List, Sequence

import numpy as np

from benchmarks._common import RESULTS, write_result
from xmr.data.synthetic import SyntheticXMC

log = logging.getLogger("bias_variance")

CONFIGS = {
    "quick": {
        "identity": {"num_labels": 50, "dim": 8, "rank": 4, "Ns": [10, 40], "replicates": 300,
                     "n_predict": 20_000, "perturb": 1.0, "bootstrap": 200},
        "sweep": {"num_labels": 50, "dim": 8, "rank": 4, "Ns": [100], "seeds": 2,
                  "n_test": 1000, "temperatures": [0.5, 2.0], "noise_sigmas": [1.0],
                  "lambdas": [1e-1, 1e-2], "max_iter": 50},
    },
    "default": {
        "identity": {"num_labels": 200, "dim": 32, "rank": 16, "Ns": [25, 50, 100, 200, 400],
                     "replicates": 2000, "n_predict": 200_000, "perturb": 1.0,
                     "bootstrap": 1000},
        "sweep": {"num_labels": 500, "dim": 32, "rank": 16, "Ns": [300, 1000], "seeds": 5,
                  "n_test": 5000, "temperatures": [0.5, 0.7, 0.85, 1.2, 1.5, 2.0, 3.0],
                  "noise_sigmas": [0.25, 0.5, 1.0, 1.5, 2.0, 3.0],
                  "lambdas": [1e-1, 1e-2, 3e-3, 1e-3, 1e-4, 1e-5, 0.0], "max_iter": 300},
    },
}
COMMON = {"zipf": 1.0, "scale": 3.0, "generator_seed": 0}


# ---------------------------------------------------------------------------- helpers
def _log_softmax(s: np.ndarray) -> np.ndarray:
    s = s.astype(np.float64)
    m = s.max(axis=1, keepdims=True)
    return s - m - np.log(np.exp(s - m).sum(axis=1, keepdims=True))


def _batches(n: int, size: int):
    for i in range(0, n, size):
        yield slice(i, min(i + size, n))


# ---------------------------------------------------------------------------- (a) identity
def variance_identity(cfg: dict, seed: int) -> dict:
    """Measured Var[R̂_onehot] − Var[R̂_Bayes] against E_x Var_{y|x} ℓ / N, for each N."""
    gen = SyntheticXMC(cfg["num_labels"], cfg["dim"], rank=cfg["rank"], zipf=COMMON["zipf"],
                       scale=COMMON["scale"], seed=COMMON["generator_seed"])
    rng = np.random.default_rng(seed)
    # The fixed scorer: the true logits plus a fixed random linear perturbation.
    Wp = rng.standard_normal((cfg["dim"], cfg["num_labels"])) / np.sqrt(cfg["dim"])
    Wp *= cfg["perturb"] * COMMON["scale"]

    def loss_and_p(X: np.ndarray):
        """ℓ(y, f(x)) = logsumexp f(x) − f_y(x) for all y, float64 [n, L]; and p*(·|x)."""
        F = gen.logits(X).astype(np.float64) + X.astype(np.float64) @ Wp
        return -_log_softmax(F), gen.bayes_proba(X).astype(np.float64)

    # Prediction E_x Var_{y|x} ℓ(y, f(x)) on a large independent sample.
    Xp = gen.sample_x(cfg["n_predict"], seed=seed + 10_000)
    cond_var = np.empty(cfg["n_predict"])
    for sl in _batches(cfg["n_predict"], 20_000):
        ell, P = loss_and_p(Xp[sl])
        m1 = (P * ell).sum(axis=1)
        cond_var[sl] = (P * ell ** 2).sum(axis=1) - m1 ** 2
    ev, ev_se = float(cond_var.mean()), float(cond_var.std(ddof=1) / np.sqrt(cond_var.size))

    rows = []
    R = cfg["replicates"]
    for k, N in enumerate(cfg["Ns"]):
        X = gen.sample_x(R * N, seed=seed + 1000 * (k + 1))
        y = gen.sample_labels(X, seed=seed + 1000 * (k + 1) + 1)[:, 0]
        per_onehot = np.empty(R * N)
        per_bayes = np.empty(R * N)
        for sl in _batches(R * N, 20_000):
            ell, P = loss_and_p(X[sl])
            per_onehot[sl] = ell[np.arange(ell.shape[0]), y[sl]]
            per_bayes[sl] = (P * ell).sum(axis=1)
        r_onehot = per_onehot.reshape(R, N).mean(axis=1)  # one risk estimate per training set
        r_bayes = per_bayes.reshape(R, N).mean(axis=1)
        gap = float(r_onehot.var(ddof=1) - r_bayes.var(ddof=1))
        # Bootstrap over replicates (the pairs (R̂_onehot, R̂_Bayes) resampled together).
        idx = rng.integers(0, R, size=(cfg["bootstrap"], R))
        boot = r_onehot[idx].var(axis=1, ddof=1) - r_bayes[idx].var(axis=1, ddof=1)
        gap_se = float(boot.std(ddof=1))
        pred = ev / N
        rows.append({
            "N": N, "replicates": R,
            "var_onehot": float(r_onehot.var(ddof=1)), "var_bayes": float(r_bayes.var(ddof=1)),
            "mean_onehot": float(r_onehot.mean()), "mean_bayes": float(r_bayes.mean()),
            "gap_measured": gap, "gap_measured_se": gap_se,
            "gap_predicted": pred, "gap_predicted_se": ev_se / N,
            "ratio": gap / pred,
            # Both errors propagated (the prediction's is small: n_predict ≫ N).
            "ratio_se": float(np.hypot(gap_se / pred, gap / pred * ev_se / ev)),
        })
        log.info("identity N=%d: gap %.3g ± %.2g, predicted %.3g, ratio %.3f ± %.3f", N, gap,
                 gap_se, pred, rows[-1]["ratio"], rows[-1]["ratio_se"])
    ratios = np.array([r["ratio"] for r in rows])
    ses = np.array([r["ratio_se"] for r in rows])
    w = 1 / ses ** 2
    pooled = float((w * ratios).sum() / w.sum())
    return {"E_x_Var_y_loss": ev, "E_x_Var_y_loss_se": ev_se, "per_N": rows,
            "pooled_ratio": pooled, "pooled_ratio_se": float(np.sqrt(1 / w.sum()))}


# ---------------------------------------------------------------------------- (b) sweep
def _fit_student(X, T, Xv, yv, lambdas: Sequence[float], max_iter: int):
    """Linear softmax student on probability targets T [N, L]; λ chosen on held-out one-hot
    log-loss along a warm-started path from strong to weak regularisation.

    Loss: F.cross_entropy(logits, T) + λ/2 (‖W‖² + ‖c‖²). With probability targets this is
    the loss of xmr's ``distill`` preset with A = all labels (DESIGN.md §5; α = 1, or 0 for
    one-hot targets).

    Why this study keeps its own fitting loop instead of :class:`xmr.train.step.TrainStep` (the
    one step every other benchmark drives): the student is fitted full-batch to the
    regularised optimum by L-BFGS with a strong-Wolfe line search, which evaluates the loss and
    gradient several times per step through a closure. TrainStep is one forward, one backward
    and one first-order optimizer step per minibatch (the trainer's Adam on the encoder and
    row-wise Adagrad on the label table); it has no closure to re-evaluate and no full-batch
    second-order optimizer. The student as an ``XMRModel`` (``ModelConfig(encoder="dense",
    hidden=[])``) would also change the model: φ(x) = Ax + b followed by the table W, whose L2
    penalty on (A, W) is not the penalty on the linear map WA, and a fixed epoch budget instead
    of convergence. Either changes the committed figures (``benchmarks/results/
    bias_variance.json``), which measure a converged convex fit; so the loop stays here.
    """
    import torch
    import torch.nn.functional as F

    Xt, Tt = torch.from_numpy(X), torch.from_numpy(T)
    Xvt, yvt = torch.from_numpy(Xv), torch.from_numpy(yv)
    L, d = T.shape[1], X.shape[1]
    W = torch.zeros(L, d, requires_grad=True)
    c = torch.zeros(L, requires_grad=True)
    best = (np.inf, None, None)
    for lam in sorted(lambdas, reverse=True):
        opt = torch.optim.LBFGS([W, c], lr=1, max_iter=max_iter, history_size=20,
                                tolerance_grad=1e-7, tolerance_change=1e-10,
                                line_search_fn="strong_wolfe")

        def closure():
            opt.zero_grad()
            loss = F.cross_entropy(Xt @ W.T + c, Tt)  # distill loss over all labels, targets T
            loss = loss + 0.5 * lam * (W.square().sum() + c.square().sum())
            loss.backward()
            return loss

        opt.step(closure)
        with torch.no_grad():
            val = float(F.cross_entropy(Xvt @ W.T + c, yvt))
        if val < best[0]:
            best = (val, lam, (W.detach().numpy().copy(), c.detach().numpy().copy()))
    return best[1], best[2]


def teacher_sweep(cfg: dict, seed: int) -> dict:
    """Students trained on one-hot, Bayes and corrupted-teacher targets, for each N."""
    gen = SyntheticXMC(cfg["num_labels"], cfg["dim"], rank=cfg["rank"], zipf=COMMON["zipf"],
                       scale=COMMON["scale"], seed=COMMON["generator_seed"])
    Xte = gen.sample_x(cfg["n_test"], seed=seed + 99_999)
    logp_te = _log_softmax(gen.logits(Xte))
    p_te = np.exp(logp_te)
    bayes_entropy = float(-(p_te * logp_te).sum(axis=1).mean())
    bayes_p1 = float(p_te.max(axis=1).mean())

    teachers = [("onehot", None), ("bayes", None)]
    teachers += [("temperature", T) for T in cfg["temperatures"]]
    teachers += [("noise", s) for s in cfg["noise_sigmas"]]

    out: Dict[str, List[dict]] = {}
    for N in cfg["Ns"]:
        acc: Dict[tuple, Dict[str, list]] = {}
        for s in range(cfg["seeds"]):
            base = seed + 7919 * s + 104_729 * N
            X = gen.sample_x(N, seed=base)
            y = gen.sample_labels(X, seed=base + 1)[:, 0]
            Xv = gen.sample_x(max(N // 2, 100), seed=base + 2)
            yv = gen.sample_labels(Xv, seed=base + 3)[:, 0]
            logp = _log_softmax(gen.logits(X))
            p = np.exp(logp)
            eps = np.random.default_rng(base + 4).standard_normal(p.shape)
            for kind, v in teachers:
                if kind == "onehot":
                    t, logt = np.zeros_like(p), None
                    t[np.arange(N), y] = 1.0
                else:
                    logt = {"bayes": lambda: logp,
                            "temperature": lambda: _log_softmax(logp / v),
                            "noise": lambda: _log_softmax(logp + v * eps)}[kind]()
                    t = np.exp(logt)
                lam, (W, c) = _fit_student(X, t.astype(np.float32), Xv, yv, cfg["lambdas"],
                                           cfg["max_iter"])
                logq = _log_softmax(Xte @ W.T + c)
                rec = acc.setdefault((kind, v), {k: [] for k in (
                    "teacher_l1", "teacher_kl", "teacher_p1", "student_kl", "student_p1",
                    "lambda")})
                rec["teacher_l1"].append(float(np.abs(t - p).sum(axis=1).mean()))
                if kind == "onehot":  # KL(p* || one-hot) is infinite: not reported
                    rec["teacher_kl"].append(np.nan)
                else:
                    rec["teacher_kl"].append(float((p * (logp - logt)).sum(axis=1).mean()))
                rec["teacher_p1"].append(float(p[np.arange(N), t.argmax(axis=1)].mean()))
                rec["student_kl"].append(float((p_te * (logp_te - logq)).sum(axis=1).mean()))
                rec["student_p1"].append(float(p_te[np.arange(len(Xte)),
                                                    logq.argmax(axis=1)].mean()))
                rec["lambda"].append(lam)
            log.info("sweep N=%d seed %d done", N, s)
        rows = []
        for (kind, v), rec in acc.items():
            row = {"teacher": kind, "param": v}
            for k, vals in rec.items():
                a = np.asarray(vals, dtype=np.float64)
                if np.isnan(a).any():
                    row[k] = None  # JSON has no NaN
                    continue
                row[k] = float(a.mean())
                if k != "lambda":
                    row[k + "_se"] = float(a.std(ddof=1) / np.sqrt(a.size)) if a.size > 1 else 0.0
            rows.append(row)
        out[str(N)] = rows
    return {"bayes_entropy": bayes_entropy, "bayes_p1": bayes_p1, "per_N": out,
            "teacher_error": "E_x ||p_t(x) - p*(x)||_1 on the training inputs (one-hot: the "
                             "label's own distance to p*)",
            "student_kl": "E_x KL(p*(x) || student(x)) on fresh test inputs (nats)",
            "student_p1": "E_x p*(argmax student(x) | x): expected P@1 on labels from p*"}


# ---------------------------------------------------------------------------- plot
def plot(results: dict, path: Path) -> None:
    import matplotlib
    import matplotlib.ticker

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(16, 4.6))
    ident = results["variance_identity"]["per_N"]
    Ns = np.array([r["N"] for r in ident])
    ax = axes[0]
    ax.errorbar(Ns, [r["gap_measured"] for r in ident], yerr=[r["gap_measured_se"] for r in ident],
                fmt="o", capsize=3, label="measured Var[R̂ one-hot] − Var[R̂ Bayes]")
    ax.plot(Ns, [r["gap_predicted"] for r in ident], "-", label="predicted E_x Var_y|x ℓ / N")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xticks(Ns, [str(n) for n in Ns])
    ax.xaxis.set_minor_locator(matplotlib.ticker.NullLocator())
    ax.set_xlabel("training set size N")
    ax.set_ylabel("variance gap")
    vi = results["variance_identity"]
    ax.set_title(f"(a) variance identity: measured/predicted = "
                 f"{vi['pooled_ratio']:.3f} ± {vi['pooled_ratio_se']:.3f}")
    ax.legend(fontsize=8)

    sweep = results["teacher_sweep"]["per_N"]
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for ax, metric, label in ((axes[1], "student_kl", "student KL(p* ‖ student) [nats]"),
                              (axes[2], "student_p1", "student P@1 (labels from p*)")):
        for j, (N, rows) in enumerate(sweep.items()):
            col = colors[j % len(colors)]
            bayes = next(r for r in rows if r["teacher"] == "bayes")
            onehot = next(r for r in rows if r["teacher"] == "onehot")
            series = (("temperature T<1", "s", "-",
                       lambda r: r["teacher"] == "temperature" and r["param"] < 1, "T"),
                      ("temperature T>1", "o", "-.",
                       lambda r: r["teacher"] == "temperature" and r["param"] > 1, "T"),
                      ("noise σ", "^", "--", lambda r: r["teacher"] == "noise", "σ"))
            for name, mk, ls, keep, sym in series:
                sel = [bayes] + sorted(filter(keep, rows), key=lambda r: r["teacher_l1"])
                if len(sel) == 1:
                    continue
                ax.errorbar([r["teacher_l1"] for r in sel], [r[metric] for r in sel],
                            yerr=[r[metric + "_se"] for r in sel], fmt=mk + ls, color=col,
                            capsize=2, ms=4, label=f"N={N} {name}")
                for r in sel[1:]:
                    ax.annotate(f"{sym}={r['param']:g}", (r["teacher_l1"], r[metric]),
                                fontsize=6, xytext=(3, 3), textcoords="offset points")
            ax.errorbar([bayes["teacher_l1"]], [bayes[metric]], yerr=[bayes[metric + "_se"]],
                        fmt="*", color=col, ms=12, capsize=2, label=f"N={N} Bayes p*")
            ax.errorbar([onehot["teacher_l1"]], [onehot[metric]], yerr=[onehot[metric + "_se"]],
                        fmt="X", color=col, ms=10, capsize=2, label=f"N={N} one-hot")
            ax.axhline(onehot[metric], color=col, lw=0.8, ls=":")
        ax.set_xlabel("teacher error E_x ‖p_t − p*‖₁")
        ax.set_ylabel(label)
        ax.legend(fontsize=7, ncol=2)
    axes[1].set_title("(b) student log-loss vs teacher error")
    axes[2].axhline(results["teacher_sweep"]["bayes_p1"], color="k", lw=0.8, ls="-.")
    axes[2].set_title("(c) student P@1 vs teacher error (dash-dot: Bayes P@1)")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name("." + path.name + ".tmp.png")
    fig.savefig(tmp, dpi=110)
    plt.close(fig)
    tmp.replace(path)  # atomic: never a half-written figure


# ---------------------------------------------------------------------------- main
def main(argv: "Sequence[str] | None" = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="tiny sizes, a few seconds")
    ap.add_argument("--out", type=Path, default=RESULTS, help="output folder")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--replot", action="store_true",
                    help="only redraw the figure from the existing JSON in --out")
    ap.add_argument("--threads", type=int, default=1,
                    help="torch/BLAS threads (1: small matmuls gain nothing from threads, and "
                         "oversubscribed threads on a shared machine are much slower)")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")

    name = "bias_variance"
    if args.replot:
        import json

        results = json.loads((args.out / f"{name}.json").read_text())["results"]
        plot(results, args.out / f"{name}.png")
        return results

    import torch
    from threadpoolctl import threadpool_limits

    cfg = CONFIGS["quick" if args.quick else "default"]
    prev_threads = torch.get_num_threads()
    torch.set_num_threads(args.threads)
    try:
        with threadpool_limits(limits=args.threads, user_api="blas"):
            t0 = time.perf_counter()
            ident = variance_identity(cfg["identity"], args.seed)
            t1 = time.perf_counter()
            sweep = teacher_sweep(cfg["sweep"], args.seed)
            t2 = time.perf_counter()
    finally:
        torch.set_num_threads(prev_threads)
    results = {"variance_identity": ident, "teacher_sweep": sweep,
               "seconds": {"identity": t1 - t0, "sweep": t2 - t1}}
    config = {"mode": "quick" if args.quick else "default", "seed": args.seed,
              "threads": args.threads, **COMMON, **cfg}
    write_result(name, config, results, path=args.out / f"{name}.json")
    plot(results, args.out / f"{name}.png")
    log.info("wrote %s and %s", args.out / f"{name}.json", args.out / f"{name}.png")
    return results


if __name__ == "__main__":
    main()
