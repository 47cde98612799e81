"""Faults in the services around healer, on the whole real loop (busybox service, real
Prometheus, Alertmanager, dockerd and a `healer serve` process): the journal's disk
full, dockerd dying mid-restart, Prometheus dying mid-verification, an HA pair of
Alertmanagers both delivering, and Alertmanager re-sending after a timeout."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from tests.support import ContainerFactory, build_busybox_image, wait_until
from tests.support.scenarios.faults import (
    VariantLoop,
    cluster_args,
    docker_restarts,
    journal_rows,
    kinds,
    start_variant_loop,
    wait_for_done,
    wait_for_phase,
)
from tests.support.scenarios.loop import DEMO_CONFIG, Loop, start_loop
from tests.support.servers.disk import small_disk
from tests.support.servers.private_services import PrivateDockerd, private_dockerd
from tests.support.servers.proxy import SlowAnswerProxy

pytestmark = [pytest.mark.e2e, pytest.mark.docker, pytest.mark.prometheus]


def _ready(loop: Loop) -> httpx.Response:
    with httpx.Client(timeout=10.0) as client:
        return client.get(f"{loop.healer.url}/health/ready")


def _alive(loop: Loop) -> bool:
    with httpx.Client(timeout=5.0) as client:
        return client.get(f"{loop.healer.url}/health").json() == {"status": "ok"}


def _demo_rules(**params: Any) -> list[dict[str, Any]]:
    rules: list[dict[str, Any]] = yaml.safe_load(DEMO_CONFIG.read_text())["rules"]
    for rule in rules:
        rule["params"] = {**rule["params"], **params}
    return rules


@pytest.fixture
def variant(tmp_path: Path, containers, prometheus, alertmanager, healer_process):
    def make(**kwargs: Any) -> VariantLoop:
        return start_variant_loop(
            workdir=tmp_path,
            service=containers.run_service(),
            prometheus=prometheus,
            alertmanager=alertmanager,
            healer=healer_process,
            **kwargs,
        )

    return make


# --- the journal's disk is full ------------------------------------------------------------


def test_full_journal_disk_503s_until_space_then_heals_once(
    tmp_path: Path, containers, prometheus, alertmanager, healer_process, docker_client
) -> None:
    """With the journal on a full filesystem (a real 4 MiB tmpfs filled to ENOSPC) the
    webhook answers 503, Alertmanager keeps retrying and /health/ready reports the journal
    down; once space is freed - no restart - the next retry is journaled exactly once
    and the heal ends `recovered` after one real restart."""
    with small_disk(tmp_path / "disk") as disk:
        journal = disk.path / "journal.db"
        loop = start_loop(
            workdir=tmp_path,
            service=containers.run_service(),
            prometheus=prometheus,
            alertmanager=alertmanager,
            healer=healer_process,
            overrides={"journal": str(journal)},
        )
        try:
            disk.fill()
            since = time.time()
            loop.service.break_()
            wait_until(
                lambda: (loop.metric("healer_webhook_requests_total", {"code": "503"}) or 0) >= 2,
                timeout=60,
                interval=0.25,
                what="Alertmanager retrying on 503",
            )
            ready = _ready(loop)
            assert ready.status_code == 503
            assert ready.json()["checks"]["journal"]["status"] == "down"
            assert "full" in ready.json()["checks"]["journal"]["error"]
            assert loop.heals() == []

            disk.free()
            heal = loop.wait_for_finished_heal()

            assert heal["outcome"] == "recovered", (heal["reason"], loop.healer.log_tail())
            assert len(loop.heals()) == 1
            assert docker_restarts(docker_client, loop.service.name, since) == 1
            firing = journal_rows(journal, "SELECT * FROM alerts WHERE status='firing'")
            assert len(firing) == 1 and firing[0]["heal_id"] == heal["id"]
            assert _ready(loop).json()["checks"]["journal"] == {"status": "up"}
        finally:
            loop.healer.stop()  # before the tmpfs goes away under its journal


# --- dockerd dies during a restart -----------------------------------------------------------


@pytest.fixture
def engine(tmp_path: Path) -> Iterator[PrivateDockerd]:
    with private_dockerd() as engine:
        yield engine


def _wait_for_docker_event(
    engine: PrivateDockerd, container: str, event: str, since: float
) -> None:
    def seen() -> bool:
        with contextlib.closing(engine.client(timeout=10)) as client:
            events = client.events(
                since=int(since) - 1,
                until=int(time.time()) + 1,
                decode=True,
                filters={"container": container, "event": event},
            )
            try:
                return any(True for _ in events)
            finally:
                events.close()

    wait_until(seen, timeout=60, interval=0.2, what=f"dockerd event {event} on {container}")


def test_dockerd_killed_mid_restart_fails_the_heal_then_heals_once_back(
    tmp_path: Path, engine: PrivateDockerd, prometheus, alertmanager, healer_process
) -> None:
    """A private dockerd is SIGKILLed while it restarts the container (PID 1 is frozen, so
    the restart waits for its stop timeout): the heal ends `failed` with the connection
    error recorded and healer stays up, reporting docker down. Once dockerd is back, the
    next alert heals normally (`recovered`, one real restart)."""
    client = engine.client()
    factory = ContainerFactory(client, build_busybox_image(client, tmp_path / "image"))
    try:
        service = factory.run_service()
        loop = start_loop(
            workdir=tmp_path,
            service=service,
            prometheus=prometheus,
            alertmanager=alertmanager,
            healer=healer_process,
            timeout="40s",
            overrides={
                "docker": {"base_url": engine.base_url},
                "rules": _demo_rules(stop_timeout=60),
                # A failed act still starts the rule's cooldown (it
                # may have half-happened); this test is about dockerd,
                # so the second alert must not wait 5m for it.
                "safety": {"cooldown": "0s"},
            },
        )
        service.break_()
        service.container.reload()
        # A stopped process gets SIGTERM only once continued: `docker restart` waits.
        os.kill(service.container.attrs["State"]["Pid"], signal.SIGSTOP)
        since = time.time()
        wait_for_phase(loop, "acting")
        _wait_for_docker_event(engine, service.name, "kill", since)  # the restart's SIGTERM

        engine.kill()
        failed = loop.wait_for_finished_heal()

        assert failed["outcome"] == "failed", failed["reason"]
        assert failed["reason"].startswith("act failed:"), failed["reason"]
        assert "Connection" in failed["reason"], failed["reason"]
        assert "act" not in kinds(failed)
        assert _alive(loop)
        assert _ready(loop).json()["checks"]["docker"]["status"] == "down"

        engine.start()
        container = client.containers.get(service.name)
        if container.status != "running":  # a restarted dockerd kills what it left running
            container.start()
        service.wait_for_metric(1, timeout=20)
        wait_until(
            lambda: not loop.firing(), timeout=30, interval=0.5, what="the first alert resolved"
        )
        since = time.time()
        service.break_()
        second = wait_until(
            lambda: next(
                (h for h in loop.heals() if h["id"] != failed["id"] and h["phase"] == "done"), None
            ),
            timeout=90,
            interval=0.5,
            what="a second heal",
            ignore=(httpx.HTTPError,),
        )

        assert second["outcome"] == "recovered", (second["reason"], loop.healer.log_tail())
        assert docker_restarts(client, service.name, since) == 1
        assert _ready(loop).json()["checks"]["docker"] == {"status": "up"}
    finally:
        factory.cleanup()
        client.close()


# --- Prometheus dies during verification -------------------------------------------------------


def test_prometheus_killed_mid_verify_ends_unverified_never_recovered(
    tmp_path: Path, containers, prometheus, alertmanager, healer_process
) -> None:
    """Prometheus SIGKILLed while a heal verifies: every later sample is an error and the
    heal ends `unverified` at its deadline - never `recovered`, although the restart did
    fix the service."""
    loop = start_loop(
        workdir=tmp_path,
        service=containers.run_service(),
        prometheus=prometheus,
        alertmanager=alertmanager,
        healer=healer_process,
        stable_for="15s",
        timeout="20s",
    )
    loop.service.break_()
    heal = wait_for_phase(loop, "verifying")
    loop.prometheus.kill()

    done = wait_for_done(loop, heal["id"], timeout=60)

    assert done["outcome"] == "unverified", done["reason"]
    assert "Prometheus unreachable" in done["reason"]
    samples = [e["data"] for e in done["timeline"] if e["kind"] == "verify_sample"]
    assert samples[-1]["healthy"] is None and samples[-1]["error"]
    assert loop.service.metric() == 1  # healed in fact, but nobody could verify it
    assert loop.metric("healer_heals_total", {"outcome": "recovered"}) in (None, 0)


# --- Alertmanager delivers the same alert twice --------------------------------------------------


def _cluster(am: Any) -> tuple[str, int]:
    with httpx.Client(timeout=5.0) as client:
        cluster = client.get(f"{am.url}/api/v2/status").json()["cluster"]
    return cluster["status"], len(cluster.get("peers") or [])


def test_an_ha_pair_of_alertmanagers_both_delivering_causes_one_action(
    variant, docker_client
) -> None:
    """Two real Alertmanagers clustered over loopback, both alerted by Prometheus and both
    posting the group to healer: healer receives the alert twice and acts once."""
    proxies: list[SlowAnswerProxy] = []

    def via_proxy(healer_url: str) -> str:
        # healer's answers reach the peers 2 s late; a peer records (and gossips) its
        # delivery only once answered, so neither learns of the other's in time and both
        # deliver, as a slow or partitioned pair would.
        proxies.append(SlowAnswerProxy(healer_url, delay=2.0))
        return proxies[-1].url

    try:
        since = time.time()
        loop = variant(alertmanagers=2, am_args=cluster_args(2), webhook_base=via_proxy)
        for am in loop.alertmanagers:
            wait_until(
                lambda am=am: _cluster(am) == ("ready", 2),
                timeout=60,
                interval=0.25,
                what="a settled 2-peer Alertmanager cluster",
                ignore=(httpx.HTTPError, KeyError),
            )

        loop.service.break_()
        heal = loop.wait_for_finished_heal()
        firing = proxies[0].wait_for_posts(2, where=lambda f: _firing(f.body))

        # The two peers' posts race: which one arrives first (and starts the heal) is not
        # known, so the answers are judged as a set, never by position.
        answers = [json.loads(f.answer) for f in firing]
        assert all(f.status == 200 for f in firing)
        started = [s["heal_id"] for a in answers for s in a["started"]]
        duplicates = [d["heal_id"] for a in answers for d in a["duplicates"]]
        assert started == [heal["id"]]
        assert duplicates == [heal["id"]] * (len(firing) - 1)  # every other post
        assert heal["outcome"] == "recovered", heal["reason"]
        assert len(loop.heals()) == 1
        assert kinds(heal).count("act") == 1
        assert docker_restarts(docker_client, loop.service.name, since) == 1
    finally:
        for proxy in proxies:
            proxy.close()


def _firing(body: bytes) -> bool:
    return bool(json.loads(body).get("status") == "firing")


def test_a_resend_after_alertmanager_timed_out_causes_one_action(variant, docker_client) -> None:
    """healer's answer to the first POST reaches Alertmanager too late (a loopback proxy
    holds it past Alertmanager's 10 s notify timeout, although healer journaled the alert
    and started the heal): Alertmanager sends the group again, healer answers it as a
    duplicate of the running heal, and the container is restarted once."""
    proxies: list[SlowAnswerProxy] = []

    def via_proxy(healer_url: str) -> str:
        proxies.append(SlowAnswerProxy(healer_url, hold_first=True))
        return proxies[-1].url

    try:
        since = time.time()
        loop = variant(webhook_base=via_proxy, stable_for="2s", timeout="60s")
        # Broken across restarts, so that the alert still fires when Alertmanager resends
        # (it does not resend a group whose alerts all resolved meanwhile)...
        loop.service.break_(sticky=True)
        first, resend, *_ = proxies[0].wait_for_posts(2, where=lambda f: _firing(f.body))
        loop.service.repair()  # ... then fixed, so that the verification can succeed.
        heal = loop.wait_for_finished_heal()

        assert first.answered_late and first.status == 200
        [started] = json.loads(first.answer)["started"]
        assert resend.status == 200
        assert json.loads(resend.answer)["duplicates"] == [
            {"fingerprint": started["fingerprint"], "heal_id": heal["id"]}
        ]
        assert heal["outcome"] == "recovered", heal["reason"]
        assert len(loop.heals()) == 1
        assert docker_restarts(docker_client, loop.service.name, since) == 1
    finally:
        for proxy in proxies:
            proxy.close()
