"""The shipped database roles (examples/odoo/postgres/initdb.d/10-roles.sh) on a private
PostgreSQL cluster, and Odoo databases in it made as production makes them.

    with shipped_cluster() as cluster:                  # or the session fixture shipped_pg
        async with odoo_database(cluster, 18) as db:
            odoo = await asyncpg.connect(db.odoo_dsn)    # the Odoo server's role (owner)
            job = await insert_job(odoo, 18, "Mail: Email Queue Manager", nextcall_in=-60)
            healer = await asyncpg.connect(db.healer_dsn)
            exporter = await asyncpg.connect(db.exporter_dsn)
            admin = await asyncpg.connect(db.superuser_dsn)

The roles are cluster-wide, so never on the shared test server: ``shipped_cluster``
starts a cluster of its own (:func:`tests.support.servers.pgserver.private_postgres`, scram
passwords over TCP, trusted local socket as the postgres image's init scripts have it)
and runs the script there once, with the passwords in :data:`PASSWORDS` as its compose
secrets. On exit, even after a failure, the cluster is stopped and removed.

``odoo_database`` makes a fresh ``CREATE DATABASE <unique> TEMPLATE odoo OWNER odoo``:
the template is the database the script made, so the copy carries its ``monitoring``
schema and event trigger. Then the ``odoo`` role creates Odoo ``version``'s cron tables
with :func:`tests.support.scenarios.odoo.create_ir_cron` (``tables=False``: an empty database), so
the grants come from the event trigger, as in production. The database is dropped
``WITH (FORCE)`` on exit, even after a failure. Tests must not connect to the ``odoo``
database itself: a template with sessions cannot be copied.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import tempfile
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import asyncpg

from tests.support.inprocess.stack import REPO
from tests.support.scenarios.odoo import create_ir_cron
from tests.support.servers.pgserver import PrivatePostgres, private_postgres
from tests.support.servers.postgres import _as_admin

ROLES_SCRIPT = REPO / "examples" / "odoo" / "postgres" / "initdb.d" / "10-roles.sh"
SUPERUSER_PASSWORD = "postgres-pw"
# role -> password, as the compose secrets give them to the script
PASSWORDS = {"odoo": "odoo-pw", "healer": "healer-pw", "postgres_exporter": "exporter-pw"}
_SECRETS = {
    "odoo_db_password": "odoo",
    "healer_db_password": "healer",
    "exporter_db_password": "postgres_exporter",
}


@dataclass(frozen=True)
class ShippedCluster:
    """A private cluster after the roles script: ``odoo``, ``healer``,
    ``postgres_exporter`` (passwords in :data:`PASSWORDS`), the ``odoo`` database and
    the superuser ``postgres`` (:data:`SUPERUSER_PASSWORD`)."""

    server: PrivatePostgres

    def dsn(self, role: str, database: str = "postgres") -> str:
        """``role``'s DSN with its password, over TCP (scram)."""
        password = SUPERUSER_PASSWORD if role == "postgres" else PASSWORDS[role]
        return f"postgresql://{role}:{password}@127.0.0.1:{self.server.port}/{database}"


@dataclass(frozen=True)
class OdooDatabase:
    """One Odoo database of a :class:`ShippedCluster`, with each role's DSN to it."""

    name: str
    version: int
    odoo_dsn: str  # the Odoo server's sessions: owner of the database and its tables
    healer_dsn: str
    exporter_dsn: str  # the postgres_exporter role
    superuser_dsn: str  # postgres


def run_roles_script(server: PrivatePostgres) -> None:
    """Run the shipped script against ``server`` as the postgres image runs it: psql over
    the local socket as the superuser, passwords from a secrets directory."""
    with tempfile.TemporaryDirectory(prefix="healer-secrets-") as secrets:
        for secret, role in _SECRETS.items():
            (Path(secrets) / secret).write_text(PASSWORDS[role] + "\n")
        env = {
            **os.environ,
            "SECRETS_DIR": secrets,
            "PGHOST": str(server.socket_dir),
            "PGPORT": str(server.port),
            "POSTGRES_USER": "postgres",
            "PATH": f"{server.bindir}{os.pathsep}{os.environ.get('PATH', '')}",
        }
        done = subprocess.run(
            ["sh", str(ROLES_SCRIPT)], capture_output=True, text=True, timeout=60, env=env
        )
    if done.returncode != 0:
        raise RuntimeError(f"{ROLES_SCRIPT.name} failed ({done.returncode}):\n{done.stderr}")


@contextlib.contextmanager
def shipped_cluster() -> Iterator[ShippedCluster]:
    """A private cluster with the shipped roles; stopped and removed on exit."""
    with private_postgres(superuser_password=SUPERUSER_PASSWORD) as server:
        run_roles_script(server)
        yield ShippedCluster(server)


@contextlib.asynccontextmanager
async def odoo_database(
    cluster: ShippedCluster, version: int, *, tables: bool = True, prefix: str = "odoo_test"
) -> AsyncIterator[OdooDatabase]:
    """A new database copied from the ``odoo`` template, owned by ``odoo``, with Odoo
    ``version``'s cron tables created by the ``odoo`` role (unless ``tables=False``)."""
    name = f"{prefix}_{version}_{uuid.uuid4().hex[:10]}"
    admin_dsn = cluster.dsn("postgres")
    await _as_admin(admin_dsn, (f'CREATE DATABASE "{name}" TEMPLATE odoo OWNER odoo',))
    try:
        db = OdooDatabase(
            name=name,
            version=version,
            odoo_dsn=cluster.dsn("odoo", name),
            healer_dsn=cluster.dsn("healer", name),
            exporter_dsn=cluster.dsn("postgres_exporter", name),
            superuser_dsn=cluster.dsn("postgres", name),
        )
        if tables:
            odoo = await asyncpg.connect(db.odoo_dsn, timeout=10)
            try:
                await create_ir_cron(odoo, version)
            finally:
                await odoo.close()
        yield db
    finally:
        await _as_admin(admin_dsn, (f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)',))
