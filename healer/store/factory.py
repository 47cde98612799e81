"""Which store the configuration names, opened: ``journal:`` a SQLite file path
(:class:`SqliteStore`) or PostgreSQL (:class:`PostgresStore`, DSN from the resolved
secrets). Only the app factory and the CLI call this."""

from __future__ import annotations

from pathlib import Path

from healer.config import HealerConfig, PostgresJournal, Secrets
from healer.replica import Replica
from healer.store.contract import Store
from healer.store.postgres.store import PostgresOptions, PostgresStore
from healer.store.sqlite.store import SqliteStore

JournalTarget = Path | PostgresOptions


def journal_target(config: HealerConfig, secrets: Secrets) -> JournalTarget:
    journal = config.journal
    if not isinstance(journal, PostgresJournal):
        return journal
    if secrets.journal_dsn is None:  # resolve_secrets always sets it for PostgreSQL
        raise ValueError("the PostgreSQL journal's DSN was not resolved")
    return PostgresOptions(
        secrets.journal_dsn,
        pool_size=journal.pool_size,
        connect_timeout=journal.connect_timeout,
        statement_timeout=journal.statement_timeout,
    )


def describe(target: JournalTarget) -> str:
    """The store as logs name it (a PostgreSQL password redacted)."""
    return str(target) if isinstance(target, Path) else target.name


async def open_store(target: JournalTarget, replica: Replica | None = None) -> Store:
    """The store, opened as ``replica`` (leases and timeline entries name it)."""
    if isinstance(target, Path):
        return await SqliteStore.open(target, replica)
    return await PostgresStore.open(target, replica)


def check_can_open(target: JournalTarget) -> None:
    """Open (creating or migrating) and close once, before serving; JournalUnavailable
    names the store in one line."""
    if isinstance(target, Path):
        SqliteStore.check_can_open(target)
    else:
        PostgresStore.check_can_open(target)
