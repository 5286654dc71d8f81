"""Every module of the package imports, and the ``xmr.*`` modules import each other without a cycle.

The graph is built with :mod:`ast` from the source files of ``xmr`` (and of ``xmr.kernels``,
which lives in ``kernels/``): an edge ``a → b`` for every ``import b`` / ``from b import name``
in module ``a`` that names an ``xmr`` module — at the top of the module *and* inside functions
(a lazy import is still a dependency; a cycle through one is a hallway, not a harmless detail).
``from pkg import name`` is an edge to ``pkg.name`` when that is a module, else to ``pkg``.
Not edges: the implicit import of a parent package, and a package's lazy exports resolved with
``importlib`` on first attribute access (``xmr/__init__.py``, ``xmr/models/__init__.py``),
which run only after both packages are fully imported.
"""

from __future__ import annotations

import ast
import importlib
import importlib.util
from pathlib import Path
from typing import Dict, List, Set

import xmr


def _modules() -> Dict[str, Path]:
    """``{dotted module name: source file}`` of the package, kernels included."""
    roots = [("xmr", Path(xmr.__file__).parent)]
    spec = importlib.util.find_spec("xmr.kernels")
    if spec is not None and spec.submodule_search_locations:
        roots.append(("xmr.kernels", Path(list(spec.submodule_search_locations)[0])))
    out: Dict[str, Path] = {}
    for prefix, folder in roots:
        for f in sorted(folder.rglob("*.py")):
            parts = list(f.relative_to(folder).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts = parts[:-1]
            out[".".join([prefix, *parts])] = f
    return out


def _graph(mods: Dict[str, Path]) -> Dict[str, Set[str]]:
    def known(name: str):
        while name and name not in mods:
            name = name.rpartition(".")[0]
        return name or None

    graph: Dict[str, Set[str]] = {}
    for mod, path in mods.items():
        is_pkg = path.name == "__init__.py"
        deps: Set[str] = set()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
            if isinstance(node, ast.Import):
                deps.update(known(a.name) for a in node.names if a.name.split(".")[0] == "xmr")
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:  # relative import
                    pkg = mod if is_pkg else mod.rpartition(".")[0]
                    for _ in range(node.level - 1):
                        pkg = pkg.rpartition(".")[0]
                    base = f"{pkg}.{base}" if base else pkg
                if base.split(".")[0] != "xmr":
                    continue
                for a in node.names:
                    sub = f"{base}.{a.name}"
                    deps.add(sub if sub in mods else known(base))
        deps.discard(None)
        deps.discard(mod)
        graph[mod] = deps
    return graph


def _cycle(graph: Dict[str, Set[str]]) -> List[str]:
    """One cycle ``[a, b, ..., a]`` of the graph, or ``[]``."""
    state: Dict[str, int] = {}  # 1: on the current path, 2: done
    path: List[str] = []

    def visit(v: str) -> List[str]:
        state[v] = 1
        path.append(v)
        for w in sorted(graph.get(v, ())):
            if state.get(w) == 1:
                return path[path.index(w):] + [w]
            if w not in state:
                found = visit(w)
                if found:
                    return found
        state[v] = 2
        path.pop()
        return []

    for v in sorted(graph):
        if v not in state:
            found = visit(v)
            if found:
                return found
    return []


def test_every_module_imports():
    mods = _modules()
    assert "xmr.models.xmr_model" in mods and "xmr.kernels" in mods
    failed = {}
    for name in mods:
        try:
            importlib.import_module(name)
        except Exception as exc:  # pragma: no cover - the assertion reports it
            failed[name] = f"{type(exc).__name__}: {exc}"
    assert not failed, failed


def test_no_import_cycle_among_xmr_modules():
    graph = _graph(_modules())
    assert graph["xmr.models.label_table"] >= {"xmr.distributed"}  # the graph sees the edges
    assert "xmr.data.prepare" in graph["xmr.data.sources"]  # function-level ones too
    cycle = _cycle(graph)
    assert not cycle, "import cycle: " + " → ".join(cycle)


def test_the_cycle_finder_finds_cycles():
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert _cycle({"a": {"b"}, "b": set(), "c": {"a", "b"}}) == []


def test_no_deployable_code_imports_the_trainer():
    """Loading, predicting, evaluating and indexing a saved model need no part of xmr.train."""
    graph = _graph(_modules())
    seen, todo = set(), ["xmr.models.xmr_model", "xmr.predictor", "xmr.eval.model_eval"]
    while todo:
        m = todo.pop()
        if m not in seen:
            seen.add(m)
            todo.extend(graph.get(m, ()))
    assert not {m for m in seen if m.startswith("xmr.train")}, sorted(seen)
