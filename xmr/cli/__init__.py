"""The ``xmr`` command line: a thin mapping of subcommands onto the library.

Each subcommand lives in a module ``xmr/cli/cmd_<name>.py`` that defines::

    NAME = "index"                      # the subcommand
    HELP = "build and search ..."       # one line for `xmr --help`

    def register(parser: argparse.ArgumentParser) -> None:
        ...                             # add arguments (or nested subparsers)
        parser.set_defaults(func=run)

    def run(args: argparse.Namespace) -> int: ...

Modules are discovered automatically; their top level must stay cheap (import torch, faiss,
numba inside ``run``).
"""
