"""The live demo behind scripts/demo: the same real loop the e2e tests drive
(tests/support/scenarios/loop.py), narrated step by step with timings.

    .venv/bin/python scripts/demo.py [--keep]
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tests.support import (  # noqa: E402
    AlertmanagerFactory,
    ContainerFactory,
    HealerFactory,
    PrometheusFactory,
    build_busybox_image,
)
from tests.support.env import wait_until  # noqa: E402
from tests.support.scenarios.loop import Loop, start_loop  # noqa: E402
from tests.support.servers.containers import connect_docker  # noqa: E402

T0 = time.monotonic()


def say(text: str) -> None:
    print(f"[{time.monotonic() - T0:6.1f}s] {text}", flush=True)


def describe(event: dict[str, Any]) -> str | None:
    kind, data = event["kind"], event["data"]
    if kind == "matched":
        return f"healer matched rule {data['rule']!r} -> handler {data['handler']}"
    if kind == "check":
        ev = data["evidence"].get("containers", [{}])
        c = ev[0] if ev else {}
        return (
            f"check: {c.get('name')} is {c.get('status')}, started {c.get('started_at')}"
            f" -> act on {', '.join(data['targets'])}"
        )
    if kind == "restarted":
        return f"act: restarted {data['container']} in {data['seconds']:.2f}s"
    if kind == "verify_start":
        return (
            f"verify: polling {data['query']} every {data['interval']:g}s until gone "
            f"for {data['stable_for']:g}s"
        )
    if kind == "verify_sample":
        state = {True: "alert gone", False: "alert still firing", None: "Prometheus error"}
        return f"verify: sample -> {state[data['healthy']]}"
    if kind == "alert_resolved":
        return "Alertmanager sent the resolved notification"
    if kind == "outcome":
        return f"OUTCOME: {data['outcome']} ({data['reason']})"
    return None


def follow(loop: Loop, timeout: float = 120.0) -> dict[str, Any]:
    """Print each new timeline event of the first heal until it has an outcome."""
    heal_id = wait_until(
        lambda: (loop.heals() or [{}])[0].get("id"),
        timeout=60,
        interval=0.2,
        what="healer to start a heal",
    )
    say(f"healer received the alert and journaled heal {heal_id}")
    seen = 0
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        heal = loop.heal(heal_id)
        for event in heal["timeline"][seen:]:
            text = describe(event)
            if text:
                say(text)
        seen = len(heal["timeline"])
        if heal["outcome"] is not None:
            return heal
        time.sleep(0.2)
    raise TimeoutError(f"heal {heal_id} did not finish within {timeout}s")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--keep", action="store_true", help="keep the work dir (logs, journal)")
    args = parser.parse_args()
    workdir = Path(tempfile.mkdtemp(prefix="healer-demo-"))
    client = connect_docker()
    factories: list[Any] = []
    containers = None
    try:
        say("building the busybox image (FROM scratch, no registry needed)")
        image = build_busybox_image(client, workdir / "image")
        containers = ContainerFactory(client, image)
        service = containers.run_service(name="healer-demo-service")
        say(f"service container {service.name} serves demo_service_healthy=1 on {service.target}")
        prom, am, healer = (
            PrometheusFactory(workdir),
            AlertmanagerFactory(workdir),
            HealerFactory(workdir),
        )
        factories = [healer, prom, am]
        loop = start_loop(
            workdir=workdir,
            service=service,
            prometheus=prom,
            alertmanager=am,
            healer=healer,
            stable_for="5s",
            timeout="60s",
        )
        say(
            f"Prometheus {loop.prometheus.url}, Alertmanager {loop.alertmanager.url}, "
            f"healer {loop.healer.url} (examples/demo/healer.yml); first scrape done"
        )

        service.container.reload()
        started_before = service.container.attrs["State"]["StartedAt"]
        broke_at = time.monotonic()
        say("BREAKING the service: demo_service_healthy -> 0")
        service.break_()
        wait_until(loop.firing, timeout=30, interval=0.2, what="the alert to fire")
        say("Prometheus: DemoServiceUnhealthy is firing")
        heal = follow(loop)
        service.container.reload()
        total = time.monotonic() - broke_at
        durations = heal["durations"]
        print()
        print(f"  outcome            {heal['outcome']}")
        print(
            f"  container          StartedAt {started_before} -> "
            f"{service.container.attrs['State']['StartedAt']}"
        )
        print(f"  service metric     demo_service_healthy = {service.metric():g}")
        print(f"  break -> verified  {total:.1f}s")
        print("  healer phases      " + ", ".join(f"{k} {v:.2f}s" for k, v in durations.items()))
        print(f"  heal record        {loop.healer.url}/api/v1/heals/{heal['id']}")
        return 0 if heal["outcome"] == "recovered" else 1
    finally:
        say("cleaning up: healer, Prometheus, Alertmanager, the service container")
        for factory in factories:
            factory.stop_all()
        if containers is not None:
            containers.cleanup()
        client.close()
        if args.keep:
            print(f"work dir kept: {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    raise SystemExit(main())
