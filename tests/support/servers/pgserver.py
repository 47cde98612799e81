"""A private, throw-away PostgreSQL server, for tests whose fault is server-wide.

    with private_postgres(max_connections=20) as server:
        dsn = server.dsn                        # postgresql://postgres@127.0.0.1:<port>/postgres
        server.stop(); server.start()           # an outage mid-test, same port and data
    with private_postgres(superuser_password="pw") as server:
        server.dsn                              # postgresql://postgres:pw@127.0.0.1:<port>/postgres
        server.socket_dir                       # PGHOST for local (trust) connections: psql

"Too many connections" is a property of the whole server: filling 80% of the
shared test server's connections would break every other test running on it.
This runs Debian's own ``initdb``/``pg_ctl`` (the binaries of the installed
``postgresql``) in a temporary directory, on a free loopback port, trust auth,
and removes it on exit, even after a failure. Start-up takes ~2 s.

With ``superuser_password``, connections over TCP need a password (scram-sha-256), as
in production, and only local (Unix socket) connections are trusted, as the postgres
image has it for its init scripts.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from tests.support.env import free_port, require_service


def pg_bin() -> Path | None:
    """The newest ``/usr/lib/postgresql/<version>/bin`` with ``initdb`` in it."""
    found = sorted(
        Path("/usr/lib/postgresql").glob("*/bin/initdb"),
        key=lambda p: [int(x) for x in p.parts[-3].split(".") if x.isdigit()],
    )
    return found[-1].parent if found else None


@dataclass(frozen=True)
class PrivatePostgres:
    root: Path
    port: int
    bindir: Path
    password: str | None = None
    flags: str = ""  # the server's options (port, socket dir, settings) as started

    def stop(self) -> None:
        """Stop the server mid-test (``pg_ctl stop -m immediate``: as a crash or an outage
        would); :meth:`start` brings it back on the same port and data."""
        subprocess.run(
            _as_postgres(
                [
                    str(self.bindir / "pg_ctl"),
                    "-D",
                    str(self.root / "data"),
                    "-m",
                    "immediate",
                    "-w",
                    "-t",
                    "30",
                    "stop",
                ]
            ),
            check=True,
            capture_output=True,
            timeout=60,
        )

    def start(self) -> None:
        subprocess.run(
            _as_postgres(
                [
                    str(self.bindir / "pg_ctl"),
                    "-D",
                    str(self.root / "data"),
                    "-l",
                    str(self.root / "server.log"),
                    "-w",
                    "-t",
                    "30",
                    "-o",
                    self.flags,
                    "start",
                ]
            ),
            check=True,
            capture_output=True,
            timeout=60,
        )

    @property
    def dsn(self) -> str:
        auth = f"postgres:{self.password}" if self.password else "postgres"
        return f"postgresql://{auth}@127.0.0.1:{self.port}/postgres"

    @property
    def socket_dir(self) -> Path:
        """The Unix socket's directory (``PGHOST``); local connections are trusted."""
        return self.root


def _as_postgres(argv: list[str]) -> list[str]:
    # initdb refuses to run as root: run it (and the server) as the postgres OS user.
    return ["runuser", "-u", "postgres", "--", *argv] if os.geteuid() == 0 else argv


@contextlib.contextmanager
def private_postgres(
    *,
    max_connections: int = 20,
    settings: dict[str, str] | None = None,
    superuser_password: str | None = None,
) -> Iterator[PrivatePostgres]:
    binaries = pg_bin()
    if binaries is None:
        require_service(
            "PostgreSQL binaries",
            "no /usr/lib/postgresql/*/bin/initdb (apt-get install postgresql)",
        )
    if os.geteuid() == 0 and shutil.which("runuser") is None:
        require_service("a private PostgreSQL", "as root, initdb needs runuser")
    # Not pytest's tmp_path: the postgres OS user must be able to reach the directory.
    root = Path(tempfile.mkdtemp(prefix="healer-pg-"))
    if os.geteuid() == 0:
        shutil.chown(root, "postgres", "postgres")
    data, log = root / "data", root / "server.log"
    options = {
        "listen_addresses": "127.0.0.1",
        "max_connections": str(max_connections),
        "fsync": "off",
        **(settings or {}),
    }
    auth = ["-A", "trust"]
    if superuser_password is not None:
        password_file = root / "superuser-password"
        password_file.write_text(superuser_password + "\n")
        if os.geteuid() == 0:
            shutil.chown(password_file, "postgres", "postgres")
        auth = ["--auth-local=trust", "--auth-host=scram-sha-256", f"--pwfile={password_file}"]
    started = False
    try:
        subprocess.run(
            _as_postgres(
                [str(binaries / "initdb"), "-D", str(data), *auth, "-U", "postgres", "--no-sync"]
            ),
            check=True,
            capture_output=True,
            timeout=60,
        )
        for attempt in range(3):
            port = free_port()
            flags = " ".join(
                [f"-p {port}", f"-k {root}", *(f"-c {k}={v}" for k, v in options.items())]
            )
            result = subprocess.run(
                _as_postgres(
                    [
                        str(binaries / "pg_ctl"),
                        "-D",
                        str(data),
                        "-l",
                        str(log),
                        "-w",
                        "-t",
                        "30",
                        "-o",
                        flags,
                        "start",
                    ]
                ),
                capture_output=True,
                timeout=60,
            )
            if result.returncode == 0:
                started = True
                break
            if attempt == 2 or "could not bind" not in log.read_text(errors="replace"):
                raise RuntimeError(
                    f"private PostgreSQL did not start:\n{log.read_text(errors='replace')[-2000:]}"
                )
        yield PrivatePostgres(
            root=root, port=port, bindir=binaries, password=superuser_password, flags=flags
        )
    finally:
        try:
            if started:
                _stop(binaries, data)
        finally:
            shutil.rmtree(root, ignore_errors=True)


def _stop(binaries: Path, data: Path) -> None:
    """``pg_ctl stop -m immediate``; should that not finish in 20 s, SIGKILL the postmaster
    and every process it started (a test must never leave a server behind)."""
    pid_file = data / "postmaster.pid"
    try:
        postmaster = int(pid_file.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        postmaster = None
    with contextlib.suppress(subprocess.TimeoutExpired):
        subprocess.run(
            _as_postgres(
                [
                    str(binaries / "pg_ctl"),
                    "-D",
                    str(data),
                    "-m",
                    "immediate",
                    "-w",
                    "-t",
                    "20",
                    "stop",
                ]
            ),
            capture_output=True,
            timeout=30,
        )
    if postmaster is None or not _alive(postmaster):
        return
    for pid in [*_children(postmaster), postmaster]:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def _children(parent: int) -> list[int]:
    pids = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError, ValueError, IndexError):
            # Field 4 is the parent pid; the command (field 2) may contain spaces.
            if int(stat.read_text().rsplit(")", 1)[1].split()[1]) == parent:
                pids.append(int(stat.parent.name))
    return pids
