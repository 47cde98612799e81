"""A journal file that goes away or goes bad while healer runs: the journal is refused
until restart, readiness is down naming the file, every endpoint answers 503 (never a
500, never a 200 for what is not durable), and it is logged once. Real SQLite files
damaged from outside, the real app in-process."""

from __future__ import annotations

import os
import shutil
import sqlite3
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from structlog.testing import capture_logs

from healer.plugins import HandlerRegistry
from tests.support.inprocess.inproc import InProcessHealer, noop_config, running_healer
from tests.support.inprocess.payloads import alert_payload


def _rm_all(path: Path) -> str:
    for suffix in ("", "-wal", "-shm"):
        Path(f"{path}{suffix}").unlink(missing_ok=True)
    return "was deleted"


def _rm_wal(path: Path) -> str:
    Path(f"{path}-wal").unlink()
    return "write-ahead log file"


def _restore_backup(path: Path) -> str:
    """An operator restores yesterday's copy over the live file (a new inode)."""
    backup = path.with_name("backup.db")
    shutil.copyfile(path, backup)
    os.replace(backup, path)
    return "was replaced by another file"


def _move_directory(path: Path) -> str:
    path.parent.rename(path.parent.with_name("state.moved"))
    return "was deleted"


def _new_empty_file(path: Path) -> str:
    """rm, then something (a second healer, a careless script) creates the path again."""
    _rm_all(path)
    sqlite3.connect(path).close()
    return "was replaced by another file"


CHANGES: dict[str, Callable[[Path], str]] = {
    "rm-journal.db*": _rm_all,
    "rm-wal-only": _rm_wal,
    "restored-from-backup": _restore_backup,
    "directory-moved": _move_directory,
    "recreated-empty": _new_empty_file,
}


async def _assert_refused(h: InProcessHealer, journal: Path, reason: str) -> dict[str, Any]:
    post = await h.client.post(
        "/api/v1/alerts",
        json=alert_payload(
            {"alertname": "Poke", "target": "after"}, fingerprint="00000000000000ff"
        ),
    )
    assert post.status_code == 503, post.text
    ready = await h.client.get("/health/ready")
    assert ready.status_code == 503
    check = ready.json()["checks"]["journal"]
    assert check["status"] == "down"
    assert str(journal) in check["error"] and reason in check["error"], check
    assert "refused until healer restarts" in check["error"]
    heals = await h.client.get("/api/v1/heals", headers=h.admin_headers)
    assert heals.status_code == 503, heals.text
    assert "journal unavailable" in heals.json()["error"]
    return dict(check)


@pytest.mark.parametrize("change", list(CHANGES))
async def test_a_journal_file_deleted_or_replaced_is_refused_until_restart(
    tmp_path: Path, handlers: HandlerRegistry, change: str
) -> None:
    """Once the journal's file (or its WAL) is deleted or replaced under a running healer,
    webhooks get 503 (Alertmanager keeps them), readiness is down with the file and the
    reason, history reads are 503, nothing is written to whatever now sits at the path,
    and it is logged once however many requests follow."""
    journal = tmp_path / "state" / "journal.db"
    async with running_healer(noop_config(journal), handlers=handlers) as h:
        first = await h.client.post(
            "/api/v1/alerts", json=alert_payload({"alertname": "Poke", "target": "before"})
        )
        assert first.status_code == 200
        await h.wait_for_outcome(first.json()["started"][0]["heal_id"])
        with capture_logs() as logs:
            reason = CHANGES[change](journal)
            now_there = (
                {p.name: p.read_bytes() for p in journal.parent.glob("*")}
                if journal.parent.exists()
                else {}
            )
            for _ in range(3):
                await _assert_refused(h, journal, reason)
            # Nothing healer did since went into the file now at the path.
            assert now_there == (
                {p.name: p.read_bytes() for p in journal.parent.glob("*")}
                if journal.parent.exists()
                else {}
            )
    broken = [e for e in logs if e["event"] == "journal broken"]
    assert len(broken) == 1, logs
    assert broken[0]["log_level"] == "error" and reason in broken[0]["error"]
    assert not [
        e for e in logs if e["event"] == "journal unavailable; asking Alertmanager to retry"
    ]


def _corrupt_table(journal: Path, table: str) -> None:
    """Checkpoint everything into the main file, overwrite ``table``'s root page with
    garbage, then commit a write from another connection: healer's connection drops its
    page cache and reads the damaged page from disk, as after a real disk fault."""
    with sqlite3.connect(journal) as db:
        db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        page_size = db.execute("PRAGMA page_size").fetchone()[0]
        root = db.execute("SELECT rootpage FROM sqlite_master WHERE name=?", (table,)).fetchone()[0]
    db.close()
    with journal.open("r+b") as f:
        f.seek((root - 1) * page_size)
        f.write(b"\xa5" * page_size)
    with sqlite3.connect(journal) as db:
        db.execute("INSERT INTO probe (id, at) VALUES (1, 0) ON CONFLICT (id) DO UPDATE SET at = 0")
    db.close()


async def test_corruption_found_while_running_is_reported_not_a_500(
    tmp_path: Path, handlers: HandlerRegistry
) -> None:
    """SQLITE_CORRUPT from a read (a history page) makes the journal refused: GET
    /api/v1/heals answers 503 saying the file is corrupt and how to check it, readiness
    is down, and webhooks get 503, not 500 and not 200."""
    journal = tmp_path / "journal.db"
    async with running_healer(noop_config(journal), handlers=handlers) as h:
        first = await h.client.post(
            "/api/v1/alerts", json=alert_payload({"alertname": "Poke", "target": "before"})
        )
        await h.wait_for_outcome(first.json()["started"][0]["heal_id"])
        _corrupt_table(journal, "heals")
        with capture_logs() as logs:
            heals = await h.client.get("/api/v1/heals", headers=h.admin_headers)
            assert heals.status_code == 503, heals.text
            assert "corrupt" in heals.json()["error"]
            assert f"healer journal check {journal}" in heals.json()["error"]
            check = await _assert_refused(h, journal, "corrupt")
            assert "healer journal check" in check["error"]
    assert len([e for e in logs if e["event"] == "journal broken"]) == 1
