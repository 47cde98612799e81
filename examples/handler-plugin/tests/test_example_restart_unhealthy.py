"""example.restart_unhealthy, tested with healer.testing alone against a real Docker."""

from __future__ import annotations

from typing import Any

import pytest
from healer_example.restart_unhealthy import RestartUnhealthy, RestartUnhealthyParams

from healer.api import DockerAdapter
from healer.testing import NoAdapter, heal_context, make_alert, run_handler


def _started_at(container: Any) -> str:
    container.reload()
    return str(container.attrs["State"]["StartedAt"])


async def test_an_unhealthy_container_is_restarted(
    docker_engine: DockerAdapter, unhealthy: Any
) -> None:
    """check finds the container unhealthy and names it; act restarts it (new StartedAt)
    and records the restart between the engine's check and act entries."""
    before = _started_at(unhealthy)
    alert = make_alert({"alertname": "ContainerUnhealthy", "container": unhealthy.name})
    ctx = heal_context(alert, docker=docker_engine)

    run = await run_handler(
        RestartUnhealthy, ctx, {"container": unhealthy.name, "stop_timeout": "1s"}
    )

    assert run.check.act and [t.key for t in run.check.targets] == [f"docker:{unhealthy.name}"]
    assert run.check.evidence == {"status": "running", "health": "unhealthy"}
    assert run.act is not None and run.act.summary == f"restarted {unhealthy.name}"
    assert ctx.recorder.kinds() == ["check", "restarted", "act"]
    [restarted] = ctx.recorder.of("restarted")
    assert restarted["was"] == before != restarted["now"] == _started_at(unhealthy)


async def test_a_healthy_container_is_left_alone(
    docker_engine: DockerAdapter, healthy: Any
) -> None:
    """A passing health check means no action: act is not called, nothing restarts."""
    before = _started_at(healthy)
    ctx = heal_context(make_alert({"alertname": "ContainerUnhealthy"}), docker=docker_engine)

    run = await run_handler(RestartUnhealthy, ctx, {"container": healthy.name})

    assert not run.check.act and run.act is None
    assert run.check.reason == f"{healthy.name} is not unhealthy (health: healthy)"
    assert ctx.recorder.kinds() == ["check"]
    assert _started_at(healthy) == before


async def test_a_dry_run_only_says_what_it_would_do(
    docker_engine: DockerAdapter, unhealthy: Any
) -> None:
    """In a dry run the check runs, act does not: the container keeps its StartedAt."""
    before = _started_at(unhealthy)
    ctx = heal_context(docker=docker_engine, dry_run=True)

    run = await run_handler(RestartUnhealthy, ctx, {"container": unhealthy.name})

    assert run.check.act and run.act is None
    assert ctx.recorder.of("dry_run") == [{"would_act_on": [f"docker:{unhealthy.name}"]}]
    assert _started_at(unhealthy) == before


async def test_without_a_docker_adapter_the_handler_fails_loudly() -> None:
    """A context without Docker makes the handler's first Docker call raise NoAdapter."""
    with pytest.raises(NoAdapter, match=r"ctx\.docker\.inspect"):
        await run_handler(RestartUnhealthy, heal_context(), {"container": "web"})


def test_stop_timeout_is_a_duration() -> None:
    """``stop_timeout`` takes a number of seconds or a duration string."""
    assert RestartUnhealthyParams(container="web", stop_timeout="1m").stop_timeout == 60.0
    assert RestartUnhealthyParams(container="web", stop_timeout=5).stop_timeout == 5.0
