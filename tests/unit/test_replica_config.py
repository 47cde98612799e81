"""Replica identity and lease settings: the ``replica:`` config section and its checks,
``--replica-id`` (refused when not printable or too long), /health/ready naming the
replica, and a version-2 journal (before replicas) migrated in place: its rows kept,
their timeline entries without a replica, their heals taken over at the first start.
"""

from __future__ import annotations

import socket
import sqlite3
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from healer.errors import ConfigError
from healer.plugins import HandlerRegistry
from healer.store import SqliteStore
from healer.store.sqlite.schema import MIGRATIONS
from tests.support.inprocess.inproc import noop_config, running_healer
from tests.unit.test_config import errors_of


def test_replica_defaults_to_host_and_pid_with_15s_leases() -> None:
    """No ``replica:`` section: id ``<host>:<pid>``, leases of 15 s renewed every 5 s."""
    from healer.config import parse_config

    config = parse_config({})
    assert (config.replica.lease_ttl, config.replica.renew_every) == (15.0, 5.0)
    replica = config.replica.replica()
    assert replica.id == f"{socket.gethostname()}:{__import__('os').getpid()}"
    assert config.with_replica_id("healer-2").replica.replica().id == "healer-2"


@pytest.mark.parametrize(
    ("section", "where"),
    [
        ({"id": ""}, "replica.id"),
        ({"id": "x" * 101}, "replica.id"),
        ({"id": "tab\there"}, "replica.id"),
        ({"lease_ttl": "0.5s"}, "replica.lease_ttl"),
        ({"lease_ttl": "2h"}, "replica.lease_ttl"),
        ({"renew_every": "5s", "lease_ttl": "10s"}, "replica"),
        ({"unknown": 1}, "replica.unknown"),
    ],
)
def test_bad_replica_settings_are_config_errors(section: dict[str, Any], where: str) -> None:
    """An id that is empty, over 100 characters or not printable, a lease out of range,
    a renewal not under half the lease, an unknown key: each a config error there."""
    assert where in [loc for loc, _ in errors_of({"replica": section})]


def test_replica_id_flag_is_checked(tmp_path: Path) -> None:
    """``healer serve --replica-id`` with a non-printable id exits 2, naming the flag,
    before anything is opened."""
    config = tmp_path / "healer.yaml"
    config.write_text(f"journal: {tmp_path / 'j.db'}\n")
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "healer",
            "serve",
            "--config",
            str(config),
            "--replica-id",
            "bad\nid",
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 2, proc.stderr
    assert "error: --replica-id:" in proc.stderr
    assert not (tmp_path / "j.db").exists()


async def test_health_ready_names_the_replica(tmp_path: Path, handlers: HandlerRegistry) -> None:
    """/health/ready answers with this healer's replica id."""
    config = {**noop_config(tmp_path / "j.db"), "replica": {"id": "healer-east-1"}}
    async with running_healer(config, handlers=handlers) as h:
        ready = await h.client.get("/health/ready")
    assert ready.json()["replica"] == "healer-east-1"


async def test_a_version_2_journal_migrates_and_its_heals_are_taken_over(tmp_path: Path) -> None:
    """A journal written before replicas (schema 2) opens: its heal and timeline are
    kept (old entries name no replica, the heal no owner), and the first take_over
    claims the unleased unfinished heal."""
    path = tmp_path / "v2.db"
    with sqlite3.connect(path) as db:
        for version, _, statements in MIGRATIONS:
            if version <= 2:
                for sql in statements(db) if callable(statements) else statements:
                    db.execute(sql)
        now = time.time()
        db.execute(
            "INSERT INTO heals (id, created_at, updated_at, source, handler, labels,"
            " annotations, params, verify, dry_run, phase) VALUES ('old', ?, ?,"
            " 'manual', 'test.noop', '{}', '{}', '{}', '{}', 0, 'checking')",
            (now, now),
        )
        db.execute(
            "INSERT INTO events (heal_id, seq, at, phase, kind, data) VALUES"
            " ('old', 1, ?, 'pending', 'manual_trigger', '{}')",
            (now,),
        )
        db.execute("PRAGMA user_version=2")
    db.close()
    store = await SqliteStore.open(path)
    try:
        heal = await store.get_heal("old") or {}
        assert (heal["owner"], [e["replica"] for e in heal["timeline"]]) == (None, [None])
        [taken] = await store.take_over(time.time(), 10)
        assert (taken["id"], taken["phase"], taken["taken_from"]) == ("old", "checking", None)
        await store.add_event("old", "checking", "resumed", {}, fenced=True)
        timeline = (await store.get_heal("old") or {})["timeline"]
        assert [e["replica"] for e in timeline] == [None, store.replica.id]
    finally:
        await store.close()


def test_config_error_type_is_what_the_cli_reports() -> None:
    """A bad ``replica:`` section raises ConfigError (the CLI's exit 1 path)."""
    from healer.config import parse_config

    with pytest.raises(ConfigError):
        parse_config({"replica": {"renew_every": "9s", "lease_ttl": "10s"}})
