"""The plugin-facing surface: ``healer.api.__all__`` is pinned, and built-in handlers
import nothing else from healer."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import healer.api

HANDLERS_DIR = Path(__file__).resolve().parents[2] / "handlers"


def test_api_exports_are_pinned() -> None:
    """Changing what handlers may import is a deliberate act: this list must change with it."""
    assert sorted(healer.api.__all__) == [
        "ActResult",
        "ActionFailed",
        "Alert",
        "CheckResult",
        "DockerAdapter",
        "Duration",
        "Handler",
        "HandlerParams",
        "HealContext",
        "HealError",
        "HealPostgres",
        "InvalidParams",
        "Outcome",
        "PgSession",
        "Postgres",
        "PostgresAdapter",
        "Target",
        "TargetRefused",
    ]


def test_every_export_exists() -> None:
    """Each name in ``__all__`` is importable from healer.api."""
    for name in healer.api.__all__:
        assert hasattr(healer.api, name), name


def healer_imports(path: Path) -> list[str]:
    """Every healer module ``path`` imports (absolute or relative-to-healer)."""
    found: list[str] = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), filename=str(path))):
        if isinstance(node, ast.Import):
            found += [a.name for a in node.names if a.name.split(".")[0] == "healer"]
        elif (
            isinstance(node, ast.ImportFrom)
            and node.module
            and node.level == 0
            and node.module.split(".")[0] == "healer"
        ):
            # `from healer import api` imports healer.api
            found += (
                [f"healer.{a.name}" for a in node.names]
                if node.module == "healer"
                else [node.module]
            )
    return found


HANDLER_MODULES = sorted(p for p in HANDLERS_DIR.glob("*.py"))


def test_handler_modules_exist() -> None:
    """The scan below looks at real files (a moved directory would make it vacuous)."""
    assert any(p.name == "docker.py" for p in HANDLER_MODULES)


@pytest.mark.parametrize("path", HANDLER_MODULES, ids=lambda p: p.name)
def test_handlers_import_only_healer_api(path: Path) -> None:
    """A handler module imports from healer.api and from no other healer module."""
    assert [m for m in healer_imports(path) if m != "healer.api"] == []
