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


class _Parser(argparse.ArgumentParser):
    """argparse with a one-line usage error (``xmr CMD: error: ...``) instead of usage + error."""

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {message} (see `{self.prog} --help`)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
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
    except (XMRError, OSError, ValueError) as exc:
        # The one error path: xmr's own errors (bad input, damaged or refused artefacts),
        # validation errors at the library's boundary (ValueError, json.JSONDecodeError), and
        # file-system errors (missing file, full disk, read-only folder) become one line that
        # names the file; -vv shows the traceback instead.
        if args.verbose >= 2:
            raise
        print(f"xmr {args.command}: error: {error_line(exc)}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


def error_line(exc: BaseException) -> str:
    """One line for the user: the message of ``exc`` with the file it concerns, if any."""
    if isinstance(exc, OSError) and not isinstance(exc, XMRError) and exc.errno:
        msg = exc.strerror or str(exc)
        where = exc.filename if exc.filename is not None else None
        if exc.filename2 is not None:
            where = f"{exc.filename} -> {exc.filename2}"
        line = f"{where}: {msg}" if where is not None else msg
    else:
        line = str(exc) or type(exc).__name__
        if not isinstance(exc, XMRError):
            line += " (run with -vv for the traceback)"
    return " ".join(line.split())  # exactly one line


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
