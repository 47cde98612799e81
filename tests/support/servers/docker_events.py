"""dockerd's container events as the tests read them: recorded live for the whole session.

A replay (``client.events(since=..., until=...)``) comes from dockerd's in-memory log of
its last 256 events. With the suite's parallel workers, the health probes of other tests'
containers (three exec events each, every second) push a test's own events out of that
log within seconds, and a test counting restarts would count none. So the ``docker_client``
fixture starts one :class:`EventRecorder` per worker, on a stream opened before any test
acts (exec events left out), and :func:`container_events` answers from it; for an engine
without a recorder (a test's private dockerd, bench, the demo) it replays as before.

    events = container_events(client, since=t0, filters={"container": name, "event": "restart"})
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterable, Mapping
from typing import Any

import docker

# Every container action but the exec_* ones a health probe makes.
_ACTIONS = [
    "attach", "commit", "copy", "create", "destroy", "detach", "die", "export",
    "health_status", "kill", "oom", "pause", "rename", "resize", "restart", "start",
    "stop", "top", "unpause", "update",
]  # fmt: skip

_RECORDERS: dict[str, EventRecorder] = {}


def _key(client: docker.DockerClient) -> str:
    """Which engine ``client`` talks to. The SDK calls every unix socket
    ``http+docker://localhost`` (and every dockerd of a host has the same ID), so a test's
    private dockerd would be read from the main engine's record, counting none of its
    events: a unix socket is named by its path."""
    adapter = client.api.get_adapter(client.api.base_url)
    return str(getattr(adapter, "socket_path", None) or client.api.base_url)


class EventRecorder:
    """Keeps every non-exec container event of one engine from its start on."""

    def __init__(self, client: docker.DockerClient) -> None:
        # The request is made here: events after this line are all delivered.
        self._stream = client.events(decode=True, filters={"type": "container", "event": _ACTIONS})
        self._events: list[dict[str, Any]] = []
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._read, name="docker-events", daemon=True)
        self._thread.start()
        self._key = _key(client)
        _RECORDERS[self._key] = self

    def _read(self) -> None:
        try:
            for event in self._stream:
                with self._lock:
                    self._events.append(event)
        except Exception:  # the stream closed (close(), or dockerd went away)
            return

    def snapshot(self) -> list[dict[str, Any]]:
        with self._lock:
            return list(self._events)

    def close(self) -> None:
        if _RECORDERS.get(self._key) is self:
            del _RECORDERS[self._key]
        self._stream.close()
        self._thread.join(timeout=5)


def _values(value: str | Iterable[str]) -> set[str]:
    return {value} if isinstance(value, str) else set(value)


def _matches(event: Mapping[str, Any], filters: Mapping[str, str | Iterable[str]]) -> bool:
    actor = event.get("Actor") or {}
    for key, wanted in filters.items():
        want = _values(wanted)
        if key == "container":
            name = (actor.get("Attributes") or {}).get("name")
            if not (
                {actor.get("ID"), name} & want
                or any(str(actor.get("ID", "")).startswith(w) for w in want if len(w) >= 12)
            ):
                return False
        elif key == "event":
            action = str(event.get("Action", ""))
            if action not in want and action.split(":", 1)[0] not in want:
                return False
        elif key == "type":
            if event.get("Type") not in want:
                return False
        else:
            raise ValueError(f"filter {key!r} is not supported by container_events")
    return True


def container_events(
    client: docker.DockerClient,
    *,
    since: float,
    filters: Mapping[str, str | Iterable[str]],
    settle: float = 0.5,
) -> list[dict[str, Any]]:
    """The container events of ``client``'s engine from ``since`` (epoch seconds, whole
    seconds as dockerd counts them) until now, oldest first, that match ``filters``
    (``container``: names or ids; ``event``: actions, ``health_status`` matching
    ``health_status: healthy``; ``type``). Waits ``settle`` seconds for events still on
    their way from dockerd."""
    recorder = _RECORDERS.get(_key(client))
    if recorder is None:
        stream = client.events(
            since=int(since), until=int(time.time()) + 1, decode=True, filters=dict(filters)
        )
        try:
            return list(stream)
        finally:
            stream.close()
    time.sleep(settle)
    return [
        e
        for e in recorder.snapshot()
        if int(e.get("time", 0)) >= int(since) and _matches(e, filters)
    ]
