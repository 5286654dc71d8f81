"""Entry point of the ``xmr`` console script (also ``python -m xmr``)."""

from __future__ import annotations

import argparse
import importlib
import logging
import pkgutil
import sys
from typing import List, Optional

import xmr
import xmr.cli
from xmr.errors import XMRError


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="xmr",
        description=(
            "xmr: extreme multiclass retrieval. Train a sharded softmax over millions of labels "
            "with distillation and negative mining, build label indexes, measure throughput."
        ),
        epilog="Run `xmr COMMAND --help` for the options of a command.",
    )
    parser.add_argument("--version", action="version", version=f"xmr {xmr.__version__}")
    parser.add_argument("-v", "--verbose", action="count", default=0,
                        help="more logging (-v info, -vv debug)")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    names = sorted(m.name for m in pkgutil.iter_modules(xmr.cli.__path__)
                   if m.name.startswith("cmd_"))
    for name in names:
        mod = importlib.import_module(f"xmr.cli.{name}")
        p = sub.add_parser(mod.NAME, help=mod.HELP, description=getattr(mod, "DESCRIPTION", mod.HELP),
                           formatter_class=argparse.RawDescriptionHelpFormatter)
        mod.register(p)
    return parser


def main(argv: Optional[List[str]] = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    level = [logging.WARNING, logging.INFO, logging.DEBUG][min(args.verbose, 2)]
    logging.basicConfig(level=level, format="%(asctime)s %(name)s %(levelname)s: %(message)s")
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except XMRError as exc:
        # Errors caused by the user's input: one clear line, no traceback.
        print(f"xmr {args.command}: error: {exc}", file=sys.stderr)
        return 1
    except (ValueError, FileNotFoundError) as exc:
        # Validation errors raised by the library at its boundary: one line too, unless -vv
        # asks for the traceback.
        if args.verbose >= 2:
            raise
        print(f"xmr {args.command}: error: {exc} (run with -vv for the traceback)", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
