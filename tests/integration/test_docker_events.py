"""The suite's record of dockerd's events outlives dockerd's own replay log."""

from __future__ import annotations

import time
from typing import Any

import pytest

from tests.support.servers.containers import build_busybox_image
from tests.support.servers.docker_events import container_events
from tests.support.servers.private_services import private_dockerd

pytestmark = pytest.mark.docker


def test_a_restart_is_still_found_after_dockerd_replay_log_has_dropped_it(
    containers: Any, docker_client: Any
) -> None:
    """dockerd replays (since/until) only its last 256 events; 300 exec events later, the
    replay no longer holds a container's restart, while container_events (recorded live
    from the session's start, exec events left out) still finds it exactly once."""
    box = containers.run(["sh", "-c", "trap 'exit 0' TERM; while :; do sleep 0.2; done"])
    since = time.time()
    box.restart(timeout=1)
    for _ in range(100):  # exec_create, exec_start, exec_die: 300 events
        box.exec_run(["true"])
    replay = docker_client.events(
        since=int(since) - 1,
        until=int(time.time()) + 1,
        decode=True,
        filters={"container": box.name, "event": "restart"},
    )
    try:
        replayed = list(replay)
    finally:
        replay.close()
    assert replayed == []  # what a replay-based count saw under the parallel suite
    found = container_events(
        docker_client, since=since - 1, filters={"container": box.name, "event": "restart"}
    )
    assert [e["Action"] for e in found] == ["restart"]


def test_a_private_engine_is_read_from_its_own_events(tmp_path: Any, docker_client: Any) -> None:
    """The SDK names every unix socket ``http+docker://localhost``: with the main engine's
    record running, a restart on a private dockerd is still counted once from that engine,
    and not at all from the main one (before: the main record answered for both and the
    private restart counted 0, failing test_faults now and then)."""
    with private_dockerd() as engine:
        client = engine.client()
        try:
            image = build_busybox_image(client, tmp_path / "image")
            box = client.containers.run(
                image,
                ["sh", "-c", "trap 'exit 0' TERM; while :; do sleep 0.2; done"],
                detach=True,
                network_mode="host",
            )
            since = time.time()
            box.restart(timeout=1)
            restarts = {"container": box.id, "event": "restart"}
            found = container_events(client, since=since - 1, filters=restarts)
            assert [e["Action"] for e in found] == ["restart"]
            assert container_events(docker_client, since=since - 1, filters=restarts) == []
            box.remove(force=True)
        finally:
            client.close()
