"""The SQLite journal's schema: versioned migrations, each concern module's own DDL.

``MIGRATIONS`` is an ordered list of ``(version, module, statements)``: a journal at
``PRAGMA user_version`` *v* runs, in one transaction, every step of a version above *v*,
in order, then records the newest version. ``statements`` is the DDL itself, or a
function of the connection that returns what to run (the legacy step looks at the
tables first). A journal of a newer healer, or another application's database, is
refused before anything is written.

Version 1 (user_version 0, labels in each alert row) becomes version 2 in that one
transaction: its ``alerts`` table is set aside as ``alerts_v1`` and its rows copied.
Version 3 adds replicas: leases on heals, the replica on each timeline entry, target
locks (columns added: a version-2 journal keeps its rows; their ``replica`` is NULL and
their heals unleased, so the first start takes them over). Version 4 adds the
``approvals`` table (``mode: approve``). Version 5 adds the indexes retention walks
(:mod:`healer.store.sqlite.retention`). Version 6 keeps rows only for alerts a rule
matches: the ``alert_log`` view reads the others from the kept bodies (no table changes;
rows stored before stay).

Space: a journal is kept in ``auto_vacuum=INCREMENTAL`` mode, so that the pages a prune
frees can be given back to the file system (``PRAGMA incremental_vacuum``). A new file
gets the mode before its first table; an existing one (it had ``auto_vacuum=NONE``) is
rewritten once by ``VACUUM`` when it is first opened by this healer
(:func:`incremental_vacuum_mode`): that needs free disk space about the journal's size,
and takes a few seconds per hundred MiB.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Sequence
from pathlib import Path

import structlog

from healer.errors import JournalUnavailable
from healer.store.sqlite import alerts, approvals, followups, gates, heals, retention

Statements = Sequence[str] | Callable[[sqlite3.Connection], Sequence[str]]

# The readiness probe's row (SqliteStore.ping really writes).
PROBE_DDL = (
    """CREATE TABLE IF NOT EXISTS probe (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    at REAL NOT NULL
)""",
)

MIGRATIONS: tuple[tuple[int, str, Statements], ...] = (
    (2, "alerts", alerts.v1_set_aside),
    (2, "alerts", alerts.DDL),
    (2, "heals", heals.DDL),
    (2, "safety", gates.DDL),
    (2, "followups", followups.DDL),
    (2, "probe", PROBE_DDL),
    (2, "alerts", alerts.v1_copy),
    (3, "heals", heals.LEASES_DDL),
    (4, "approvals", approvals.DDL),
    (5, "retention", retention.DDL),
    (6, "alerts", alerts.LOG_DDL),
)
_INCREMENTAL = 2  # PRAGMA auto_vacuum's value for INCREMENTAL
SCHEMA_VERSION = max(version for version, _, _ in MIGRATIONS)


def check_hint(path: Path) -> str:
    return f"run `healer journal check {path}` for details"


def foreign_tables(db: sqlite3.Connection) -> str | None:
    """The tables of a SQLite file that is not a healer journal, or None: it is one (a
    version-1 journal carries user_version 0, and an ``alerts`` table), or it is empty."""
    tables = sorted(
        r[0]
        for r in db.execute(
            "SELECT name FROM sqlite_master WHERE type='table' AND name NOT LIKE 'sqlite_%'"
        )
    )
    if not tables or "alerts" in tables:
        return None
    return ", ".join(tables[:5]) + (f" and {len(tables) - 5} more" if len(tables) > 5 else "")


def refuse_unknown(db: sqlite3.Connection, path: Path) -> None:
    """Before anything is written (even the switch to WAL): a journal of a newer
    healer, or another application's database, is refused as it is."""
    version = db.execute("PRAGMA user_version").fetchone()[0]
    if version > SCHEMA_VERSION:
        raise JournalUnavailable(
            f"journal {path}: cannot open: its schema {version} is newer than this"
            f" healer's ({SCHEMA_VERSION}): upgrade healer"
        )
    if (foreign := foreign_tables(db)) is not None:
        raise JournalUnavailable(
            f"journal {path}: cannot open: not a healer journal (another "
            f"application's SQLite database? tables: {foreign}); {check_hint(path)}"
        )


def migrate(db: sqlite3.Connection) -> None:
    """Bring the journal to SCHEMA_VERSION in one IMMEDIATE transaction (one statement
    at a time: executescript() would commit half-way)."""
    version = db.execute("PRAGMA user_version").fetchone()[0]
    if version == SCHEMA_VERSION:
        return
    db.execute("BEGIN IMMEDIATE")
    try:
        for step_version, _module, statements in MIGRATIONS:
            if step_version <= version:
                continue
            for statement in statements(db) if callable(statements) else statements:
                db.execute(statement)
        db.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
        db.execute("COMMIT")
    except BaseException:
        db.execute("ROLLBACK")
        raise


def incremental_vacuum_mode(db: sqlite3.Connection, path: Path) -> None:
    """Put the journal in ``auto_vacuum=INCREMENTAL`` mode (outside any transaction).
    Before its first table (a new file) the pragma alone does it; a journal created
    without it is converted by one ``VACUUM``, logged. Done once per file: the mode is
    stored in the file, so the next open finds it set, even if that open is an older
    healer's."""
    if db.execute("PRAGMA auto_vacuum").fetchone()[0] == _INCREMENTAL:
        return
    db.execute("PRAGMA auto_vacuum=INCREMENTAL")
    if db.execute("PRAGMA auto_vacuum").fetchone()[0] == _INCREMENTAL:
        return  # no table yet: set for good
    log = structlog.get_logger("healer.journal")
    log.info("journal: converting to incremental vacuum (one VACUUM)", journal=str(path))
    db.execute("VACUUM")
    log.info("journal: converted to incremental vacuum", journal=str(path))
