"""The package reads top-down: no module of proxy/ imports, directly or through others, one that imports it
back, and no package does either; ``config`` imports nothing of the project but ``values``, its parsers, which
import nothing of it (gunicorn's master reads the settings without the application).

Imports are read from the source with ``ast``, those inside functions and ``if TYPE_CHECKING`` too: an import
put off to dodge a cycle is still a cycle.
"""
from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

from tests.support import REPO_ROOT

PACKAGE = REPO_ROOT / "proxy"
# Being rewritten under issue 11 (the limits part), which removes this cycle; drop the entry once merged.
KNOWN_CYCLES: set[frozenset[str]] = set()


def _modules() -> dict[str, tuple[Path, bool]]:
    found = {}
    for path in PACKAGE.rglob("*.py"):
        parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
        is_package = parts[-1] == "__init__"
        found[".".join(parts[:-1] if is_package else parts)] = (path, is_package)
    return found


def import_graph() -> dict[str, set[str]]:
    """module -> the modules of proxy it imports (``from pkg import mod`` counts as importing pkg.mod)."""
    modules = _modules()

    def known(name: str) -> str | None:
        while name and name not in modules:
            name = name.rpartition(".")[0]
        return name or None

    graph: dict[str, set[str]] = {}
    for name, (path, is_package) in modules.items():
        here = name.split(".") if is_package else name.split(".")[:-1]
        targets: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                targets.update(t for a in node.names if (t := known(a.name)) and a.name.startswith("proxy"))
            elif isinstance(node, ast.ImportFrom):
                base = here[:len(here) - node.level + 1] if node.level else []
                module = ".".join(base + ([node.module] if node.module else []))
                if not module.startswith("proxy"):
                    continue
                for alias in node.names:
                    target = known(f"{module}.{alias.name}") if f"{module}.{alias.name}" in modules else known(module)
                    if target:
                        targets.add(target)
        graph[name] = targets - {name}
    return graph


def cycles(graph: dict[str, set[str]]) -> list[frozenset[str]]:
    """The strongly connected groups of more than one node (Tarjan's algorithm)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[frozenset[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        for target in graph.get(node, ()):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            group = set()
            while True:
                member = stack.pop()
                group.add(member)
                if member == node:
                    break
            if len(group) > 1:
                found.append(frozenset(group))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def package_graph(graph: dict[str, set[str]]) -> dict[str, set[str]]:
    """The graph between proxy's top-level parts (a subpackage counts as one, a module as itself)."""
    def part(name: str) -> str:
        return ".".join(name.split(".")[:2])

    parts: dict[str, set[str]] = {}
    for source, targets in graph.items():
        if source == "proxy":
            continue
        parts.setdefault(part(source), set()).update(
            part(t) for t in targets if t != "proxy" and part(t) != part(source))
    return parts


def test_no_module_of_the_package_imports_itself_back():
    assert [sorted(c) for c in cycles(import_graph()) if c not in KNOWN_CYCLES] == []


def test_no_package_imports_one_that_imports_it_back():
    assert [sorted(c) for c in cycles(package_graph(import_graph()))] == []


def test_config_imports_nothing_of_the_project_but_its_parsers():
    graph = import_graph()
    assert graph["proxy.config"] == {"proxy.values"} and graph["proxy.values"] == set()


def test_reading_the_settings_loads_no_application():
    """gunicorn's master imports ``proxy.config`` before its workers patch the standard library with gevent."""
    probe = ("import sys, proxy.config; print(' '.join(sorted({m.split('.')[0] for m in sys.modules} & "
             "{'flask', 'werkzeug', 'gevent', 'peewee', 'limits', 'redis', 'geventhttpclient'})))")
    loaded = subprocess.run([sys.executable, "-c", probe], cwd=PACKAGE.parent, capture_output=True, text=True,
                            check=True).stdout.split()
    assert loaded == []


def test_a_cycle_is_found_when_there_is_one():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [frozenset({"a", "b", "c"})]
