"""Render the README's result tables from the JSON files under benchmarks/results/.

Tables live between ``<!-- BEGIN name -->`` and ``<!-- END name -->`` markers; each ``name`` has
a renderer below that reads one results file. Nothing between the markers is edited by hand:

    python benchmarks/render_readme.py          # rewrite README.md in place
    python benchmarks/render_readme.py --check  # exit 1 if README.md is out of date
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results"
RENDERERS = {}


def renderer(name):
    def deco(fn):
        RENDERERS[name] = fn
        return fn
    return deco


def load(name):
    p = RESULTS / f"{name}.json"
    return json.loads(p.read_text()) if p.exists() else None


def fmt(x, nd=3):
    if x is None:
        return "–"
    if isinstance(x, float):
        return f"{x:.{nd}f}"
    return str(x)


def table(header, rows):
    out = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    out += ["| " + " | ".join(fmt(c) if not isinstance(c, str) else c for c in r) + " |" for r in rows]
    return "\n".join(out)


def source_line(res):
    m = res.get("machine", {})
    cpu = m.get("gpu") or m.get("cpu_model") or m.get("processor", "?")
    return (f"\n_Source: `benchmarks/results/{res['name']}.json` — {cpu}, "
            f"{m.get('cpu_count', '?')} cores, commit `{res.get('commit', '?')[:12]}`, {res.get('date', '?')}._")


def render(text: str) -> str:
    def sub(m):
        name = m.group(1)
        fn = RENDERERS.get(name)
        body = fn() if fn else None
        if body is None:
            body = f"_(no results yet: run the benchmark that writes `benchmarks/results/{name}.json`)_"
        return f"<!-- BEGIN {name} -->\n{body}\n<!-- END {name} -->"
    return re.sub(r"<!-- BEGIN (\S+) -->.*?<!-- END \1 -->", sub, text, flags=re.S)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--check", action="store_true", help="fail if README.md is not up to date")
    args = ap.parse_args(argv)
    readme = ROOT / "README.md"
    old = readme.read_text()
    new = render(old)
    if args.check:
        if new != old:
            print("README.md is out of date: run python benchmarks/render_readme.py", file=sys.stderr)
            return 1
        return 0
    readme.write_text(new)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
