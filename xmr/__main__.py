"""``python -m xmr`` is the same as the ``xmr`` console script."""

from xmr.cli.main import main

if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
