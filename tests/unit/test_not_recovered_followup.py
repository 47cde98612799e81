"""What follows a heal that ended ``not_recovered`` while its alert keeps firing
(healer/followup.py): ``on_not_recovered: escalate`` (the default) tells the notifiers once
per alert identity; ``retry`` heals again after the cooldown, within the budget. The trigger
is Alertmanager's re-send of the same alert (a duplicate); the decision is journal-backed:
exactly once when re-sends race, and kept across a restart.

In-process healer on the real journal and executor; Prometheus is a stand-in on 127.0.0.1
that reports the alert still firing (so verification ends ``not_recovered``), notifications
go to a real HTTP server (WebhookRecorder).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from bench.noop import Noop
from healer.config import parse_config
from healer.errors import ConfigError
from healer.followup import Claim, claim, policy
from healer.notify import Escalation, chat_text
from healer.plugins import HandlerRegistry
from healer.rules import RuleSet
from healer.store import HealPlan, SqliteStore, alert_key_time
from tests.support.inprocess.gates import (
    BASE,
    fingerprint,
    fire,
    gates_config,
    kinds,
    webhook_notifier,
    with_notify,
)
from tests.support.inprocess.inproc import InProcessHealer, running_healer
from tests.support.inprocess.payloads import alert_payload
from tests.support.servers.prometheus_standin import StillFiring
from tests.support.servers.webhook import WebhookRecorder

RESENDS = 8  # re-sends posted at once: an HA pair plus retries, racing
BASE_KEY = alert_key_time(BASE)


@pytest.fixture
def prom() -> Iterator[StillFiring]:
    with StillFiring() as standin:
        yield standin


def followup_config(
    tmp_path: Path,
    prom: StillFiring,
    *,
    rule: dict[str, Any] | None = None,
    safety: dict[str, Any] | None = None,
    notify: bool = True,
) -> dict[str, Any]:
    """Rule ``poke`` verifies against the stand-in: not_recovered after 0.3 s of firing;
    one webhook notifier unless ``notify`` is False."""
    config = gates_config(
        tmp_path, safety=safety, rule=rule, notify=[webhook_notifier()] if notify else None
    )
    config["prometheus"] = {"url": prom.url, "timeout": "2s"}
    config["rules"][0]["verify"] = {"stable_for": "0s", "timeout": "0.3s", "interval": "0.05s"}
    return config


async def resend(h: InProcessHealer, times: int = RESENDS, target: str = "t1") -> list[str]:
    """Post the alert ``times`` at once (the same fingerprint and startsAt as ``fire(h,
    target)``); every answer must be 200 and start nothing. Returns the heal ids the
    duplicates name; waits until what they triggered is decided."""
    body = alert_payload(
        {"alertname": "Poke", "target": target},
        fingerprint=fingerprint("Poke", target),
        starts_at=BASE,
    )
    answers = await asyncio.gather(
        *(h.client.post("/api/v1/alerts", json=body) for _ in range(times))
    )
    assert all(a.status_code == 200 for a in answers), [a.text for a in answers]
    assert all(a.json()["started"] == [] for a in answers)
    await h.services.followups.drain()
    return [d["heal_id"] for a in answers for d in a.json()["duplicates"]]


async def heals(h: InProcessHealer) -> list[dict[str, Any]]:
    """Every heal, oldest first, each with its timeline."""
    listed = await h.services.journal.list_heals(limit=100)
    return [await h.services.journal.get_heal(x["id"]) or {} for x in reversed(listed)]


async def not_recovered(h: InProcessHealer) -> dict[str, Any]:
    heal_id = await fire(h, "t1")
    assert heal_id is not None
    heal = await h.wait_for_outcome(heal_id, timeout=15)
    assert heal["outcome"] == "not_recovered", heal["reason"]
    return heal


def notified(recorder: WebhookRecorder, event: str = "not_recovered") -> list[dict[str, Any]]:
    return [r.body for r in recorder.snapshot() if r.body and r.body.get("event") == event]


# ---- escalate (the default) ---------------------------------------------------------------


async def test_escalate_tells_the_notifiers_exactly_once_while_resends_race(
    tmp_path: Path,
    handlers: HandlerRegistry,
    noop: Noop,
    prom: StillFiring,
    webhook_recorder: WebhookRecorder,
) -> None:
    """The default: re-sends racing after the heal ended not_recovered notify once (event
    not_recovered, naming rule, target and heal); the heal's timeline records it once; later
    re-sends notify nobody and no heal acts again."""
    async with running_healer(
        followup_config(tmp_path, prom),
        handlers=handlers,
        secrets=with_notify(webhook_recorder.url),
    ) as h:
        heal = await not_recovered(h)
        named = await resend(h)
        named += await resend(h)
        after = await h.services.journal.get_heal(heal["id"]) or {}
        every = await heals(h)
        counted = h.sample("healer_follow_ups_total", {"rule": "poke", "kind": "escalate"})
    assert set(named) == {heal["id"]}
    [sent] = notified(webhook_recorder)
    assert (sent["rule"], sent["target"], sent["heal_id"]) == ("poke", "test:t1", heal["id"])
    assert sent["labels"] == {"alertname": "Poke", "target": "t1"}
    assert kinds(after).count("not_recovered_escalation") == 1
    [delivery] = [e["data"] for e in after["timeline"] if e["kind"] == "escalation"]
    assert delivery["ok"] is True and delivery["notifier"] == "webhook[0]"
    assert after["outcome"] == "not_recovered"  # the heal's own outcome is unchanged
    assert len(every) == 1 and len(noop.acts) == 1
    assert counted == 1


async def test_the_escalation_decision_survives_restarts(
    tmp_path: Path,
    handlers: HandlerRegistry,
    noop: Noop,
    prom: StillFiring,
    webhook_recorder: WebhookRecorder,
) -> None:
    """A heal that ended not_recovered before a restart is escalated by the first re-send
    after it (the candidates come from the journal); after another restart, re-sends of the
    same alert notify nobody again."""
    config = followup_config(tmp_path, prom)
    secrets = with_notify(webhook_recorder.url)
    async with running_healer(config, handlers=handlers, secrets=secrets) as h:
        heal = await not_recovered(h)
    async with running_healer(config, handlers=handlers, secrets=secrets) as h:
        await resend(h)
    async with running_healer(config, handlers=handlers, secrets=secrets) as h:
        await resend(h)
        after = await h.services.journal.get_heal(heal["id"]) or {}
    assert len(notified(webhook_recorder)) == 1
    assert kinds(after).count("escalation") == 1
    assert len(noop.acts) == 1


async def test_an_escalation_whose_process_died_before_delivering_is_sent_after_restart(
    tmp_path: Path, handlers: HandlerRegistry, prom: StillFiring, webhook_recorder: WebhookRecorder
) -> None:
    """A follow-up claimed by a process that never recorded its deliveries (killed between
    the two writes) is delivered by the next process that meets a re-send, once."""
    config = followup_config(tmp_path, prom)
    secrets = with_notify(webhook_recorder.url)
    async with running_healer(config, handlers=handlers, secrets=secrets) as h:
        heal = await not_recovered(h)
        # What that process did before it died: its claim (no deliveries recorded).
        claimed = await h.services.journal.claim_follow_up(
            heal["id"],
            run_id="a-dead-process",
            now=time.time(),
            policy=policy(h.services.config, lambda _: None),
        )
        assert claimed.kind == "escalate"
    async with running_healer(config, handlers=handlers, secrets=secrets) as h:
        await resend(h)
        await resend(h)
        after = await h.services.journal.get_heal(heal["id"]) or {}
    assert len(notified(webhook_recorder)) == 1
    assert kinds(after).count("escalation") == 1


async def test_a_resolved_alert_is_not_followed_up(
    tmp_path: Path,
    handlers: HandlerRegistry,
    noop: Noop,
    prom: StillFiring,
    webhook_recorder: WebhookRecorder,
) -> None:
    """Once Alertmanager reported the alert resolved, a late firing re-send (a slow HA
    peer) is still a duplicate of the heal, but neither escalation nor retry follows,
    whatever the rule says."""
    for mode in ("escalate", "retry"):
        path = tmp_path / mode
        path.mkdir()
        async with running_healer(
            followup_config(path, prom, rule={"on_not_recovered": mode}),
            handlers=handlers,
            secrets=with_notify(webhook_recorder.url),
        ) as h:
            await not_recovered(h)
            assert await fire(h, "t1", status="resolved") is None
            body = alert_payload(
                {"alertname": "Poke", "target": "t1"},
                fingerprint=fingerprint("Poke", "t1"),
                starts_at=BASE,
            )
            late = (await h.client.post("/api/v1/alerts", json=body)).json()
            await h.services.followups.drain()
            assert len(late["duplicates"]) == 1
            assert len(await heals(h)) == 1
    assert notified(webhook_recorder) == []
    assert len(noop.acts) == 2


async def test_a_recovered_heal_is_never_followed_up(
    tmp_path: Path,
    handlers: HandlerRegistry,
    noop: Noop,
    prom: StillFiring,
    webhook_recorder: WebhookRecorder,
) -> None:
    """Only not_recovered is followed up: re-sends of an alert whose heal recovered (or
    ended any other way) escalate nothing and start nothing."""
    prom.firing = False
    async with running_healer(
        followup_config(tmp_path, prom, rule={"on_not_recovered": "retry"}),
        handlers=handlers,
        secrets=with_notify(webhook_recorder.url),
    ) as h:
        heal_id = await fire(h, "t1")
        assert heal_id is not None
        assert (await h.wait_for_outcome(heal_id, timeout=15))["outcome"] == "recovered"
        prom.firing = True
        await resend(h)
        assert len(await heals(h)) == 1
    assert webhook_recorder.snapshot() == []
    assert len(noop.acts) == 1


# ---- retry ------------------------------------------------------------------------------


async def test_retry_heals_again_once_per_not_recovered_until_the_budget_escalates(
    tmp_path: Path,
    handlers: HandlerRegistry,
    noop: Noop,
    prom: StillFiring,
    webhook_recorder: WebhookRecorder,
) -> None:
    """``on_not_recovered: retry`` (on the rule; the default stays escalate) and budget 3:
    each round of racing re-sends after a not_recovered starts exactly one new heal of the
    same alert, which acts through the gates; the fourth heal finds the budget spent, opens
    the circuit and ends escalated (one circuit notification); re-sends after that start
    nothing. Never a not_recovered escalation."""
    config = followup_config(
        tmp_path,
        prom,
        rule={"on_not_recovered": "retry"},
        safety={"budget": {"max_actions": 3, "window": "1h"}},
    )
    async with running_healer(
        config, handlers=handlers, secrets=with_notify(webhook_recorder.url)
    ) as h:
        first = await not_recovered(h)
        chain = [first]
        for _ in range(3):
            named = await resend(h)
            assert set(named) == {chain[-1]["id"]}  # re-sends follow the newest heal
            newest = (await heals(h))[-1]
            assert newest["id"] != chain[-1]["id"]
            chain.append(await h.wait_for_outcome(newest["id"], timeout=15))
        await resend(h)
        every = await heals(h)
    assert [x["outcome"] for x in chain] == ["not_recovered"] * 3 + ["escalated"]
    assert chain[-1]["reason"].startswith("budget spent: 3 actions by poke on test:t1")
    assert [x["id"] for x in every] == [x["id"] for x in chain]
    for before, after in itertools.pairwise(every):
        [retried] = [e["data"] for e in before["timeline"] if e["kind"] == "retried"]
        assert retried == {"retry_heal_id": after["id"]}
        [origin] = [e["data"] for e in after["timeline"] if e["kind"] == "retry_of"]
        assert origin["heal_id"] == before["id"]
        assert after["source"] == "retry" and after["fingerprint"] == first["fingerprint"]
    assert len(noop.acts) == 3
    assert notified(webhook_recorder) == []
    assert len(notified(webhook_recorder, "circuit_open")) == 1


async def test_retry_waits_for_the_cooldown(
    tmp_path: Path, handlers: HandlerRegistry, noop: Noop, prom: StillFiring
) -> None:
    """Within the rule's cooldown since it acted, re-sends start nothing (and settle
    nothing): the same alert's re-send after a restart with the cooldown over (here: set to
    0s) is the one that retries, once."""
    config = followup_config(
        tmp_path, prom, notify=False, safety={"on_not_recovered": "retry", "cooldown": "1h"}
    )
    async with running_healer(config, handlers=handlers) as h:
        first = await not_recovered(h)
        await resend(h)
        await resend(h)
        waiting = await heals(h)
    config["safety"]["cooldown"] = "0s"
    async with running_healer(config, handlers=handlers) as h:
        await resend(h)
        every = await heals(h)
        retry = await h.wait_for_outcome(every[-1]["id"], timeout=15)
    assert [x["id"] for x in waiting] == [first["id"]]
    assert len(every) == 2 and retry["outcome"] == "not_recovered"
    assert len(noop.acts) == 2


async def test_a_retry_decided_just_before_a_crash_runs_at_the_next_start(
    tmp_path: Path, handlers: HandlerRegistry, noop: Noop, prom: StillFiring
) -> None:
    """The retry heal is written in the decision's own transaction. Decided on the journal
    while no healer runs (as if killed between that commit and running the heal), a second
    decision finds it taken; the next start runs the pending retry, once."""
    config = followup_config(tmp_path, prom, rule={"on_not_recovered": "retry"}, notify=False)
    async with running_healer(config, handlers=handlers) as h:
        first = await not_recovered(h)
    decided, _ = await _decide(tmp_path, config, handlers, first["id"], times=2)
    [retry_job] = [d.retry for d in decided if d.retry is not None]
    assert sorted(d.kind for d in decided) == ["none", "retry"]
    async with running_healer(config, handlers=handlers) as h:
        retry = await h.wait_for_outcome(retry_job.heal_id, timeout=15)
        every = await heals(h)
    assert [x["id"] for x in every] == [first["id"], retry["id"]]
    assert retry["outcome"] == "not_recovered" and "resumed" in kinds(retry)
    assert len(noop.acts) == 2


@pytest.mark.parametrize("mode", ["escalate", "retry"])
async def test_racing_decisions_on_the_journal_decide_once(
    tmp_path: Path, handlers: HandlerRegistry, prom: StillFiring, mode: str
) -> None:
    """Below the process' own guard: decisions for one not_recovered heal queued on the
    journal at once (as racing re-sends would) record exactly one follow-up, of the
    rule's kind; every other one decides nothing."""
    config = followup_config(tmp_path, prom, rule={"on_not_recovered": mode}, notify=False)
    async with running_healer(config, handlers=handlers) as h:
        first = await not_recovered(h)
    decided, rows = await _decide(tmp_path, config, handlers, first["id"], times=RESENDS)
    assert sorted(d.kind for d in decided) == sorted(["none"] * (RESENDS - 1) + [mode])
    assert [(r[0], r[1]) for r in rows] == [(first["id"], mode)]


async def _decide(
    tmp_path: Path, config: dict[str, Any], handlers: HandlerRegistry, heal_id: str, *, times: int
) -> tuple[list[Claim], list[Any]]:
    """``times`` decisions for ``heal_id`` queued at once on the journal, as one healer
    process would make them (no healer running); and the follow_ups rows after."""
    parsed = parse_config(config, handlers)
    rules = RuleSet(parsed)

    def plan(name: str) -> HealPlan | None:
        conf = rules.get(name)
        return rules.plan(conf) if conf is not None else None

    journal = await SqliteStore.open(tmp_path / "journal.db")
    try:
        now = time.time()
        decided = await asyncio.gather(
            *(
                claim(journal, heal_id, run_id="one-process", now=now, policy=policy(parsed, plan))
                for _ in range(times)
            )
        )
    finally:
        await journal.close()
    with contextlib.closing(
        sqlite3.connect(f"file:{tmp_path / 'journal.db'}?mode=ro", uri=True)
    ) as db:
        rows = db.execute("SELECT heal_id, kind FROM follow_ups").fetchall()
    return list(decided), rows


def test_the_not_recovered_message_names_the_heal_and_cannot_ping() -> None:
    """The chat text of a not_recovered escalation names rule, target and heal, says healer
    will not act again, and quotes alert data inertly (no Slack ``<!channel>``, no
    backticks breaking out); the JSON event carries no circuit ``close`` block."""
    esc = Escalation(
        rule="poke",
        target="test:t1",
        heal_id="abc123",
        opened_at=1.0,
        reason="still unhealthy after 5m",
        event="not_recovered",
        labels={"alertname": "Poke", "note": "<!channel> `x`"},
    )
    text = chat_text(esc, slack=True)
    assert "rule `poke` did not recover `test:t1`" in text
    assert "abc123" in text and "will not act on it again" in text
    assert "<!channel>" not in text and "&lt;!channel&gt; 'x'" in text
    body = esc.as_json()
    assert (body["event"], body["heal_id"], body["ended_at"]) == ("not_recovered", "abc123", 1.0)
    assert "close" not in body


# ---- configuration --------------------------------------------------------------------------


def test_on_not_recovered_is_validated_with_its_path(
    tmp_path: Path, prom: StillFiring, handlers: HandlerRegistry
) -> None:
    """check-config refuses any value but escalate or retry, on a rule and in safety:,
    naming where; the rule's value wins over the default, which is escalate."""
    config = followup_config(
        tmp_path,
        prom,
        rule={"on_not_recovered": "page-me"},
        safety={"on_not_recovered": "retry-forever"},
    )
    with pytest.raises(ConfigError) as err:
        parse_config(config, handlers)
    paths = [path for path, _ in err.value.errors]
    assert paths == ["rules[0].on_not_recovered", "safety.on_not_recovered"]
    assert all("'escalate' or 'retry'" in msg for _, msg in err.value.errors)
    ok = parse_config(followup_config(tmp_path, prom, rule={"on_not_recovered": "retry"}), handlers)
    assert (ok.on_not_recovered("poke"), ok.on_not_recovered("poke2")) == ("retry", "escalate")
    assert ok.on_not_recovered(None) == "escalate"
