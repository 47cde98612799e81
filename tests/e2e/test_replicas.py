"""Three `healer serve` replicas on one PostgreSQL store, on real processes (no mocks):
an Alertmanager storm spread over the replicas, a replica killed (-9) or frozen
(SIGSTOP) while it runs a heal, PostgreSQL down in the middle of a storm, and a fleet-wide
budget. Everything (replicas, Alertmanager cluster, Prometheus, the PostgreSQL server,
the demo container) is tests/support/scenarios/replicas.py's; actions are counted by dockerd's own
events or by the store's rows, never by a replica's word for it alone."""

from __future__ import annotations

import json
import time
from collections import Counter
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from bench.noop import noop_rule
from bench.procs import TOKEN
from bench.storm import send
from bench.storm_sender import STORM_ALERTNAME, storm_alert_count
from tests.support.env import wait_until
from tests.support.inprocess.payloads import iso
from tests.support.scenarios.faults import docker_restarts, kinds
from tests.support.scenarios.loop import DEMO_CONFIG
from tests.support.scenarios.replicas import Fleet, noop_alert, replica_fleet

pytestmark = [pytest.mark.e2e, pytest.mark.postgres, pytest.mark.prometheus]

# A noop heal is verified against a real Prometheus, as bench/storm.py does: recovered.
VERIFY = {"query": "vector(0)", "stable_for": "0s", "timeout": "30s"}
NO_LIMITS = {"safety": {"cooldown": "0s", "budget": {"max_actions": 1000}}}
# Where no replica dies, leases as long as the default: 2 s leases
# (tests/support/scenarios/replicas.py) expire under a storm on a loaded 2-core machine,
# and a live replica's heals get taken over.
DEFAULT_LEASE = {"replica": {"lease_ttl": "15s", "renew_every": "5s"}}
# Leases that outlive a 10 s PostgreSQL outage with room for a loaded machine: no renewal
# can land while the store is down, so with the default 15 s a lease renewed up to 5 s
# before the outage may expire just as PostgreSQL returns; another live replica then takes
# the heal over and, finding the alert no longer firing (this VERIFY), ends it no_action.
OUTAGE_LEASE = {"replica": {"lease_ttl": "60s", "renew_every": "5s"}}


def _demo_rules(**extra: Any) -> list[dict[str, Any]]:
    rules: list[dict[str, Any]] = yaml.safe_load(DEMO_CONFIG.read_text())["rules"]
    return [{**rule, **extra} for rule in rules]


def _metric(url: str, name: str, **labels: str) -> float:
    """The sum of ``name``'s samples carrying ``labels`` on ``url``/metrics."""
    with httpx.Client(timeout=5.0) as client:
        text = client.get(f"{url}/metrics").text
    return sum(
        sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items())
    )


def _replicas(heal: dict[str, Any]) -> list[str]:
    return [entry["replica"] for entry in heal["timeline"]]


def _first_heal(fleet: Fleet, phase: str) -> dict[str, Any]:
    """The first heal once it is in ``phase`` (bounded)."""

    def reached() -> dict[str, Any] | None:
        heals = fleet.heals()
        return fleet.heal(heals[-1]["id"]) if heals and heals[-1]["phase"] == phase else None

    return wait_until(
        reached, timeout=60, interval=0.1, what=f"a heal {phase}", ignore=(httpx.HTTPError,)
    )


def _heals_done(fleet: Fleet, rule: str, count: int, timeout: float) -> None:
    def done() -> bool:
        [row] = fleet.rows("SELECT count(*) AS n FROM heals WHERE rule=$1 AND phase='done'", rule)
        return bool(row["n"] >= count)

    wait_until(done, timeout=timeout, interval=0.5, what=f"{count} heals of {rule} done")


def _actions_per_heal(fleet: Fleet, rule: str) -> Counter[int]:
    """How many heals of ``rule`` have 0, 1, 2... ``act`` entries (a multiset)."""
    rows = fleet.rows(
        "SELECT h.id, count(e.seq) AS acts FROM heals h LEFT JOIN events e"
        " ON e.heal_id = h.id AND e.kind = 'act' WHERE h.rule=$1 GROUP BY h.id",
        rule,
    )
    return Counter(row["acts"] for row in rows)


# --- 1. the storm, spread over the replicas ----------------------------------------------


def test_a_storm_across_three_replicas_heals_each_alert_once(tmp_path: Path) -> None:
    """bench/storm_sender.py's storm (10,000 alerts in 1,000 fingerprints from two
    simulated HA Alertmanagers, every notification re-sent before it is answered) with
    Alertmanager replica i posting to healer replica i and its re-sends going to another
    replica: every answer 2xx, exactly 1,000 heals (one per fingerprint), one action per
    heal, and no receipt lost (the store's SUM(times_seen) equals the alerts answered
    2xx, read read-only from PostgreSQL)."""
    rules = [noop_rule("storm", STORM_ALERTNAME, "{{ labels.instance }}", verify=VERIFY)]
    with replica_fleet(tmp_path, rules=rules, overrides={**NO_LIMITS, **DEFAULT_LEASE}) as fleet:
        urls = [h.url for h in fleet.healers]
        sent = send(
            "storm",
            urls,
            TOKEN,
            tmp_path / "storm.json",
            150,
            "--groups",
            "100",
            "--per-group",
            "10",
            "--starts-at",
            str(time.time() - 60),
            "--deadline",
            "90",
        )
        _heals_done(fleet, "storm", 1000, timeout=100)

        assert sent["alerts_posted"] == storm_alert_count(100, 10) == 10_000
        assert sent["non_2xx"] == 0, sent["statuses"]
        assert sent["alerts_accepted"] == 10_000
        [alerts] = fleet.rows(
            "SELECT count(*) AS rows, sum(times_seen) AS receipts FROM alerts WHERE alertname=$1",
            STORM_ALERTNAME,
        )
        assert alerts == {"rows": 1000, "receipts": sent["alerts_accepted"]}
        heals = fleet.rows("SELECT fingerprint, outcome, reason FROM heals WHERE rule='storm'")
        assert len(heals) == 1000
        assert len({h["fingerprint"] for h in heals}) == 1000
        assert _actions_per_heal(fleet, "storm") == {1: 1000}
        assert Counter(h["outcome"] for h in heals) == {"recovered": 1000}, Counter(
            (h["outcome"], h["reason"]) for h in heals
        ).most_common(5)
        [actions] = fleet.rows(
            "SELECT count(*) AS n, count(DISTINCT heal_id) AS heals"
            " FROM safety_actions WHERE rule='storm'"
        )
        assert actions == {"n": 1000, "heals": 1000}
        started = fleet.rows("SELECT DISTINCT replica FROM events WHERE kind='matched'")
        assert {r["replica"] for r in started} <= {"r1", "r2", "r3"}


# --- 2. kill -9 of the replica running a heal -----------------------------------------------


@pytest.mark.docker
def test_kill_9_of_the_replica_verifying_a_heal_another_finishes_it(
    tmp_path: Path, containers, docker_client
) -> None:
    """The replica running a docker.restart heal is SIGKILLed while it verifies (stable_for
    10 s holds the heal there): once its lease expires another replica takes the heal
    over, resumes the verification without acting again and ends it `recovered`;
    dockerd's own events show exactly one restart, and the timeline names both replicas."""
    service = containers.run_service()
    with replica_fleet(tmp_path, rules=_demo_rules(), service=service, stable_for="10s") as fleet:
        since = time.time()
        service.break_()
        heal = _first_heal(fleet, "verifying")
        [acted] = [e["replica"] for e in heal["timeline"] if e["kind"] == "act"]

        fleet.sigkill(fleet.index(acted))  # returns once the process is gone
        killed_at = time.time()
        done = fleet.wait_done(heal["id"])

        assert done["outcome"] == "recovered", done["reason"]
        assert kinds(done).count("act") == 1
        others = set(_replicas(done)) - {acted}
        assert acted in _replicas(done) and others, _replicas(done)
        # Every entry after the kill is another replica's (the killed one may still have
        # written samples between the look at the heal above and the kill).
        after = [e for e in done["timeline"] if e["at"] > killed_at]
        assert after and acted not in {e["replica"] for e in after}, after
        assert docker_restarts(docker_client, service.name, since) == 1
        assert len(fleet.heals()) == 1


# --- 3. SIGSTOP of the replica holding a heal, past its lease ----------------------------------


@pytest.mark.docker
def test_a_replica_frozen_past_its_lease_neither_acts_nor_writes_after_sigcont(
    tmp_path: Path, containers, docker_client
) -> None:
    """The replica holding a heal is SIGSTOPped while the heal waits for min_firing (12 s)
    to pass, so the stop lands before any action: another replica takes the heal over
    once the lease expired, waits out the rest, restarts the container and finishes the
    heal. After SIGCONT the frozen replica logs "lease lost" and writes nothing more: its
    timeline entries are the same before and after, none of them an act, and dockerd's own
    events show exactly one restart."""
    service = containers.run_service()
    with replica_fleet(
        tmp_path, rules=_demo_rules(min_firing="12s"), service=service, stable_for="3s"
    ) as fleet:
        since = time.time()
        service.break_()
        heal = _first_heal(fleet, "pending")
        [holder] = fleet.rows("SELECT owner FROM heals WHERE id=$1", heal["id"])
        frozen = fleet.index(holder["owner"])
        fleet.sigstop(frozen)

        done = fleet.wait_done(heal["id"])
        before = fleet.rows(
            "SELECT heal_id, seq, kind FROM events WHERE replica=$1", holder["owner"]
        )
        fleet.sigcont(frozen)
        wait_until(
            lambda: "lease lost" in fleet.healers[frozen].log_tail(400),
            timeout=30,
            interval=0.2,
            what=f"{holder['owner']} logging lease lost",
        )
        # It is running again: its heartbeat (every 0.5 s) has had its turn.
        wait_until(
            lambda: fleet.ready(frozen).status_code == 200,
            timeout=30,
            interval=0.2,
            what=f"{holder['owner']} ready",
            ignore=(httpx.HTTPError,),
        )
        time.sleep(1.5)  # three heartbeats: room for any late write to show

        final = fleet.heal(heal["id"])
        assert done["outcome"] == final["outcome"] == "recovered", final["reason"]
        assert final["timeline"] == done["timeline"]
        after = fleet.rows(
            "SELECT heal_id, seq, kind FROM events WHERE replica=$1", holder["owner"]
        )
        assert after == before
        assert "act" not in {e["kind"] for e in after}
        [act] = [e for e in final["timeline"] if e["kind"] == "act"]
        assert act["replica"] != holder["owner"]
        assert docker_restarts(docker_client, service.name, since) == 1
        assert fleet.healers[frozen].running


# --- 4. PostgreSQL down for 10 s in the middle of a storm ----------------------------------------


def test_postgresql_down_mid_storm_answers_503_and_loses_nothing(tmp_path: Path) -> None:
    """Alerts are posted to the Alertmanager cluster's API (every peer, as Prometheus does)
    in ten batches; PostgreSQL is stopped for 10 s after the fourth. Meanwhile the replicas
    answer 503 (a direct post gets 503, Alertmanager's own metrics count failed
    notifications) and /health/ready is down; once PostgreSQL is back, Alertmanager's
    retries land: one heal per alert sent, none lost, one action per heal."""
    rules = [noop_rule("outage", "ReplicaOutage", "{{ labels.instance }}", verify=VERIFY)]
    with replica_fleet(tmp_path, rules=rules, overrides={**NO_LIMITS, **OUTAGE_LEASE}) as fleet:
        sent: list[str] = []

        def batch(b: int) -> None:
            names = [f"i-{b}-{k}" for k in range(10)]
            # One startsAt for every peer, as Prometheus sends it (a peer left to set its
            # own would make each copy a different alert: fingerprint + startsAt).
            alerts = [
                {
                    "labels": {"alertname": "ReplicaOutage", "instance": n},
                    "startsAt": iso(time.time()),
                }
                for n in names
            ]
            for am in fleet.alertmanagers:
                am.post_alerts(alerts)
            sent.extend(names)

        for b in range(4):
            batch(b)
        fleet.server.stop()
        try:
            for b in range(4, 8):
                batch(b)
                time.sleep(2.5)  # the outage lasts these four pauses: 10 s
            refused = fleet.post(0, [noop_alert("Unmatched", "probe", time.time())])
            ready = fleet.ready(1)
            am_failed = [
                _metric(am.url, "alertmanager_notifications_failed_total", integration="webhook")
                for am in fleet.alertmanagers
            ]
            answered_503 = sum(
                _metric(h.url, "healer_webhook_requests_total", code="503") for h in fleet.healers
            )
        finally:
            fleet.server.start()
        for b in range(8, 10):
            batch(b)
        _heals_done(fleet, "outage", len(sent), timeout=90)

        assert refused.status_code == 503, refused.text
        assert ready.status_code == 503, ready.text
        assert any(check.get("status") == "down" for check in ready.json()["checks"].values()), (
            ready.json()
        )
        assert sum(am_failed) > 0 and answered_503 > 0, (am_failed, answered_503)
        heals = fleet.rows("SELECT labels, outcome, reason FROM heals WHERE rule='outage'")
        instances = Counter(json.loads(h["labels"])["instance"] for h in heals)
        assert instances == Counter(sent)  # one heal per alert sent: none lost, none twice
        assert Counter(h["outcome"] for h in heals) == {"recovered": len(sent)}, Counter(
            (h["outcome"], (h["reason"] or "")[:160]) for h in heals
        )
        assert _actions_per_heal(fleet, "outage") == {1: len(sent)}
        [actions] = fleet.rows("SELECT count(*) AS n FROM safety_actions WHERE rule='outage'")
        assert actions["n"] == len(sent)
        assert all(fleet.ready(i).status_code == 200 for i in range(3))


# --- 5. a fleet-wide budget -------------------------------------------------------------------


def test_a_budget_of_two_holds_across_replicas_and_escalates_once(
    tmp_path: Path, webhook_recorder
) -> None:
    """A rule with a budget of 2 actions per hour on one target; the same alert relapses
    (new startsAt each time) four times, each relapse delivered to a different replica:
    2 actions in all, the third heal opens the circuit and escalates (exactly one POST to
    the webhook notifier), the fourth meets the open circuit and is suppressed."""
    rules = [
        noop_rule(
            "relapse",
            "Relapsing",
            "relapse-target",
            verify=VERIFY,
            budget={"max_actions": 2, "window": "1h"},
        )
    ]
    overrides = {
        "safety": {"cooldown": "0s"},
        "notify": [{"kind": "webhook", "url_env": "PAGER_URL", "retries": 0}],
    }
    with replica_fleet(
        tmp_path,
        rules=rules,
        overrides=overrides,
        env={"PAGER_URL": f"{webhook_recorder.url}/pager"},
    ) as fleet:
        first = time.time() - 600
        outcomes = []
        for relapse, replica in enumerate([0, 1, 2, 0]):
            answer = fleet.post(replica, [noop_alert("Relapsing", "web-1", first + 60 * relapse)])
            assert answer.status_code == 200, answer.text
            [started] = answer.json()["started"]
            outcomes.append(fleet.wait_done(started["heal_id"])["outcome"])

        assert outcomes == ["recovered", "recovered", "escalated", "suppressed"]
        assert _actions_per_heal(fleet, "relapse") == {1: 2, 0: 2}
        [actions] = fleet.rows("SELECT count(*) AS n FROM safety_actions WHERE rule='relapse'")
        assert actions["n"] == 2
        escalations = [r for r in webhook_recorder.snapshot() if r.path == "/pager"]
        assert len(escalations) == 1, escalations
        assert escalations[0].body["rule"] == "relapse"
        heals = fleet.heals(rule="relapse")
        ran = {fleet.heal(h["id"])["timeline"][0]["replica"] for h in heals}
        assert ran == {"r1", "r2", "r3"}
