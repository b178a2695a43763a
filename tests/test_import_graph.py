"""Imports run one way (data -> models -> training -> export -> inference -> CLI): no module of the
package imports, directly or through others, a module that imports it, at module level or inside
a function. The one ring allowed is the model registry's: it imports the model modules to run
their ``@register``, and they import it for the decorator."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "src" / "captchalab"


def _modules() -> dict[str, Path]:
    modules = {}
    for path in PACKAGE.rglob("*.py"):
        parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        modules[".".join(parts)] = path
    return modules


def _imported(node: ast.Import | ast.ImportFrom, modules: dict[str, Path]) -> set[str]:
    """The package's modules an import statement names: ``from a import b`` names ``a.b`` when that is a module."""
    if isinstance(node, ast.Import):
        return {alias.name for alias in node.names} & modules.keys()
    if node.level or node.module is None:  # the package uses absolute imports only
        raise AssertionError(f"relative import at line {node.lineno}: use 'from captchalab... import'")
    named = {f"{node.module}.{alias.name}" for alias in node.names}
    return (named & modules.keys()) or ({node.module} & modules.keys())


def import_graph() -> dict[str, set[str]]:
    """Module -> the package modules it imports anywhere in its file (top level, functions, methods)."""
    modules = _modules()
    graph: dict[str, set[str]] = {name: set() for name in modules}
    for name, path in modules.items():
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                graph[name] |= _imported(node, modules)
    return graph


def cycles(graph: dict[str, set[str]]) -> list[set[str]]:
    """The strongly connected components with more than one module (or a module importing itself)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[set[str]] = []

    def visit(node: str) -> None:  # Tarjan's algorithm
        index[node] = low[node] = len(index)
        stack.append(node)
        for target in graph[node]:
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = {stack.pop()}
            while node not in component:
                component.add(stack.pop())
            if len(component) > 1 or node in graph[node]:
                found.append(component)

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def test_the_finder_sees_a_ring() -> None:
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}, "e": {"e"}}
    assert sorted(map(sorted, cycles(graph))) == [["a", "b", "c"], ["e"]]


def test_the_graph_holds_function_level_imports() -> None:
    graph = import_graph()
    assert "captchalab.models.cnn" in graph["captchalab.models.registry"]  # imported inside _load_all
    assert "captchalab.runs" in graph["captchalab.inference.predictor"]  # "from captchalab import runs"


def _registry_ring(ring: set[str]) -> bool:
    """The registry and model modules (a new model joins it): nothing outside models/."""
    return "captchalab.models.registry" in ring and all(name.startswith("captchalab.models.") for name in ring)


def test_no_import_cycle_but_the_model_registry() -> None:
    assert [ring for ring in cycles(import_graph()) if not _registry_ring(ring)] == []
