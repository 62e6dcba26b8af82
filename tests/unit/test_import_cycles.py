"""No import cycles in ``otelkit/``: a cycle makes import order matter and hides layering mistakes.

The graph is built from the source (AST), not by importing: module-level imports, including
``from otelkit import _x`` and ``from . import x``, with ``if TYPE_CHECKING:`` blocks left out.
Importing ``a.b.c`` from outside package ``a.b`` also runs ``a.b/__init__``, so that counts as an
edge to the package too.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import otelkit

ROOT = Path(otelkit.__file__).resolve().parent.parent
PACKAGE = ROOT / "otelkit"

# Cycles that exist only through imports inside functions, still to be broken (issue 20).
# A cycle not listed here fails ``test_no_new_cycles_through_function_level_imports``.
KNOWN_FUNCTION_LEVEL_CYCLES = [
    {"otelkit._init", "otelkit._logs", "otelkit._logs_third_party", "otelkit._pools"},
    # The broker integrations register queue-depth probes (otelkit._pipeline.queues, whose redis_probe reads
    # the strict setting from otelkit._init) when a consumer starts, long after init() returned.
    {"otelkit._init", "otelkit._logs", "otelkit._logs_third_party", "otelkit._pools", "otelkit._instrument",
     "otelkit._instrument.aio_pika", "otelkit._instrument.nats", "otelkit._instrument.pika",
     "otelkit._pipeline.queues"},
]


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


MODULES = {_module_name(p): p for p in PACKAGE.rglob("*.py")}


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _module_level_imports(body: list[ast.stmt]) -> Iterator[ast.Import | ast.ImportFrom]:
    for node in body:
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            yield node
        elif isinstance(node, ast.If):
            if not _is_type_checking(node.test):
                yield from _module_level_imports(node.body)
            yield from _module_level_imports(node.orelse)
        elif isinstance(node, ast.Try):
            for block in (node.body, node.orelse, node.finalbody, *(h.body for h in node.handlers)):
                yield from _module_level_imports(block)
        elif isinstance(node, (ast.With, ast.For, ast.While)):
            yield from _module_level_imports(node.body)


def _all_imports(tree: ast.Module) -> Iterator[ast.Import | ast.ImportFrom]:
    type_checking: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and _is_type_checking(node.test):
            type_checking.update(id(n) for stmt in node.body for n in ast.walk(stmt))
    for node in ast.walk(tree):
        if isinstance(node, (ast.Import, ast.ImportFrom)) and id(node) not in type_checking:
            yield node


def _targets(module: str, node: ast.Import | ast.ImportFrom) -> set[str]:
    """The otelkit modules whose code runs for this import statement."""
    named: set[str] = set()
    if isinstance(node, ast.Import):
        named.update(alias.name for alias in node.names)
    else:
        if node.level:
            base = module.split(".") if MODULES[module].name == "__init__.py" else module.split(".")[:-1]
            base = base[: len(base) - (node.level - 1)]
            source = ".".join(base + ([node.module] if node.module else []))
        else:
            source = node.module or ""
        for alias in node.names:
            named.add(f"{source}.{alias.name}" if f"{source}.{alias.name}" in MODULES else source)
    found: set[str] = set()
    for name in named:
        parts = name.split(".")
        for i in range(1, len(parts) + 1):
            target = ".".join(parts[:i])
            # A package's own modules run with the package already (partly) imported: no edge to it.
            if target in MODULES and target != module and not module.startswith(target + "."):
                found.add(target)
    return found


def _graph(*, function_level: bool) -> dict[str, set[str]]:
    graph: dict[str, set[str]] = {}
    for module, path in MODULES.items():
        tree = ast.parse(path.read_text(encoding="utf-8"))
        imports = _all_imports(tree) if function_level else _module_level_imports(tree.body)
        graph[module] = set().union(*(_targets(module, node) for node in imports))
    return graph


def _cycles(graph: dict[str, set[str]]) -> list[tuple[set[str], list[str]]]:
    """Strongly connected components with more than one module (Tarjan), each with one cycle in it."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[set[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = set()
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.add(w)
                if w == v:
                    break
            if len(component) > 1:
                components.append(component)

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return [(c, _cycle_path(graph, c)) for c in components]


def _cycle_path(graph: dict[str, set[str]], component: set[str]) -> list[str]:
    """One concrete cycle inside a strongly connected component, for the failure message."""
    start = min(component)
    paths = {start: [start]}
    frontier = [start]
    while frontier:
        nxt = []
        for v in frontier:
            for w in sorted(graph[v] & component):
                if w == start:
                    return [*paths[v], start]
                if w not in paths:
                    paths[w] = [*paths[v], w]
                    nxt.append(w)
        frontier = nxt
    return sorted(component)


def test_the_graph_sees_otelkit_imports() -> None:
    graph = _graph(function_level=False)
    assert "otelkit._config" in graph["otelkit._init"]
    assert "otelkit._status" in graph["otelkit._sentry"]


def test_the_cycle_finder_finds_a_cycle() -> None:
    cycles = _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}})
    assert cycles == [({"a", "b", "c"}, ["a", "b", "c", "a"])]


def test_no_import_cycles_at_module_level() -> None:
    cycles = _cycles(_graph(function_level=False))
    assert not cycles, "import cycles in otelkit: " + "; ".join(" -> ".join(path) for _, path in cycles)


def test_no_new_cycles_through_function_level_imports() -> None:
    cycles = _cycles(_graph(function_level=True))
    new = [path for component, path in cycles if component not in KNOWN_FUNCTION_LEVEL_CYCLES]
    assert not new, "import cycles in otelkit (through imports in functions): " + "; ".join(
        " -> ".join(path) for path in new)
