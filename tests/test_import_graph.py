"""The import graph of our packages: no cycles, and each layer imports only what it may.

Cycles are how a tree stops being readable (a change in one module drags in eight), and the
layer rules are the contract of docs/architecture.md: `cosem_objects` does no I/O and needs
nothing of ours, `drivers` builds on it alone, `headend` and `simulators` never import each
other, and `headend/domain.py` is vocabulary every layer may use because it imports nothing.

The graph is read from the source with `ast`, so imports inside functions and under
TYPE_CHECKING count too: a cycle hidden in a function is still a cycle for the reader."""

from __future__ import annotations

import ast
import functools
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("cosem_objects", "drivers", "headend", "simulators")

# What each top-level package may import of ours (besides itself).
ALLOWED = {
    "cosem_objects": set(),
    "drivers": {"cosem_objects"},
    "headend": {"drivers", "cosem_objects"},
    "simulators": {"drivers", "cosem_objects"},
}


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _modules() -> dict[str, Path]:
    found: dict[str, Path] = {}
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            found[_module_name(path)] = path
    return found


def _resolve(name: str, known: dict[str, Path]) -> str | None:
    """The longest known module that `name` denotes (a symbol import names its module)."""
    while name:
        if name in known:
            return name
        name = name.rpartition(".")[0]
    return None


def _is_package(module: str, known: dict[str, Path]) -> bool:
    return known[module].name == "__init__.py"


def _imports(module: str, path: Path, known: dict[str, Path]) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    package = module if _is_package(module, known) else module.rpartition(".")[0]
    targets: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            targets.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")
                anchor = anchor[: len(anchor) - (node.level - 1)]
                base = ".".join([*anchor, base] if base else anchor)
            targets.add(base)
            targets.update(f"{base}.{alias.name}" for alias in node.names)
    edges: set[str] = set()
    for target in targets:
        resolved = _resolve(target, known)
        if resolved is None or resolved == module or module.startswith(resolved + "."):
            continue  # ours only; a module's own packages are already being imported
        edges.add(resolved)
        # Importing a.b.c runs a/__init__ and a/b/__init__ first; from outside those
        # packages that is a real edge (from inside, the package is already importing).
        parts = resolved.split(".")
        for depth in range(1, len(parts)):
            parent = ".".join(parts[:depth])
            if parent in known and not module.startswith(parent + ".") and parent != module:
                edges.add(parent)
    return edges


@functools.cache
def _graph() -> dict[str, set[str]]:
    known = _modules()
    return {module: _imports(module, path, known) for module, path in known.items()}


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    counter = 0

    def visit(node: str) -> None:
        nonlocal counter
        index[node] = low[node] = counter
        counter += 1
        stack.append(node)
        on_stack.add(node)
        for succ in sorted(graph.get(node, ())):
            if succ not in index:
                visit(succ)
                low[node] = min(low[node], low[succ])
            elif succ in on_stack:
                low[node] = min(low[node], index[succ])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def test_the_graph_is_read_from_every_package() -> None:
    graph = _graph()
    assert {module.split(".")[0] for module in graph} == set(PACKAGES)
    # A known edge, so an empty graph cannot pass the checks below.
    assert "cosem_objects.obis" in graph["drivers.session"] | graph["drivers.connect"] or any(
        target.startswith("cosem_objects") for target in graph["drivers.session"]
    )


def test_no_import_cycles() -> None:
    cycles = _cycles(_graph())
    assert cycles == [], "import cycles:\n" + "\n".join(" <-> ".join(c) for c in cycles)


def test_the_cycle_finder_finds_a_cycle() -> None:
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert _cycles({"a": {"b"}, "b": set()}) == []


@pytest.mark.parametrize("package", PACKAGES)
def test_layers_import_only_what_they_may(package: str) -> None:
    wrong = sorted(
        f"{module} -> {target}"
        for module, targets in _graph().items()
        if module.split(".")[0] == package
        for target in targets
        if target.split(".")[0] not in ALLOWED[package] | {package}
    )
    assert wrong == []


def test_domain_imports_nothing_of_ours() -> None:
    assert _graph()["headend.domain"] == set()
