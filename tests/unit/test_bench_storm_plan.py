"""The storm benchmark sends what its docstring says: 10,000 alerts in 1,000 fingerprints,
every copy of an alert with the same startsAt, and payloads healer's own parser accepts
(so a benchmark figure never rests on 422s)."""

from __future__ import annotations

from collections import Counter, defaultdict

from bench.storm_replicas import pg_placeholders
from bench.storm_sender import NOTIFICATIONS, REPLICAS, flood_body, storm_alert_count, storm_plan
from healer.payload import parse_webhook

STARTS_AT = 1795420800.0


def test_storm_plan_is_ten_thousand_copies_of_a_thousand_alerts() -> None:
    plan = storm_plan(100, 10)
    assert set(plan) == set(REPLICAS)
    assert storm_alert_count(100, 10) == 10_000
    starts: defaultdict[str, set[object]] = defaultdict(set)
    copies: Counter[str] = Counter()
    for groups in plan.values():
        assert len(groups) == 100
        for notes in groups:
            assert [n.kind for n in notes] == list(NOTIFICATIONS)
            assert [n.alerts for n in notes] == [5, 10, 10]
            for n in notes:
                message = parse_webhook(n.body(10, STARTS_AT))
                assert len(message.alerts) == n.alerts
                assert {a.labels["group"] for a in message.alerts} == {str(n.group)}
                for a in message.alerts:
                    starts[a.fingerprint].add(a.startsAt)
                    copies[a.fingerprint] += 2  # the original and its retry
    assert len(starts) == 1000
    assert all(len(s) == 1 for s in starts.values())
    assert sum(copies.values()) == 10_000
    # The first half of a group is in all 3 notifications, the rest in 2; x 2 replicas x 2.
    assert Counter(copies.values()) == {12: 500, 8: 500}


def test_flood_body_is_a_valid_group_of_distinct_alerts() -> None:
    message = parse_webhook(flood_body(12345, 50))
    assert len(message.alerts) == 50
    assert len({a.fingerprint for a in message.alerts}) == 50
    assert {a.labels["alertname"] for a in message.alerts} == {"BenchLeak"}
    other = parse_webhook(flood_body(12346, 50))
    assert not {a.fingerprint for a in message.alerts} & {a.fingerprint for a in other.alerts}


def test_storm_of_three_replicas_is_fifteen_thousand_copies_of_the_same_alerts() -> None:
    """bench/storm_replicas.py's storm: three Alertmanager replicas send the same
    notifications as two do, one replica more: 15,000 copies of the same 1,000 alerts."""
    plan = storm_plan(100, 10, 3)
    assert list(plan) == ["am-0", "am-1", "am-2"]
    assert storm_alert_count(100, 10, 3) == 15_000
    fingerprints = {
        a.fingerprint
        for notes in plan["am-2"]
        for n in notes
        for a in parse_webhook(n.body(10, STARTS_AT)).alerts
    }
    assert len(fingerprints) == 1000


def test_storm_journal_queries_become_postgresql_placeholders() -> None:
    """The storm's journal queries (written with ``?``) run on PostgreSQL as $1, $2..."""
    assert pg_placeholders("SELECT 1 WHERE a=? AND b=?") == "SELECT 1 WHERE a=$1 AND b=$2"
