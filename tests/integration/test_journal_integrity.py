"""A journal file that cannot be used: ``healer serve`` exits with one line naming it, and
``healer journal check`` says what is wrong (real processes, real damaged SQLite files).

Each damage is made on a real journal written by healer itself: garbage over some of its
pages, a truncated copy, a file that is not SQLite, a directory in its place, and a file
healer's user may not open (another user's, mode 0600, with healer run as root without
the capability to override file permissions, as a non-root healer user would be).
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import sqlite3
import subprocess
import sys
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest
import yaml

from healer.api import Alert
from healer.store import HealPlan, SqliteStore
from tests.support import HealerFactory
from tests.support.inprocess.payloads import alert_payload

NOBODY = 65534
# Run as root but bound by file permissions, like any unprivileged user.
NO_DAC = [
    "setpriv",
    "--bounding-set=-dac_override,-dac_read_search",
    "--inh-caps=-dac_override,-dac_read_search",
]
PLAN = HealPlan("poke", "test.noop", {}, {}, False)


def make_journal(path: Path, alerts: int = 300) -> None:
    """A real journal with some history (a few hundred KB, many pages)."""

    async def fill() -> None:
        journal = await SqliteStore.open(path)
        try:
            for i in range(alerts):
                await journal.ingest(
                    [
                        Alert(
                            fingerprint=f"fp{i}",
                            status="firing",
                            labels={"alertname": "X" * 200},
                            annotations={"summary": "y" * 500},
                            starts_at=datetime(2026, 1, 1, tzinfo=UTC),
                        )
                    ],
                    lambda _: PLAN,
                )
        finally:
            await journal.close()

    asyncio.run(fill())


def garbage_pages(path: Path) -> None:
    make_journal(path)
    size = path.stat().st_size
    with path.open("r+b") as f:
        for offset in range(3 * 4096, size, 4 * 4096):  # every 4th page from the 4th on
            f.seek(offset + 100)
            f.write(os.urandom(2000))


def truncated(path: Path) -> None:
    make_journal(path)
    os.truncate(path, path.stat().st_size // 2)


def not_sqlite(path: Path) -> None:
    path.write_text("these are not the bytes of a database\n" * 200)


def a_directory(path: Path) -> None:
    path.mkdir()


def unreadable(path: Path) -> None:
    make_journal(path)
    os.chown(path, NOBODY, NOBODY)
    path.chmod(0o600)


DAMAGE: dict[str, Callable[[Path], None]] = {
    "garbage-pages": garbage_pages,
    "truncated": truncated,
    "not-sqlite": not_sqlite,
    "directory": a_directory,
    "permission-denied": unreadable,
}


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    return tmp_path


def healer(*argv: str, cwd: Path, unprivileged: bool = False) -> subprocess.CompletedProcess[str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("HEALER_WEBHOOK_TOKEN", "HEALER_ADMIN_TOKEN", "HEALER_CONFIG")
    }
    prefix = NO_DAC if unprivileged else []
    return subprocess.run(
        [*prefix, sys.executable, "-m", "healer", *argv],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
        cwd=cwd,
        stdin=subprocess.DEVNULL,
    )


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def another_apps_database(path: Path) -> None:
    with sqlite3.connect(path) as db:
        db.execute("CREATE TABLE customers (id INTEGER PRIMARY KEY, name TEXT)")
    db.close()


DAMAGE["another-apps-database"] = another_apps_database


@pytest.mark.parametrize("damage", list(DAMAGE))
def test_serve_exits_with_one_line_naming_a_bad_journal(workdir: Path, damage: str) -> None:
    """For every kind of unusable journal, ``healer serve`` exits 1 before listening with
    one line naming the file and suggesting ``healer journal check FILE``: no
    traceback, and the damaged file is left as it was for the operator."""
    journal = workdir / "journal.db"
    DAMAGE[damage](journal)
    config = workdir / "healer.yml"
    config.write_text(yaml.safe_dump({"journal": str(journal), "listen": "127.0.0.1:9"}))
    before = journal.stat().st_mtime_ns, journal.is_dir()
    proc = healer(
        "serve", "--config", str(config), cwd=workdir, unprivileged=damage == "permission-denied"
    )
    assert proc.returncode == 1, (proc.stdout, proc.stderr)
    output = proc.stdout + proc.stderr
    assert "Traceback" not in output, output
    [line] = [ln for ln in output.splitlines() if ln.startswith("error:")]
    assert f"journal {journal}: cannot open: " in line
    assert f"healer journal check {journal}" in line
    assert (journal.stat().st_mtime_ns, journal.is_dir()) == before


@pytest.mark.parametrize("damage", [d for d in DAMAGE if d != "permission-denied"])
def test_journal_check_says_what_is_wrong(workdir: Path, damage: str) -> None:
    """``healer journal check FILE`` exits 1 on every kind of damaged journal, naming the
    problem; it only reads (the file is unchanged)."""
    journal = workdir / "journal.db"
    DAMAGE[damage](journal)
    before = journal.is_dir() or digest(journal)
    proc = healer("journal", "check", str(journal), cwd=workdir)
    assert proc.returncode == 1, proc.stdout
    assert proc.stderr.startswith(f"{journal}: NOT OK")
    assert "Traceback" not in proc.stderr
    assert (journal.is_dir() or digest(journal)) == before


def test_journal_check_passes_a_sound_journal_read_only(workdir: Path) -> None:
    """A journal healer wrote passes with exit 0, and checking changes no byte of it
    (SQLite may leave its empty -wal/-shm companions: a WAL reader needs them)."""
    journal = workdir / "journal.db"
    make_journal(journal, alerts=20)
    before = digest(journal)
    proc = healer("journal", "check", str(journal), cwd=workdir)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith(f"{journal}: ok")
    assert digest(journal) == before


@pytest.mark.parametrize("content", ["missing", "empty-sqlite", "other-sqlite"])
def test_journal_check_refuses_what_is_not_a_healer_journal(workdir: Path, content: str) -> None:
    """No file, an empty file and another application's SQLite database are not
    journals: exit 1 with the reason (serve refuses the last one too, above, rather
    than write its tables into someone else's database)."""
    journal = workdir / "journal.db"
    if content == "empty-sqlite":
        journal.touch()
    elif content == "other-sqlite":
        another_apps_database(journal)
    proc = healer("journal", "check", str(journal), cwd=workdir)
    assert proc.returncode == 1
    assert {
        "missing": "no such file",
        "empty-sqlite": "not a healer journal",
        "other-sqlite": "not a healer journal",
    }[content] in proc.stderr


def test_journal_check_is_listed_in_help(workdir: Path) -> None:
    """``healer --help`` lists the journal command; ``healer journal --help`` its check."""
    assert "journal" in healer("--help", cwd=workdir).stdout
    assert "check" in healer("journal", "--help", cwd=workdir).stdout


def test_a_running_healer_whose_journal_is_deleted_answers_503_and_logs_it_once(
    tmp_path: Path, healer_process: HealerFactory
) -> None:
    """``rm journal.db*`` under a running ``healer serve``: every later webhook post is
    503 (Alertmanager keeps retrying; nothing is acknowledged that the next start would
    not find), readiness names the file, and the log says so in one line, not one per
    request."""
    journal = tmp_path / "journal.db"
    config = tmp_path / "healer.yml"
    config.write_text(
        yaml.safe_dump(
            {
                "journal": str(journal),
                "prometheus": {"url": "http://127.0.0.1:9", "timeout": "0.2s"},
            }
        )
    )
    proc = healer_process.start(config, env={"HEALER_WEBHOOK_TOKEN": "", "HEALER_ADMIN_TOKEN": ""})
    body = alert_payload({"alertname": "Nothing"}, fingerprint="abc123")
    with httpx.Client(base_url=proc.url, timeout=10) as client:
        assert client.post("/api/v1/alerts", json=body).status_code == 200
        for suffix in ("", "-wal", "-shm"):
            Path(f"{journal}{suffix}").unlink(missing_ok=True)
        codes = [
            client.post(
                "/api/v1/alerts",
                json=alert_payload({"alertname": "Nothing"}, fingerprint=f"new{i}"),
            ).status_code
            for i in range(5)
        ]
        assert codes == [503] * 5
        check = client.get("/health/ready").json()["checks"]["journal"]
        assert check["status"] == "down" and f"{journal} was deleted" in check["error"]
    proc.stop()
    log = proc.log_path.read_text()
    assert log.count("journal broken") == 1, log
    assert "refused until healer restarts" in log
    assert "Traceback" not in log
