"""How dependents are recognised from a container's inspect data and ordered: each right
after the container it depends on, once, whatever the rule's order and however the
Compose label is written."""

from __future__ import annotations

from typing import Any

import pytest

from handlers._dependents import Dependent, joined_to, restart_order, restarts_with

APP_ID = "e04ab6cfc398a760e5eb481cb0ff9b5f0c7bb919697769303c5e7864f498e796"


def info(name: str, *, mode: str = "", labels: dict[str, str] | None = None) -> dict[str, Any]:
    return {
        "Id": APP_ID if name == "app" else name * 8,
        "Name": f"/{name}",
        "HostConfig": {"NetworkMode": mode},
        "Config": {"Labels": labels or {}},
    }


def service(name: str, depends_on: str | None = None, project: str = "shop") -> dict[str, Any]:
    labels = {"com.docker.compose.project": project, "com.docker.compose.service": name}
    if depends_on is not None:
        labels["com.docker.compose.depends_on"] = depends_on
    return info(name, labels=labels)


@pytest.mark.parametrize(
    ("mode", "joined"),
    [
        ("container:app", True),
        (f"container:{APP_ID}", True),
        (f"container:{APP_ID[:12]}", True),
        (f"container:{APP_ID[:6]}", False),  # too short to be sure it is app
        ("container:", False),
        ("container:application", False),
        ("host", False),
        ("bridge", False),
        ("", False),
    ],
)
def test_joined_to_by_name_id_or_long_prefix(mode: str, joined: bool) -> None:
    """Docker keeps ``container:`` with the name or the id it was given: both count, and an
    id prefix of at least 12 characters (Docker's short id); nothing else does."""
    assert joined_to(info("side", mode=mode), info("app")) is joined


@pytest.mark.parametrize(
    ("depends_on", "project", "restarts"),
    [
        ("a:service_started:true", "shop", True),
        ("db:service_healthy:false, a:service_started:TRUE", "shop", True),
        ("a:service_started:false", "shop", False),
        ("a:service_started", "shop", False),
        ("a", "shop", False),
        ("ab:service_started:true", "shop", False),
        ("", "shop", False),
        ("a:service_started:true", "other", False),
    ],
)
def test_compose_depends_on_needs_restart_true_in_the_same_project(
    depends_on: str, project: str, restarts: bool
) -> None:
    """Only an entry naming the service exactly with ``restart`` true, in the same Compose
    project, makes a dependent; older labels without the restart field do not."""
    assert restarts_with(service("b", depends_on, project), service("a")) is restarts


def test_a_container_without_a_service_has_no_compose_dependents() -> None:
    """A container Compose did not make (no service label) has no ``depends_on`` dependents,
    even when another container's label names an empty service."""
    assert not restarts_with(service("b", ":service_started:true"), info("app"))


def test_each_dependent_follows_its_container_once() -> None:
    """Dependents come right after their container, theirs after them; a container the rule
    also chose moves to after the one it depends on, so it restarts once, last."""
    deps = [
        Dependent("side", "app", "network_mode container:app"),
        Dependent("log", "side", "network_mode container:side"),
        Dependent("web", "db", "depends_on db with restart: true"),
    ]
    assert restart_order(["app", "db"], deps) == ["app", "side", "log", "db", "web"]
    assert restart_order(["web", "db"], deps) == ["db", "web"]
    assert restart_order(["side", "app"], deps) == ["app", "side", "log"]


def test_a_cycle_ends() -> None:
    """Docker and Compose refuse cycles, but a label can claim one: the order still ends,
    each container once."""
    deps = [Dependent("a", "b", "x"), Dependent("b", "a", "x")]
    assert sorted(restart_order(["a"], deps)) == ["a", "b"]
