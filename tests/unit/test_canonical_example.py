"""One canonical handler example: the code of examples/handler-plugin is what the
healer.api docstring and docs/writing-handlers.md quote, verbatim, so none of the three
drifts from the others."""

from __future__ import annotations

import ast
import textwrap
from pathlib import Path

import healer.api

REPO = Path(__file__).resolve().parents[2]
EXAMPLE = REPO / "examples" / "handler-plugin"
SOURCE = EXAMPLE / "src" / "healer_example" / "restart_unhealthy.py"


def _code() -> str:
    """The example module after its docstring and ``from __future__`` line."""
    text = SOURCE.read_text(encoding="utf-8")
    return text.split("from __future__ import annotations\n\n", 1)[1].rstrip("\n")


def test_the_api_docstring_quotes_the_example() -> None:
    """healer.api's docstring holds the example's code, indented as a literal block."""
    assert healer.api.__doc__ is not None
    assert textwrap.indent(_code(), "    ") in healer.api.__doc__


def test_the_handler_docs_quote_the_example() -> None:
    """docs/writing-handlers.md holds the example's code as a python block."""
    doc = (REPO / "docs" / "writing-handlers.md").read_text(encoding="utf-8")
    assert f"```python\n{_code()}\n```" in doc


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    found = {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    found |= {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module}
    return found


def test_the_example_uses_only_the_public_api() -> None:
    """The plugin imports healer.api alone; its tests add healer.testing, never tests/."""
    healer_in_plugin = {m for m in _imports(SOURCE) if m.split(".")[0] == "healer"}
    assert healer_in_plugin == {"healer.api"}
    for test in (EXAMPLE / "tests").glob("*.py"):
        used = {m for m in _imports(test) if m.split(".")[0] in ("healer", "tests", "handlers")}
        assert used <= {"healer.api", "healer.testing"}, (test.name, used)
