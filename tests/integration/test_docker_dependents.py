"""``dependents: true`` on a real dockerd: a container joined to another's network
namespace, or a Compose service depending on it with ``restart: true``, is restarted
right after it, is a target like any other (allowlist, evidence), and is left alone
without the flag.

The namespace owner runs with ``network_mode: none`` (a namespace of its own, loopback
only) and the dependent serves HTTP on 127.0.0.1:8080 inside it; "it answers" is a
request made from inside the owner's namespace (``docker exec``), so no traffic leaves
the containers' loopback."""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import pytest
from docker.models.containers import Container

from tests.support.inprocess.inproc import running_healer

pytestmark = pytest.mark.docker

_LOOP = ["sh", "-c", "trap 'exit 0' TERM; while :; do sleep 0.2; done"]
_PROJECT = "com.docker.compose.project"
_SERVICE = "com.docker.compose.service"
_DEPENDS_ON = "com.docker.compose.depends_on"


def _config(tmp_path: Path, *allow: str) -> dict[str, Any]:
    return {
        "journal": str(tmp_path / "journal.db"),
        # Nothing listens there: verification ends `unverified`, quickly.
        "prometheus": {"url": "http://127.0.0.1:9", "timeout": "0.2s"},
        "verify": {"stable_for": "0s", "timeout": "0.3s"},
        "allow": [{"kind": "docker", "name": glob} for glob in allow],
    }


def _started_at(container: Container) -> str:
    container.reload()
    return str(container.attrs["State"]["StartedAt"])


def _answers(owner: Container) -> bool:
    """Whether something answers HTTP on 127.0.0.1:8080 in ``owner``'s network namespace."""
    code, out = owner.exec_run(
        ["sh", "-c", 'printf "GET / HTTP/1.0\\r\\n\\r\\n" | nc -w 2 127.0.0.1 8080 | head -n 1']
    )
    return code == 0 and out.startswith(b"HTTP/1.")


def _pair(containers, tag: str) -> tuple[Container, Container]:
    """``app-<tag>`` (its own namespace) and ``side-<tag>`` serving HTTP inside it."""
    app = containers.run(_LOOP, name=f"healer-dep-app-{tag}", network_mode="none")
    side = containers.run(
        ["httpd", "-f", "-p", "127.0.0.1:8080", "-h", "/"],
        name=f"healer-dep-side-{tag}",
        network_mode=f"container:{app.name}",
    )
    for _ in range(50):  # bounded: httpd binds within a few ms of its start
        if _answers(app):
            break
    assert _answers(app), "the dependent never answered in the owner's namespace"
    return app, side


async def _restart(h, handler: str = "docker.restart", **params: Any) -> dict[str, Any]:
    resp = await h.client.post(
        "/api/v1/heals",
        headers=h.admin_headers,
        json={"handler": handler, "params": {"stop_timeout": 1, **params}},
    )
    assert resp.status_code == 202, resp.text
    return dict(await h.wait_for_outcome(resp.json()["heal_id"], timeout=60))


def _step(heal: dict[str, Any], kind: str) -> dict[str, Any]:
    return dict(next(e for e in heal["timeline"] if e["kind"] == kind)["data"])


def _restarted(heal: dict[str, Any]) -> list[tuple[str, str | None]]:
    return [
        (e["data"]["container"], e["data"].get("dependent_of"))
        for e in heal["timeline"]
        if e["kind"] == "restarted"
    ]


async def test_joined_container_restarts_after_its_namespace_owner(tmp_path, containers) -> None:
    """Restarting the owner with ``dependents: true`` restarts the joined container right
    after it (the check's evidence says which and why; the act's steps say in what order),
    and the joined container answers again in the owner's new namespace; a container in
    a namespace of its own is not touched."""
    tag = uuid.uuid4().hex[:8]
    app, side = _pair(containers, tag)
    other = containers.run(_LOOP, name=f"healer-dep-other-{tag}", network_mode="none")
    before = {c.name: _started_at(c) for c in (app, side, other)}
    async with running_healer(_config(tmp_path, f"healer-dep-*-{tag}")) as h:
        heal = await _restart(h, containers=[app.name], dependents=True)
    assert heal["outcome"] == "unverified", heal["reason"]  # acted; nothing to verify
    assert _step(heal, "check")["evidence"]["dependents"] == [
        {"name": side.name, "of": app.name, "why": f"network_mode container:{app.name}"}
    ]
    assert heal["targets"] == [f"docker:{app.name}", f"docker:{side.name}"]
    assert _restarted(heal) == [(app.name, None), (side.name, app.name)]
    assert _started_at(app) != before[app.name] and _started_at(side) != before[side.name]
    assert _started_at(side) >= _started_at(app)
    assert _started_at(other) == before[other.name]
    assert _answers(app)


async def test_without_the_flag_the_joined_container_is_left_alone(tmp_path, containers) -> None:
    """With ``dependents`` unset only the owner restarts; the joined container keeps the
    dead namespace and no longer answers in the owner's new one: why the flag exists."""
    tag = uuid.uuid4().hex[:8]
    app, side = _pair(containers, tag)
    side_started = _started_at(side)
    async with running_healer(_config(tmp_path, f"healer-dep-*-{tag}")) as h:
        heal = await _restart(h, containers=[app.name])
    assert heal["outcome"] == "unverified", heal["reason"]
    assert _restarted(heal) == [(app.name, None)]
    assert "dependents" not in _step(heal, "check")["evidence"]
    assert _started_at(side) == side_started
    assert not _answers(app)


async def test_dependent_outside_the_allowlist_refuses_before_anything_acts(
    tmp_path, containers
) -> None:
    """A dependent the allowlist does not cover ends the heal ``refused`` naming it, and
    not even the allowed owner is restarted."""
    tag = uuid.uuid4().hex[:8]
    app, side = _pair(containers, tag)
    before = (_started_at(app), _started_at(side))
    async with running_healer(_config(tmp_path, app.name)) as h:
        heal = await _restart(h, containers=[app.name], dependents=True)
    assert heal["outcome"] == "refused", heal["reason"]
    assert side.name in heal["reason"]
    assert (_started_at(app), _started_at(side)) == before
    assert _restarted(heal) == []


async def test_compose_depends_on_with_restart_true_is_honoured(tmp_path, containers) -> None:
    """Compose's ``depends_on: {a: {restart: true}}`` label makes ``b`` restart after ``a``
    and ``e`` (``restart: true`` on ``b``) after ``b``; ``restart: false``, a bare name and
    the same service name in another project are left alone."""
    tag = uuid.uuid4().hex[:8]
    project = f"shop{tag}"

    def service(name: str, depends_on: str | None = None, proj: str = project) -> Container:
        labels = {_PROJECT: proj, _SERVICE: name}
        if depends_on is not None:
            labels[_DEPENDS_ON] = depends_on
        return containers.run(_LOOP, name=f"healer-dep-{name}-{tag}", labels=labels)

    a = service("a")
    b = service("b", "db:service_started:false,a:service_started:true")
    e = service("e", "b:service_healthy:true")
    left = [
        service("c", "a:service_healthy:false"),
        service("f", "a"),
        service("d", "a:service_started:true", proj=f"other{tag}"),
    ]
    before = {c.name: _started_at(c) for c in left}
    async with running_healer(_config(tmp_path, f"healer-dep-*-{tag}")) as h:
        heal = await _restart(h, service="a", project=project, dependents=True)
    assert heal["outcome"] == "unverified", heal["reason"]
    assert _restarted(heal) == [(a.name, None), (b.name, a.name), (e.name, b.name)]
    assert [d["why"] for d in _step(heal, "check")["evidence"]["dependents"]] == [
        "depends_on a with restart: true",
        "depends_on b with restart: true",
    ]
    assert {c.name: _started_at(c) for c in left} == before


async def test_odoo_rolling_restart_brings_its_dependents(tmp_path, containers) -> None:
    """``odoo.restart_workers`` with ``dependents: true`` restarts the joined container
    right after the worker, recording it as that worker's dependent, and it answers again."""
    tag = uuid.uuid4().hex[:8]
    app, side = _pair(containers, tag)
    async with running_healer(_config(tmp_path, f"healer-dep-*-{tag}")) as h:
        heal = await _restart(h, "odoo.restart_workers", containers=[app.name], dependents=True)
    assert heal["outcome"] == "unverified", heal["reason"]
    assert _restarted(heal) == [(app.name, None), (side.name, app.name)]
    assert _step(heal, "check")["evidence"]["order"] == [app.name, side.name]
    assert _answers(app)
