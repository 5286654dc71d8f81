"""Seeded, time-budgeted search of the student recipe on a validation split (issue 13, point 4).

Greedy coordinate search over reduction × schedule × input dropout × weight decay × dim on
debian-deps: each stage tries the values of one knob with the others at the best so far, and a
value replaces the incumbent only if it raises validation P@1 by more than ``--min-gain`` (the
simpler setting wins ties). Every run trains on the training points minus a seeded 10 %
validation split carved from them (``data.valid_fraction``), is early-stopped on that split and
scored there: **the test split is never read**. Results (every run, the winner, the budget)
go to ``benchmarks/results/tune_student.json``; the README renders the table.

    python -m benchmarks.studies.tune_student                  # about 30 minutes on 2 cores
    python -m benchmarks.studies.tune_student --quick          # smoke run (tiny model, 1 epoch)
"""

from __future__ import annotations

import argparse
import copy
import sys
import time
from pathlib import Path


from benchmarks._common import write_result

STAGES = [
    ("loss.reduction", ["pal-n", "pal", "decoupled"]),
    ("optim.schedule", ["constant", "cosine", "linear"]),
    ("model.input_dropout", [0.0, 0.1, 0.25]),
    ("optim.weight_decay", [0.0, 0.05]),
    ("model.dim", [96, 128, 192]),
]


def base_config(quick: bool):
    from xmr.train.config import TrainConfig

    cfg = TrainConfig(seed=0, eval_every=1, threads=0)
    cfg.loss.preset = "softmax"
    cfg.loss.reduction = "pal-n"
    cfg.model.dim = 32 if quick else 96
    cfg.optim.epochs = 1 if quick else 8
    cfg.optim.batch_size = 256
    cfg.data.valid_fraction = 0.1
    cfg.early_stopping_patience = 2
    cfg.restore_best = True
    return cfg


def set_key(cfg, key: str, value):
    sec, name = key.split(".")
    setattr(getattr(cfg, sec), name, value)
    if key == "optim.schedule" and value != "constant":
        cfg.optim.warmup_fraction = 0.05


def run_one(cfg, X, Y, inv_prop, teacher=None):
    """Train ``cfg`` (early-stopped on its validation rows) and return the best epoch's
    validation figures, the history and the wall time."""
    from xmr.train.loop import Trainer

    t0 = time.perf_counter()
    tr = Trainer(cfg, X, Y, inv_prop=inv_prop, teacher=teacher, progress=False)
    res = tr.fit()
    best = max(res.history, key=lambda h: h["P@1"]) if res.history else {}
    return {"valid_P@1": best.get("P@1"), "valid_P@5": best.get("P@5"),
            "valid_PSP@1": best.get("PSP@1"), "best_epoch": best.get("epoch"),
            "epochs_run": len(res.history), "train_s": time.perf_counter() - t0,
            "history": [{k: h[k] for k in ("epoch", "P@1", "P@5", "PSP@1")} for h in res.history]}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--budget-s", type=float, default=2400.0,
                    help="stop starting new runs after this many seconds")
    ap.add_argument("--min-gain", type=float, default=0.002)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", default=None)
    args = ap.parse_args(argv)
    import torch

    torch.set_num_threads(args.threads)
    from xmr.data.debian import load_debian_deps
    from xmr.eval.propensity import inverse_propensity

    ds = load_debian_deps(seed=0)
    X, Y = ds.X_trn, ds.Y_trn  # training points only; validation is carved from them
    if args.quick:
        X, Y = X[:3000], Y[:3000]
    inv = inverse_propensity(Y, A=ds.prop_a, B=ds.prop_b)
    t_start = time.perf_counter()
    best_cfg = base_config(args.quick)
    runs, incumbent, seen = [], None, {}
    stages = STAGES[:2] if args.quick else STAGES
    for key, values in stages:
        for v in values:
            cfg = copy.deepcopy(best_cfg)
            set_key(cfg, key, v)
            sig = cfg.to_json()
            if sig in seen:
                continue
            if time.perf_counter() - t_start > args.budget_s:
                runs.append({"stage": key, "value": v, "skipped": "time budget"})
                continue
            r = run_one(cfg, X, Y, inv)
            seen[sig] = r
            r.update(stage=key, value=v, config={k: getattr(getattr(cfg, k.split(".")[0]), k.split(".")[1])
                                                  for k, _ in STAGES})
            runs.append(r)
            print(f"{key}={v}: valid P@1={r['valid_P@1']:.4f} PSP@1={r['valid_PSP@1']:.4f} "
                  f"(epoch {r['best_epoch']}/{r['epochs_run']}, {r['train_s']:.0f} s)", flush=True)
            if incumbent is None or r["valid_P@1"] > incumbent["valid_P@1"] + args.min_gain:
                incumbent, best_cfg = r, cfg
    winner = {k: getattr(getattr(best_cfg, k.split(".")[0]), k.split(".")[1]) for k, _ in STAGES}
    winner["optim.warmup_fraction"] = best_cfg.optim.warmup_fraction
    print(f"winner: {winner} valid P@1={incumbent['valid_P@1']:.4f}")
    path = write_result("tune_student" if not args.quick else "tune_student_quick",
                        {"dataset": "debian-deps", "split": "training points of the seeded 80/20 "
                         "split; 10 % of them (seed 0) as validation; test never read",
                         "base": base_config(args.quick).to_dict(), "stages": STAGES,
                         "min_gain": args.min_gain, "budget_s": args.budget_s,
                         "threads": args.threads},
                        {"runs": runs, "winner": winner, "winner_valid": incumbent,
                         "seconds": time.perf_counter() - t_start},
                        path=args.out)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
