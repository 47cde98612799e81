"""Processes a benchmark runs: healer (with the ``bench.noop`` plugin on its path), the
bare endpoint, wrk. Built on the test suite's own launchers (tests/support), so healer
is started exactly as the end-to-end tests start it."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from bench.common import REPO
from bench.noop import plugin_path
from tests.support.inprocess.healer_api import write_config
from tests.support.servers.processes import HealerFactory, HealerProc, ManagedProcess

TOKEN = "bench-webhook-token"  # noqa: S105 - a throwaway token for a loopback run
ADMIN_TOKEN = "bench-admin-token"  # noqa: S105
WRK_SCRIPT = REPO / "bench" / "wrk_post.lua"


def healer_env(workdir: Path) -> dict[str, str]:
    path = os.pathsep.join([str(plugin_path(workdir)), str(REPO)])
    return {"PYTHONPATH": path, "HEALER_WEBHOOK_TOKEN": TOKEN, "HEALER_ADMIN_TOKEN": ADMIN_TOKEN}


@contextlib.contextmanager
def healer(workdir: Path, config: dict[str, Any]) -> Iterator[HealerProc]:
    """A ``healer serve`` process with ``config`` (journal under ``workdir``), stopped
    on exit whatever happens."""
    with healers(workdir, config, 1) as (one,):
        yield one


@contextlib.contextmanager
def healers(workdir: Path, config: dict[str, Any], count: int) -> Iterator[list[HealerProc]]:
    """``count`` ``healer serve`` processes on one config (replicas when its journal is a
    shared PostgreSQL store), each on its own port, started one after the other (the
    first migrates the store); all stopped on exit whatever happens."""
    config = {"journal": str(workdir / "journal.db"), **config}
    path = write_config(workdir, config)
    factory = HealerFactory(workdir)
    try:
        yield [factory.start(path, env=healer_env(workdir)) for _ in range(count)]
    finally:
        factory.stop_all()


@contextlib.contextmanager
def bare_endpoint(workdir: Path, *, durable: bool = False) -> Iterator[ManagedProcess]:
    """bench/bare_app.py; ``durable``: the durable floor (each body appended to a file
    under ``workdir`` and fsynced before the answer)."""
    name = "durable" if durable else "bare"
    extra = ["--durable", str(workdir / "durable-floor.log")] if durable else []
    proc = ManagedProcess(
        name,
        lambda port: [
            sys.executable,
            "-m",
            "bench.bare_app",
            "--listen",
            f"127.0.0.1:{port}",
            *extra,
        ],
        workdir=workdir,
        ready_path="/health",
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    try:
        proc.start(30.0)
        yield proc
    finally:
        proc.stop()


def wrk(
    url: str,
    *,
    seconds: float,
    connections: int,
    alerts: int,
    tag: str,
    token: str | None = None,
    match: bool = False,
    threads: int = 1,
) -> dict[str, Any]:
    """Run wrk against ``url``/api/v1/alerts for ``seconds``; its JSON summary line."""
    binary = shutil.which("wrk")
    if binary is None:
        raise RuntimeError("wrk not found (apt-get install wrk; ./scripts/bench does it)")
    argv = [
        binary,
        f"-t{threads}",
        f"-c{connections}",
        f"-d{max(1, round(seconds))}s",
        "--timeout",
        "10s",
        "-s",
        str(WRK_SCRIPT),
        f"{url}/api/v1/alerts",
        "--",
        str(alerts),
        tag,
        token or "",
        "match" if match else "nomatch",
    ]
    out = subprocess.run(
        argv, capture_output=True, text=True, timeout=seconds + 60, check=True
    ).stdout
    line = next(ln for ln in reversed(out.splitlines()) if ln.startswith("{"))
    stats: dict[str, Any] = json.loads(line)
    stats["rps"] = stats["requests"] / (stats["duration_us"] / 1e6)
    stats["alerts_per_s"] = stats["rps"] * alerts
    return stats


@contextlib.contextmanager
def steady_load(
    url: str, *, seconds: float, rate: float, alerts: int, out: Path, token: str = TOKEN
) -> Iterator[subprocess.Popen[bytes]]:
    """tests/support/scenarios/loadgen.py in its own process: ``rate`` posts/s of ``alerts`` alerts
    (every alert its own fingerprint, none matching a rule) for ``seconds``; its summary
    is in ``out`` once the process has ended (killed if still running on exit)."""
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "tests.support.scenarios.loadgen",
            "--url",
            url,
            "--seconds",
            str(seconds),
            "--rate",
            str(rate),
            "--alerts",
            str(alerts),
            "--token",
            token,
            "--resend-every",
            "1000000",
            "--out",
            str(out),
        ],
        cwd=REPO,
        stdout=subprocess.DEVNULL,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    try:
        yield proc
        proc.wait(seconds + 60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
