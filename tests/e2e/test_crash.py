"""Crash safety of a real `healer serve` process in the whole loop (busybox service, real
Prometheus, Alertmanager and dockerd): a graceful stop with SIGTERM, and a SIGKILL in the
middle of a verification followed by a restart on the same journal."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import httpx
import pytest
import yaml

from tests.support.env import wait_until
from tests.support.scenarios.faults import (
    docker_restarts,
    journal_heal,
    kinds,
    wait_for_done,
    wait_for_phase,
)

pytestmark = [pytest.mark.e2e, pytest.mark.docker, pytest.mark.prometheus]


def test_sigterm_on_an_idle_healer_exits_0(tmp_path: Path, healer_process) -> None:
    """SIGTERM stops an idle healer cleanly: exit code 0 (not 143, the signal's), within
    the 10 s the stop allows before it would SIGKILL."""
    config = tmp_path / "healer.yml"
    config.write_text(
        yaml.safe_dump(
            {"journal": str(tmp_path / "journal.db"), "prometheus": {"url": "http://127.0.0.1:9"}}
        )
    )
    proc = healer_process.start(config)

    assert proc.stop(timeout=10) == 0, proc.log_tail()


def _refused(url: str) -> bool:
    try:
        with httpx.Client(timeout=2.0) as client:
            client.get(url)
    except httpx.ConnectError:
        return True
    except httpx.HTTPError:
        return False
    return False


def test_sigterm_mid_verify_journals_interrupted_and_exits_0(make_loop, tmp_path: Path) -> None:
    """SIGTERM while a heal is verifying: healer stops accepting connections at once, lets
    the heal run for shutdown_grace (it cannot finish: stable_for is 60 s), journals it
    `interrupted` in phase verifying - so the next start re-verifies it - and exits 0."""
    loop = make_loop(stable_for="60s", timeout="120s", overrides={"shutdown_grace": "8s"})
    loop.service.break_()
    heal = wait_for_phase(loop, "verifying")
    assert loop.healer.pid is not None

    os.kill(loop.healer.pid, signal.SIGTERM)
    wait_until(
        lambda: _refused(f"{loop.healer.url}/health"),
        timeout=8,
        interval=0.1,
        what="healer refusing connections",
    )
    assert loop.healer.running  # still letting the heal finish

    assert loop.healer.stop(timeout=60) == 0, loop.healer.log_tail()

    stopped = journal_heal(tmp_path / "journal.db", heal["id"])
    assert stopped["outcome"] == "interrupted"
    assert stopped["phase"] == "verifying"
    assert stopped["reason"] == "healer stopped while verifying"
    assert kinds(stopped)[-1] == "interrupted"
    assert kinds(stopped).count("act") == 1


def test_sigkill_mid_verify_resumes_verification_without_acting_again(
    make_loop, docker_client
) -> None:
    """healer SIGKILLed while verifying, restarted on the same journal: the heal is
    journaled `interrupted`, its verification resumes and ends `recovered`, and dockerd
    restarted the container exactly once (the action never runs twice)."""
    since = time.time()
    loop = make_loop(stable_for="8s", timeout="60s")
    loop.service.break_()
    heal = wait_for_phase(loop, "verifying")
    assert heal["outcome"] is None

    loop.healer.kill()
    loop.healer.restart()
    done = wait_for_done(loop, heal["id"])

    assert done["outcome"] == "recovered", (done["reason"], loop.healer.log_tail())
    timeline = kinds(done)
    assert timeline.count("act") == 1
    assert (
        timeline.index("act")
        < timeline.index("interrupted")
        < timeline.index("verification_resumed")
        < timeline.index("outcome")
    )
    interrupted = next(e for e in done["timeline"] if e["kind"] == "interrupted")
    assert interrupted["phase"] == "verifying"
    assert interrupted["data"]["reason"] == "healer died while verifying"
    assert docker_restarts(docker_client, loop.service.name, since) == 1
    assert loop.service.metric() == 1
    assert loop.metric("healer_heals_total", {"outcome": "recovered"}) == 1
    assert len(loop.heals()) == 1
