"""``xmr demo``."""

from __future__ import annotations

import argparse
import json

NAME = "demo"
HELP = "train a teacher and every student preset on the embedded debian-deps data and compare"
DESCRIPTION = """\
Run xmr's whole pipeline offline on the embedded real dataset debian-deps (Debian bookworm
packages; labels = their dependencies): baselines (popularity, TF-IDF k-NN), a cross-fitted
teacher (each training point scored by a model that did not see it: omikuji trees when the
optional extra xmr[peers] is installed, else the student recipe itself), its top-K store, then
one small student per loss preset (softmax, sampled, mined, distill, double-distill) under the
library's default recipe with the same epoch budget. Prints P@1/3/5, PSP@1/3/5, training time
and prediction ms/query next to omikuji's and napkinXC's scores from the committed
bench_peers results (measured side by side on the same split), and writes the table as JSON.

A default run takes about 9 minutes on 2 CPU cores; --quick about two."""


def register(p: argparse.ArgumentParser) -> None:
    p.add_argument("--quick", action="store_true", help="small models, 1 epoch (under two minutes)")
    p.add_argument("--baselines-only", action="store_true", help="only the popularity and k-NN baselines")
    p.add_argument("--presets", default=None,
                   help="comma-separated student presets (default: softmax,sampled,mined,distill,double-distill)")
    p.add_argument("--epochs", type=int, default=None,
                   help="epoch budget of every student (and of a neural teacher)")
    p.add_argument("--seed", type=int, default=0, help="seed of the split and of training")
    p.add_argument("--teacher-folds", type=int, default=None,
                   help="cross-fit the teacher: scores of each training point come from a teacher "
                        "trained on the other folds")
    p.add_argument("--tau-t", type=float, default=None,
                   help="teacher temperature for the students (default: calibrated on the "
                        "teacher's out-of-fold training points, lowest ECE)")
    p.add_argument("--teacher", choices=("auto", "tree", "neural"), default=None,
                   help="teacher kind (default auto: omikuji trees if installed, else neural)")
    p.add_argument("--threads", type=int, default=None, help="torch and tree threads")
    p.add_argument("--teacher-dim", type=int, default=None)
    p.add_argument("--student-dim", type=int, default=None)
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="set any field of the demo's settings (xmr.demo.DemoSettings), e.g. "
                        "--set batch_size=512 (repeatable; after the flags above)")
    p.add_argument("--out", default="xmr-demo.json", help="where to write the results JSON (default: %(default)s)")
    p.add_argument("--workdir", default=None, help="keep the teacher, its store and checkpoints here")
    p.set_defaults(func=run)


def settings_from_args(args):
    """The :class:`~xmr.demo.DemoSettings` of the command line: ``--quick``'s or the defaults,
    the flags given, then ``--set``; checked (a bad value is a one-line error)."""
    import dataclasses

    from xmr.demo import DemoSettings

    s = DemoSettings.quick() if args.quick else DemoSettings()
    given = {"seed": args.seed, "baselines_only": args.baselines_only,
             "student_epochs": args.epochs}
    if args.presets:
        given["presets"] = tuple(x.strip() for x in args.presets.split(",") if x.strip())
    for name in ("teacher_folds", "tau_t", "teacher_dim", "student_dim", "teacher", "threads"):
        given[name] = getattr(args, name)
    s = dataclasses.replace(s, **{k: v for k, v in given.items() if v is not None})
    return s.with_overrides(args.overrides)  # checks every value, also the flags'


def run(args) -> int:
    from xmr.demo import format_table, run_demo
    from xmr.utils.atomic import atomic_open

    s = settings_from_args(args)
    result = run_demo(s, workdir=args.workdir)
    print()
    print(format_table(result))
    with atomic_open(args.out, "w") as f:
        json.dump(result, f, indent=2)
        f.write("\n")
    print(f"\nresults written to {args.out} ({result['total_seconds']:.0f} s in all)")
    return 0
