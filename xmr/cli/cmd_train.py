"""``xmr train``."""

from __future__ import annotations

import argparse
import json
import sys

NAME = "train"
HELP = "train a model under the unified loss (config file + --set overrides)"
DESCRIPTION = """\
Train an xmr model. The configuration is a JSON file (print the full skeleton with
--print-config) plus --set key=value overrides with dotted keys, e.g.

  xmr train --set data.dataset=debian-deps --set loss.preset=double-distill \\
            --set teacher=runs/teacher_store --out runs/student

data.dataset is a registered name or a path: a folder of XC train.txt/test.txt,
trn_X_Xf.txt/trn_X_Y.txt/tst_* sparse files, X_trn.npz/Y_trn.npz/X_tst.npz/Y_tst.npz, labelled
text train.tsv/test.tsv, LF trn.json.gz/tst.json.gz, a prepared folder, or one .tsv/XC file
(split by data.test_fraction/data.split_seed); see `xmr data import --help`.

The resolved config is saved next to the model (OUT/model/config.json). Checkpoints are written
atomically to OUT/checkpoint; --resume continues the same run from there.

Several processes (labels model-parallel, encoder data-parallel; gloo on CPU, NCCL on GPU):

  torchrun --nproc_per_node 2 -m xmr train --set optim.batch_size=128 --out runs/dist

optim.batch_size is per process; the saved model holds the full label table.

Loss presets: softmax, sampled, mined, distill, teacher-negatives, double-distill."""


def register(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", help="JSON config file (see --print-config)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config value (repeatable), e.g. --set optim.epochs=3")
    p.add_argument("--out", help="output folder (model/ and checkpoint/ go there)")
    p.add_argument("--resume", action="store_true", help="continue from OUT/checkpoint")
    p.add_argument("--print-config", action="store_true", help="print the resolved config and exit")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--no-test-eval", action="store_true", help="skip the final evaluation on the test split")
    p.set_defaults(func=run)


def load_config(args):
    from xmr.train.config import TrainConfig

    cfg = TrainConfig.from_json(args.config) if args.config else TrainConfig()
    return cfg.with_overrides(args.overrides)


def run(args) -> int:
    cfg = load_config(args)
    if args.print_config:
        sys.stdout.write(cfg.to_json())
        return 0
    if not args.out:
        raise SystemExit("xmr train: error: --out is required (or use --print-config)")

    from xmr.train.run import run_training

    res = run_training(cfg, args.out, resume=args.resume, progress=not args.no_progress,
                       test_eval=not args.no_test_eval)
    if _rank_from_env() == 0:
        print(json.dumps(res.summary, indent=2))
    return 0


def _rank_from_env() -> int:
    import os

    return int(os.environ.get("RANK", "0"))
