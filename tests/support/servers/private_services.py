"""Private daemons that a fault test may stop, kill and restart: a dockerd and a PostgreSQL
of its own, so that the machine's shared engine and server keep running for everyone else.

    with private_dockerd() as engine:            # own socket, data, exec root, containerd
        client = engine.client()                 # docker.DockerClient on engine.base_url
        engine.kill()                            # SIGKILL mid-whatever
        engine.start()                           # same state directories: containers survive

    with private_postgres() as pg:               # initdb + pg_ctl as the postgres OS user
        pg.dsn(password="s3cret")                # postgresql://postgres:s3cret@127.0.0.1:<port>/postgres
        pg.stop(); pg.start()

Both need root (a dockerd; ``runuser -u postgres``): elsewhere they skip, and fail under
CI=true. Clean-up runs even when the test fails: containers removed, daemons stopped
(killed if they do not stop), every process still naming the private directory killed
by pid, mounts under it unmounted, the directory removed.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import docker
import docker.errors

from tests.support.env import free_port, require_service, stop_process, wait_until

_DOCKERD = "dockerd"


def _is_root() -> bool:
    return os.geteuid() == 0


def _pids_mentioning(text: str) -> list[int]:
    """Processes whose command line contains ``text`` (a private directory: ours)."""
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if text in cmdline:
            pids.append(int(entry.name))
    return pids


def _unmount_under(root: Path) -> None:
    """Unmount (lazily, deepest first) whatever a daemon mounted under ``root``."""
    prefix = str(root)
    mounts = []
    with contextlib.suppress(OSError):
        for line in Path("/proc/self/mounts").read_text().splitlines():
            point = line.split()[1].replace("\\040", " ")
            if point == prefix or point.startswith(prefix + "/"):
                mounts.append(point)
    for point in sorted(mounts, key=len, reverse=True):
        subprocess.run(["umount", "-l", point], check=False, capture_output=True)


def _ping(sock: Path) -> bool:
    """``GET /_ping`` over the engine's socket, closed whatever happens. (A DockerClient
    that fails in its constructor, and httpcore when a Unix connect times out while the
    engine starts, both leak the socket.)"""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as conn:
        conn.settimeout(5)
        conn.connect(str(sock))
        conn.sendall(b"GET /_ping HTTP/1.0\r\nHost: docker\r\n\r\n")
        answer = b""
        while chunk := conn.recv(4096):
            answer += chunk
    return answer.startswith(b"HTTP/1.") and b" 200 " in answer.split(b"\r\n", 1)[0]


_CONTAINERD_CONFIG = """\
version = 2
root = "{root}/containerd/root"
state = "{root}/containerd/state"
disabled_plugins = ["io.containerd.grpc.v1.cri"]

[grpc]
  address = "{root}/containerd/containerd.sock"

[debug]
  address = ""

[metrics]
  address = ""
"""


class PrivateDockerd:
    """A second Docker engine in a private directory: host networking only, no bridge, no
    iptables, ``vfs`` storage (nothing mounted per layer).

    Its containerd runs as a separate process, as under systemd: killing dockerd leaves
    containerd and the containers' shims running, and a restarted dockerd reconnects to
    them. (A containerd managed by dockerd dies with it, and its unreaped pid makes the
    next dockerd wait for a containerd that will never answer.)"""

    def __init__(self, root: Path, extra_args: tuple[str, ...] = ()) -> None:
        self.root = root
        self.extra_args = extra_args  # e.g. a TLS listener: --host=tcp://... --tlsverify ...
        self.sock = root / "docker.sock"
        self.log_path = root / "dockerd.log"
        self.containerd_sock = root / "containerd" / "containerd.sock"
        self._proc: subprocess.Popen[bytes] | None = None
        self._containerd: subprocess.Popen[bytes] | None = None

    def start_containerd(self, timeout: float = 30.0) -> None:
        config = self.root / "containerd.toml"
        config.write_text(_CONTAINERD_CONFIG.format(root=self.root))
        (self.root / "containerd").mkdir(exist_ok=True)
        with (self.root / "containerd.log").open("ab") as log:
            self._containerd = subprocess.Popen(
                ["containerd", "--config", str(config)],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        proc = self._containerd

        def listening() -> bool:
            if proc.poll() is not None:
                raise RuntimeError(f"private containerd exited with {proc.returncode}")
            return self.containerd_sock.is_socket()

        wait_until(listening, timeout=timeout, interval=0.1, what="the private containerd")

    @property
    def base_url(self) -> str:
        return f"unix://{self.sock}"

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def argv(self) -> list[str]:
        return [
            _DOCKERD,
            f"--host={self.base_url}",
            f"--data-root={self.root / 'data'}",
            f"--exec-root={self.root / 'exec'}",
            f"--pidfile={self.root / 'docker.pid'}",
            "--bridge=none",
            "--iptables=false",
            "--ip6tables=false",
            "--storage-driver=vfs",
            f"--containerd={self.containerd_sock}",
            *self.extra_args,
        ]

    def start(self, timeout: float = 60.0) -> None:
        """Start (or start again, on the same state) and wait until it answers ping."""
        if self.running:
            raise RuntimeError("private dockerd is already running")
        with self.log_path.open("ab") as log:
            self._proc = subprocess.Popen(
                self.argv(), stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT
            )

        def ready() -> bool:
            if not self.running:
                raise RuntimeError(f"private dockerd exited; log:\n{self.log_tail()}")
            return _ping(self.sock)

        wait_until(
            ready, timeout=timeout, interval=0.25, what="the private dockerd", ignore=(OSError,)
        )

    def client(self, timeout: int = 60) -> docker.DockerClient:
        return docker.DockerClient(base_url=self.base_url, timeout=timeout)

    def kill(self) -> None:
        """SIGKILL dockerd, as in a crash (containerd and the containers live on)."""
        if self._proc is not None and self._proc.poll() is None:
            self._proc.kill()
        if self._proc is not None:
            self._proc.wait(10)

    def stop(self, timeout: float = 30.0) -> None:
        """SIGTERM, then SIGKILL after ``timeout`` seconds."""
        if self._proc is not None:
            stop_process(self._proc, timeout)

    def log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def cleanup(self) -> None:
        try:
            if self.running:
                self._remove_containers()
        finally:
            try:
                self.stop()
                if self._containerd is not None:
                    stop_process(self._containerd, 15)
            finally:
                # Left behind: the containers' shims. They name our private directory on
                # their command line: ours to kill.
                for pid in _pids_mentioning(str(self.root)):
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(pid, signal.SIGKILL)
                _unmount_under(self.root)
                shutil.rmtree(self.root, ignore_errors=True)

    def _remove_containers(self) -> None:
        with (
            contextlib.suppress(docker.errors.DockerException, OSError),
            contextlib.closing(self.client(timeout=20)) as client,
        ):
            for container in client.containers.list(all=True):
                with contextlib.suppress(docker.errors.DockerException):
                    container.remove(force=True, v=True)


@contextlib.contextmanager
def private_dockerd(extra_args: tuple[str, ...] = ()) -> Iterator[PrivateDockerd]:
    """A running private dockerd (``extra_args`` added to its command line), removed
    with everything it made on exit."""
    if not _is_root():
        require_service("private dockerd", "needs root")
    if shutil.which(_DOCKERD) is None:
        require_service("private dockerd", "dockerd not found (apt-get install docker.io)")
    # Short path: containerd's socket lives under the exec root (108-byte socket paths).
    engine = PrivateDockerd(Path(tempfile.mkdtemp(prefix="hd.", dir="/tmp")), extra_args)
    try:
        engine.start_containerd()
        engine.start()
        yield engine
    finally:
        engine.cleanup()


def postgres_bin() -> Path | None:
    """The newest ``/usr/lib/postgresql/<version>/bin`` with initdb and pg_ctl."""
    found = [
        p
        for p in Path("/usr/lib/postgresql").glob("*/bin")
        if (p / "initdb").exists() and (p / "pg_ctl").exists()
    ]
    found.sort(key=lambda p: [int(x) if x.isdigit() else 0 for x in p.parent.name.split(".")])
    return found[-1] if found else None


class PrivatePostgres:
    """A throw-away PostgreSQL cluster owned by the ``postgres`` OS user, trust auth,
    listening on 127.0.0.1:<free port> only."""

    def __init__(self, root: Path, bindir: Path) -> None:
        self.root = root
        self.data = root / "data"
        self.log_path = root / "postgres.log"
        self.bindir = bindir
        self.port = free_port()

    def dsn(self, password: str | None = None, database: str = "postgres") -> str:
        auth = f"postgres:{password}" if password else "postgres"
        return f"postgresql://{auth}@127.0.0.1:{self.port}/{database}"

    def _pg(self, tool: str, *args: str, timeout: float = 120) -> None:
        result = subprocess.run(
            ["runuser", "-u", "postgres", "--", str(self.bindir / tool), *args],
            capture_output=True,
            timeout=timeout,
            check=False,
        )
        if result.returncode != 0:
            raise RuntimeError(
                f"{tool} {' '.join(args)} failed ({result.returncode}): "
                f"{result.stderr.decode(errors='replace')}\n{self.log_tail()}"
            )

    def init(self) -> None:
        self._pg("initdb", "-D", str(self.data), "-A", "trust", "-U", "postgres", "--no-sync")

    def start(self) -> None:
        options = (
            f"-p {self.port} -k {self.root} -c listen_addresses=127.0.0.1 "
            "-c fsync=off -c max_connections=20"
        )
        self._pg(
            "pg_ctl",
            "-D",
            str(self.data),
            "-l",
            str(self.log_path),
            "-w",
            "-t",
            "60",
            "-o",
            options,
            "start",
        )

    def stop(self, mode: str = "fast") -> None:
        self._pg("pg_ctl", "-D", str(self.data), "-m", mode, "-w", "-t", "60", "stop")

    def log_tail(self, lines: int = 20) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def cleanup(self) -> None:
        pidfile = self.data / "postmaster.pid"
        if pidfile.exists():
            with contextlib.suppress(RuntimeError, subprocess.TimeoutExpired):
                self.stop("immediate")
        with contextlib.suppress(OSError, ValueError, IndexError):
            pid = int(pidfile.read_text().splitlines()[0])  # still there: stop refused
            os.kill(pid, signal.SIGKILL)
            time.sleep(0.2)
        shutil.rmtree(self.root, ignore_errors=True)


@contextlib.contextmanager
def private_postgres() -> Iterator[PrivatePostgres]:
    """A running private PostgreSQL, stopped and deleted on exit."""
    bindir = postgres_bin()
    if bindir is None:
        require_service(
            "private PostgreSQL", "no /usr/lib/postgresql/*/bin (apt-get install postgresql)"
        )
    if not _is_root() or shutil.which("runuser") is None:
        require_service("private PostgreSQL", "needs root and runuser (to run as postgres)")
    # Under /tmp, not pytest's tmp_path: the postgres user must be able to reach it.
    root = Path(tempfile.mkdtemp(prefix="healer-pg.", dir="/tmp"))
    shutil.chown(root, user="postgres")
    pg = PrivatePostgres(root, bindir)
    try:
        pg.init()
        pg.start()
        yield pg
    finally:
        pg.cleanup()
