"""The README's result tables are exactly what the committed results render to
(``python benchmarks/render_readme.py --check``): a table edited by hand, or a results file
committed without re-rendering, fails here."""

from pathlib import Path

from benchmarks import render_readme


def test_readme_tables_match_the_committed_results():
    readme = Path(render_readme.ROOT / "README.md").read_text()
    assert render_readme.render(readme) == readme, \
        "README.md is out of date: run python benchmarks/render_readme.py"
