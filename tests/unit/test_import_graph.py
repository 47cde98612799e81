"""The package's import graph has no circles: every module of ``healer`` and ``handlers``
can be read bottom-up (leaf modules such as ``healer.units`` first, ``healer.app`` last).

Imports are read from the source with :mod:`ast`, including those under
``TYPE_CHECKING`` and inside functions: a circle hidden there still ties two modules
together for a reader."""

from __future__ import annotations

import ast
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
PACKAGES = ("healer", "handlers")


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(REPO).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _graph() -> dict[str, set[str]]:
    modules = {_module_name(p): p for pkg in PACKAGES for p in sorted((REPO / pkg).rglob("*.py"))}
    graph: dict[str, set[str]] = {name: set() for name in modules}
    for name, path in modules.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            targets: list[str] = []
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    up = package.split(".")[: len(package.split(".")) - node.level + 1]
                    base = ".".join([*up, base] if base else up)
                targets = [base, *(f"{base}.{a.name}" for a in node.names)]
            for target in targets:
                # the deepest known module the import names (a name inside it counts as it)
                while target and target not in modules:
                    target = target.rpartition(".")[0]
                if target and target != name and not name.startswith(target + "."):
                    graph[name].add(target)
    return graph


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    found: list[list[str]] = []
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                found.append([*stack[stack.index(nxt) :], nxt])
            elif nxt not in state:
                visit(nxt)
        stack.pop()
        state[node] = 2

    for node in sorted(graph):
        if node not in state:
            visit(node)
    return found


def test_no_import_circles() -> None:
    """No module of healer/ or handlers/ imports (directly or through others) a module that
    imports it back; a circle is printed as ``a -> b -> a``."""
    cycles = _cycles(_graph())
    assert not cycles, "\n".join(" -> ".join(c) for c in cycles)


def test_units_is_a_leaf() -> None:
    """Durations and sizes live in a leaf module: healer.units imports nothing of healer,
    so the config, the handler API and the CLI can all use it."""
    assert _graph()["healer.units"] == set()


def test_config_knows_no_plugins() -> None:
    """The config does not name the plugin registry: rules are checked against handlers
    through the RuleCheck protocol that healer.plugins implements."""
    assert "healer.plugins" not in _graph()["healer.config"]
    assert "healer.api" not in _graph()["healer.config"]
