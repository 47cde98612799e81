"""examples/odoo/postgres/initdb.d/10-roles.sh on a private PostgreSQL cluster (it
creates cluster-wide roles, so never on the shared server): the passwords from the
secrets work, healer and postgres_exporter can do their jobs and nothing more."""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import asyncpg
import pytest

from tests.support.env import free_port, require_service
from tests.support.stack import ALERTS, REPO, load_yaml

pytestmark = pytest.mark.postgres

SCRIPT = REPO / "examples" / "odoo" / "postgres" / "initdb.d" / "10-roles.sh"
PASSWORDS = {"odoo_db_password": "odoo-pw", "healer_db_password": "healer-pw",
             "exporter_db_password": "exporter-pw"}


def pg_bin() -> Path:
    found = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"),
                   key=lambda p: int(p.parts[-3]) if p.parts[-3].isdigit() else 0)
    if not found:
        require_service("PostgreSQL binaries", "no /usr/lib/postgresql/*/bin/initdb")
    if os.geteuid() != 0 or shutil.which("runuser") is None:
        require_service("a private PostgreSQL cluster", "needs root and runuser")
    return found[-1].parent


@pytest.fixture
def cluster() -> Iterator[tuple[Path, int]]:
    """A fresh cluster on 127.0.0.1:<port>: local trust (the init script runs as the
    image runs it), passwords (scram) over TCP. Stopped and removed afterwards."""
    bindir = pg_bin()
    root = Path(tempfile.mkdtemp(prefix="healer-roles-"))
    shutil.chown(root, "postgres")
    port = free_port()

    def as_postgres(*argv: str) -> None:
        subprocess.run(["runuser", "-u", "postgres", "--", *argv], check=True,
                       capture_output=True, timeout=120)

    try:
        as_postgres(str(bindir / "initdb"), "-D", str(root / "data"), "-U", "postgres",
                    "--auth-local=trust", "--auth-host=scram-sha-256")
        as_postgres(str(bindir / "pg_ctl"), "-D", str(root / "data"), "-l", str(root / "log"),
                    "-w", "-t", "60", "-o",
                    f"-p {port} -k {root} -c listen_addresses=127.0.0.1", "start")
        try:
            yield root, port
        finally:
            as_postgres(str(bindir / "pg_ctl"), "-D", str(root / "data"), "-m", "immediate",
                        "-w", "stop")
    finally:
        shutil.rmtree(root, ignore_errors=True)


def dsn(port: int, user: str, password: str, db: str = "odoo") -> str:
    return f"postgresql://{user}:{password}@127.0.0.1:{port}/{db}"


async def test_roles_script_gives_each_role_what_it_needs(cluster: tuple[Path, int],
                                                          tmp_path: Path) -> None:
    """After the script: odoo (not a superuser) owns the odoo database; once Odoo
    creates ir_cron, postgres_exporter runs the odoo_cron query but cannot read Odoo's
    other tables; healer sees Odoo's sessions with their queries and may terminate them."""
    root, port = cluster
    secrets = tmp_path / "secrets"
    secrets.mkdir()
    for name, value in PASSWORDS.items():
        (secrets / name).write_text(value + "\n")
    done = subprocess.run(["sh", str(SCRIPT)], capture_output=True, text=True, timeout=60,
                          env={**os.environ, "SECRETS_DIR": str(secrets), "PGHOST": str(root),
                               "PGPORT": str(port), "POSTGRES_USER": "postgres"})
    assert done.returncode == 0, done.stderr

    odoo = await asyncpg.connect(dsn(port, "odoo", "odoo-pw"))
    try:
        assert not await odoo.fetchval("SELECT rolsuper FROM pg_roles WHERE rolname = 'odoo'")
        # What Odoo does when it initialises the database (the columns the query reads).
        await odoo.execute("""
            CREATE TABLE ir_cron (id serial PRIMARY KEY, cron_name varchar,
                                  nextcall timestamp NOT NULL, active boolean);
            ALTER TABLE ir_cron ADD COLUMN priority int;
            INSERT INTO ir_cron (cron_name, nextcall, active)
                 VALUES ('Mail: Email Queue Manager',
                         (now() AT TIME ZONE 'UTC') - interval '1 hour', true);
            CREATE TABLE res_users (id serial PRIMARY KEY, login varchar, password varchar);
        """)
        exporter = await asyncpg.connect(dsn(port, "postgres_exporter", "exporter-pw"))
        try:
            query = load_yaml(ALERTS / "postgres_exporter" / "queries.yml")["odoo_cron"]["query"]
            (row,) = await exporter.fetch(query)
            assert row["cron_name"] == "Mail: Email Queue Manager"
            assert 3590 < row["delay_seconds"] < 3700
            with pytest.raises(asyncpg.InsufficientPrivilegeError):
                await exporter.fetch("SELECT password FROM res_users")
        finally:
            await exporter.close()

        healer = await asyncpg.connect(dsn(port, "healer", "healer-pw"))
        try:
            assert not await healer.fetchval(
                "SELECT rolsuper FROM pg_roles WHERE rolname = current_user")
            assert await healer.fetchval("SELECT count(*) FROM ir_cron") == 1
            sleeper = asyncio.ensure_future(odoo.execute("SELECT pg_sleep(60)"))
            pid = odoo.get_server_pid()
            for _ in range(100):
                query = await healer.fetchval(
                    "SELECT query FROM pg_stat_activity WHERE pid = $1 AND state = 'active'", pid)
                if query:
                    break
                await asyncio.sleep(0.05)
            assert query == "SELECT pg_sleep(60)"
            assert await healer.fetchval("SELECT pg_terminate_backend($1)", pid) is True
            with pytest.raises((asyncpg.PostgresError, asyncpg.ConnectionDoesNotExistError)):
                await asyncio.wait_for(sleeper, 10)
        finally:
            await healer.close()
    finally:
        odoo.terminate()
