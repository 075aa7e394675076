"""The project's layers import downwards only: no two modules of different layers import each
other, directly or round a longer cycle, and config parsing does not need the methods.

The graph is read from the source (every `import` anywhere in a module, function-level lazy
imports included, since a lazy import is a cycle postponed, not removed). Modules are grouped
into layers: each sub-package or module of `trainables` and `pruning`, and the other top-level
packages whole.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("pruning", "trainables", "sweeps", "analysis")
SPLIT = ("pruning", "trainables")  # grouped one level down


def module_files() -> dict[str, Path]:
    modules = {}
    for package in PACKAGES:
        for path in (ROOT / package).rglob("*.py"):
            parts = path.relative_to(ROOT).with_suffix("").parts
            name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
            modules[name] = path
    return modules


def imported_modules(path: Path, name: str, modules: dict[str, Path]) -> set[str]:
    """The project modules that `path` (module `name`) imports anywhere in its body."""

    def known(target: str) -> str | None:
        parts = target.split(".")
        for end in range(len(parts), 0, -1):
            if ".".join(parts[:end]) in modules:
                return ".".join(parts[:end])
        return None

    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        targets: list[str] = []
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            targets = [f"{base}.{alias.name}" for alias in node.names] + [base]
        found |= {module for module in map(known, targets) if module}
    return found - {name}


def layer(module: str) -> str:
    parts = module.split(".")
    return ".".join(parts[:2]) if parts[0] in SPLIT else parts[0]


def layer_graph() -> dict[str, set[str]]:
    modules = module_files()
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        edges = {layer(target) for target in imported_modules(path, name, modules)}
        graph.setdefault(layer(name), set()).update(edges - {layer(name)})
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one layer (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

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
            component = []
            while True:
                member = stack.pop()
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def test_the_cycle_finder_finds_a_cycle() -> None:
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert cycles(graph) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": set()}) == []


def test_relative_imports_are_resolved(tmp_path: Path) -> None:
    modules = {"pkg": tmp_path / "pkg/__init__.py", "pkg.sub": tmp_path / "pkg/sub.py",
               "pkg.other": tmp_path / "pkg/other.py"}
    source = tmp_path / "pkg/sub.py"
    source.parent.mkdir()
    source.write_text("from . import other\nfrom .other import x\n\ndef f():\n    import pkg\n")
    assert imported_modules(source, "pkg.sub", modules) == {"pkg", "pkg.other"}


def test_no_layer_imports_round_a_cycle() -> None:
    graph = layer_graph()
    assert "trainables.config" in graph and "trainables.methods" in graph
    found = cycles(graph)
    assert not found, "import cycles between layers: " + "; ".join(
        " <-> ".join(component) for component in found)


def test_config_needs_no_registry_and_pruning_needs_no_trainables() -> None:
    graph = layer_graph()
    registries = {"trainables.methods", "trainables.datasets", "trainables.models"}
    assert not registries & graph["trainables.config"], graph["trainables.config"]
    assert "trainables.resolve" in graph["sweeps"]
    for name, targets in graph.items():
        if name.startswith("pruning"):
            assert not {t for t in targets if not t.startswith("pruning")}, (name, targets)
