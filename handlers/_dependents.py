"""Containers that must restart after another one (``dependents: true``).

Two kinds of dependent, both found on the engine at check time:

* a container joined to another's network namespace (``network_mode: container:X``, which
  Compose's ``network_mode: service:X`` becomes): when X restarts it gets a new namespace,
  and the joined container is left with the old, dead one until it restarts too;
* a Compose service whose ``depends_on`` names X's service with ``restart: true`` (the
  ``com.docker.compose.depends_on`` label, ``svc:condition:restart,...``, same project).

Only running containers are dependents (a stopped one is left stopped), found
transitively (a dependent's own dependents follow it). :func:`restart_order` interleaves
them: each container right after the one it depends on, each restarted once.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from healer.api import HealContext

_PROJECT = "com.docker.compose.project"
_SERVICE = "com.docker.compose.service"
_DEPENDS_ON = "com.docker.compose.depends_on"
_JOINED = "container:"


@dataclass(frozen=True, slots=True)
class Dependent:
    """``name`` must restart after ``of``, because of ``why``."""

    name: str
    of: str
    why: str

    def as_evidence(self) -> dict[str, str]:
        return {"name": self.name, "of": self.of, "why": self.why}


def _name(info: dict[str, Any]) -> str:
    return str(info.get("Name", "")).lstrip("/")


def _labels(info: dict[str, Any]) -> dict[str, str]:
    return (info.get("Config") or {}).get("Labels") or {}


def joined_to(info: dict[str, Any], main: dict[str, Any]) -> bool:
    """Whether ``info`` runs in ``main``'s network namespace. Docker keeps what the
    container was created with: ``container:<name>``, ``container:<id>`` or an id prefix."""
    mode = str((info.get("HostConfig") or {}).get("NetworkMode") or "")
    if not mode.startswith(_JOINED):
        return False
    ref = mode[len(_JOINED) :]
    main_id = str(main.get("Id", ""))
    return bool(ref) and (ref == _name(main) or (len(ref) >= 12 and main_id.startswith(ref)))


def restarts_with(info: dict[str, Any], main: dict[str, Any]) -> bool:
    """Whether Compose's ``depends_on`` of ``info`` names ``main``'s service with
    ``restart: true``, in the same project."""
    labels, main_labels = _labels(info), _labels(main)
    service, project = main_labels.get(_SERVICE), main_labels.get(_PROJECT)
    if not service or labels.get(_PROJECT) != project:
        return False
    for entry in labels.get(_DEPENDS_ON, "").split(","):
        parts = entry.strip().split(":")
        if parts[0] == service and len(parts) >= 3 and parts[2].lower() == "true":
            return True
    return False


def _why(info: dict[str, Any], main: dict[str, Any]) -> str | None:
    if joined_to(info, main):
        return f"network_mode container:{_name(main)}"
    if restarts_with(info, main):
        return f"depends_on {_labels(main).get(_SERVICE)} with restart: true"
    return None


async def find_dependents(
    ctx: HealContext, mains: Sequence[dict[str, Any]]
) -> list[tuple[dict[str, Any], Dependent]]:
    """Every running container that must restart after one of ``mains`` (inspect dicts),
    directly or through another dependent, with why; each dependent of a container in
    name order. One listing of the engine's containers."""
    running = [
        info
        for info in await ctx.docker.list_containers()
        if (info.get("State") or {}).get("Status") == "running"
    ]
    found: list[tuple[dict[str, Any], Dependent]] = []
    seen = {str(m.get("Id")) for m in mains}
    queue = list(mains)
    while queue:
        main = queue.pop(0)
        children = sorted(
            (info for info in running if str(info.get("Id")) != str(main.get("Id"))),
            key=_name,
        )
        for info in children:
            why = _why(info, main)
            if why is None:
                continue
            found.append((info, Dependent(_name(info), _name(main), why)))
            if str(info.get("Id")) not in seen:
                seen.add(str(info.get("Id")))
                queue.append(info)
    return found


def restart_order(mains: Iterable[str], dependents: Iterable[Dependent]) -> list[str]:
    """``mains`` in their order, each followed by its dependents (and theirs); a container
    reached twice moves to its later place, so it restarts once, after all it depends on."""
    children: dict[str, list[str]] = {}
    for d in dependents:
        children.setdefault(d.of, []).append(d.name)
    order: list[str] = []

    def visit(name: str, path: frozenset[str]) -> None:
        if name in path:  # a cycle: Docker and Compose refuse them, so never loop on one
            return
        if name in order:
            order.remove(name)
        order.append(name)
        for child in children.get(name, []):
            visit(child, path | {name})

    for name in mains:
        visit(name, frozenset())
    return order
