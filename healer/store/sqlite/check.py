"""``healer journal check FILE``: what is wrong with a SQLite journal file, read-only."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from healer.store.sqlite.schema import SCHEMA_VERSION, check_hint, foreign_tables
from healer.store.sqlite.writer import is_corruption, open_error


def check_file(path: Path) -> list[str]:
    """What is wrong with the journal file at ``path`` (empty: nothing), read-only:
    ``PRAGMA integrity_check``, then whether it is a healer journal this healer reads."""
    if not path.exists():
        return [f"{path}: no such file"]
    if path.is_dir():
        return [f"{path}: is a directory, not a journal file"]
    try:
        db = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True)
    except sqlite3.Error as exc:
        return [open_error(path, exc).removesuffix(f"; {check_hint(path)}")]
    try:
        problems = [row[0] for row in db.execute("PRAGMA integrity_check(100)") if row[0] != "ok"]
        if problems:
            return problems
        version = db.execute("PRAGMA user_version").fetchone()[0]
        foreign = foreign_tables(db)
        empty = db.execute("SELECT COUNT(*) FROM sqlite_master").fetchone()[0] == 0
    except sqlite3.Error as exc:
        why = "corrupt or not a SQLite database" if is_corruption(exc) else "unreadable"
        return [f"{path}: {why}: {exc}"]
    finally:
        db.close()
    if version > SCHEMA_VERSION:
        return [f"schema version {version} is newer than this healer's ({SCHEMA_VERSION})"]
    if empty:
        return ["an empty SQLite file, not a healer journal yet (healer serve would initialise it)"]
    if foreign is not None:
        return [f"not a healer journal: another application's SQLite database? (tables: {foreign})"]
    return []
