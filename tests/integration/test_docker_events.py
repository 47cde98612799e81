"""The suite's record of dockerd's events outlives dockerd's own replay log."""

from __future__ import annotations

import time
from typing import Any

import pytest

from tests.support.servers.docker_events import container_events

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
