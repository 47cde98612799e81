"""The approval flow in-process (the real app factory, a SQLite journal, the no-op
handler): ``mode: suggest`` never acts and ends ``suggested``; ``mode: approve`` waits in
``awaiting_approval`` without holding a concurrency slot, listed by the API, until the
admin API approves (the heal checks again and acts once, whatever a second approval
says: 409) or rejects (``rejected``); nobody deciding ends it ``expired`` with one
escalation; a resolve while it waits ends it ``no_action``; a restart resumes the wait
on the same approval (same deadline)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from bench.noop import Noop
from healer.config import Secrets
from healer.notices import OUTCOME_EVENTS, HealNotice, HealNotices
from healer.plugins import HandlerRegistry
from tests.support.inprocess.gates import (
    ADMIN,
    fire,
    gates_config,
    kinds,
    until,
    webhook_notifier,
    with_notify,
)
from tests.support.inprocess.inproc import InProcessHealer, running_healer
from tests.support.servers.webhook import WebhookRecorder

AWAITING = "awaiting_approval"


class Told(HealNotices):
    """The approval flow's notices the executor hands over, kept in order (delivery, and
    the started/acted/outcome notices, are tests/unit/test_heal_notices.py's)."""

    def __init__(self) -> None:
        self.notices: list[HealNotice] = []

    def notice(self, notice: HealNotice) -> None:
        if notice.event not in OUTCOME_EVENTS | {"started", "acted"}:
            self.notices.append(notice)

    def events(self) -> list[str]:
        return [n.event for n in self.notices]


def listen(h: InProcessHealer) -> Told:
    told = Told()
    h.services.executor._notices = told
    return told


def approve_config(tmp_path: Path, mode: str = "approve", **top: Any) -> dict[str, Any]:
    return gates_config(
        tmp_path, rule={"mode": mode, "approval": {"timeout": "30s"}}, max_concurrent_heals=1, **top
    )


async def awaiting(h: InProcessHealer, heal_id: str) -> None:
    async def listed() -> bool:
        resp = await h.client.get(
            "/api/v1/heals", params={"phase": AWAITING}, headers=h.admin_headers
        )
        return heal_id in [x["id"] for x in resp.json()["heals"]]

    await until(listed, what=f"heal {heal_id} awaiting approval")


@asynccontextmanager
async def waiting_heal(
    tmp_path: Path, handlers: HandlerRegistry
) -> AsyncIterator[tuple[InProcessHealer, Told, str]]:
    """healer with rule ``poke`` in ``mode: approve`` (max_concurrent_heals 1), its
    notices kept, and one heal of ``t1`` awaiting approval."""
    secrets = Secrets(admin_token=ADMIN)
    async with running_healer(approve_config(tmp_path), handlers=handlers, secrets=secrets) as h:
        told = listen(h)
        heal_id = await fire(h, "t1")
        assert heal_id is not None
        await awaiting(h, heal_id)
        yield h, told, heal_id


async def decide(
    h: InProcessHealer, heal_id: str, decision: str, by: str = "alice", **body: Any
) -> Any:
    return await h.client.post(
        f"/api/v1/heals/{heal_id}/{decision}", json={"by": by, **body}, headers=h.admin_headers
    )


async def test_suggest_checks_tells_and_never_acts(
    tmp_path: Path, handlers: HandlerRegistry, noop: Noop
) -> None:
    """``mode: suggest``: the check runs, a ``suggested`` notice says what healer would
    do, nothing acts, the heal ends ``suggested`` (counted in healer_heals_total)."""
    secrets = Secrets(admin_token=ADMIN)
    async with running_healer(
        approve_config(tmp_path, "suggest"), handlers=handlers, secrets=secrets
    ) as h:
        told = listen(h)
        heal_id = await fire(h, "t1")
        assert heal_id is not None
        heal = await h.wait_for_outcome(heal_id, timeout=15)
        assert (heal["outcome"], heal["reason"]) == ("suggested", "suggested: would act on test:t1")
        assert "suggested" in kinds(heal) and "act" not in kinds(heal)
        assert len(noop.checks) == 1 and noop.acts == []
        assert told.events() == ["suggested"] and told.notices[0].targets == ("test:t1",)
        assert h.heals_total("suggested", rule="poke") == 1


async def test_approve_waits_then_acts_once_on_a_double_approval(
    tmp_path: Path, handlers: HandlerRegistry, noop: Noop
) -> None:
    """``mode: approve``: the heal waits in ``awaiting_approval`` with its approval
    request told (a token, a deadline, the targets), holding no concurrency slot (a
    second heal, max_concurrent_heals 1, runs meanwhile); the first approval answers 200,
    the second 409; after approval the check runs again and the heal acts exactly once;
    the approver is on the timeline."""
    async with waiting_heal(tmp_path, handlers) as (h, told, heal_id):
        [request] = told.notices
        assert request.event == AWAITING and request.approval is not None
        assert len(request.approval.token) >= 40 and request.approval.targets == ("test:t1",)
        assert h.sample("healer_heals_awaiting_approval", {"rule": "poke"}) == 1
        other = await fire(h, "t2", name="Poke2")  # poke2 is auto: runs while poke waits
        assert other is not None
        assert (await h.wait_for_outcome(other, timeout=15))["outcome"] == "unverified"
        assert len(noop.acts) == 1

        first = await decide(h, heal_id, "approve", comment="go")
        second = await decide(h, heal_id, "approve", by="bob")
        assert first.status_code == 200, first.text
        assert (first.json()["by"], first.json()["comment"]) == ("alice", "go")
        assert second.status_code == 409 and "already decided: approve by alice" in second.text
        heal = await h.wait_for_outcome(heal_id, timeout=15)
        assert heal["outcome"] == "unverified"
        assert len(noop.acts) == 2 and len(noop.checks) == 3  # t2 once; t1 checked twice
        timeline = kinds(heal)
        assert timeline.count("check") == 2 and timeline.count("act") == 1
        assert timeline.index("approval_requested") < timeline.index("approved")
        [approved] = [e for e in heal["timeline"] if e["kind"] == "approved"]
        assert approved["data"] == {"by": "alice", "via": "api", "comment": "go"}
        assert h.sample("healer_heals_awaiting_approval", {"rule": "poke"}) == 0
        assert (await decide(h, heal_id, "reject")).status_code == 409
        assert (await decide(h, "no-such-heal", "approve")).status_code == 404


async def test_a_rejected_heal_never_acts(
    tmp_path: Path, handlers: HandlerRegistry, noop: Noop
) -> None:
    """A rejection ends the heal ``rejected`` with who and why, nothing acted, a
    ``rejected`` notice naming the rejecter."""
    async with waiting_heal(tmp_path, handlers) as (h, told, heal_id):
        assert (await decide(h, heal_id, "reject", comment="not now")).status_code == 200
        heal = await h.wait_for_outcome(heal_id, timeout=15)
        assert heal["outcome"] == "rejected"
        assert heal["reason"] == "rejected by alice (via api): not now"
        assert noop.acts == [] and len(noop.checks) == 1
        assert told.events() == [AWAITING, "rejected"] and told.notices[1].decided_by == "alice"
        assert h.heals_total("rejected", rule="poke") == 1


async def test_nobody_deciding_expires_the_heal_with_one_escalation(
    tmp_path: Path, handlers: HandlerRegistry, noop: Noop, webhook_recorder: WebhookRecorder
) -> None:
    """Past ``approval.timeout`` the heal ends ``expired``, nothing acted, one
    ``approval_expired`` escalation delivered (on the timeline); a late approval is 409."""
    config = gates_config(
        tmp_path,
        rule={"mode": "approve", "approval": {"timeout": "1s"}},
        notify=[webhook_notifier()],
    )
    async with running_healer(
        config, handlers=handlers, secrets=with_notify(webhook_recorder.url)
    ) as h:
        told = listen(h)
        heal_id = await fire(h, "t1")
        assert heal_id is not None
        heal = await h.wait_for_outcome(heal_id, timeout=15)
        assert heal["outcome"] == "expired" and noop.acts == []
        assert heal["reason"].startswith("nobody approved or rejected it within 1s; escalated")
        [sent] = webhook_recorder.snapshot()
        assert sent.body["event"] == "approval_expired" and sent.body["heal_id"] == heal_id
        assert [e["data"]["ok"] for e in heal["timeline"] if e["kind"] == "escalation"] == [True]
        assert told.events() == [AWAITING, "expired"]
        assert (await decide(h, heal_id, "approve")).status_code == 409


async def test_a_resolve_while_awaiting_ends_the_heal_no_action(
    tmp_path: Path, handlers: HandlerRegistry, noop: Noop
) -> None:
    """Alertmanager's resolve of the alert while the heal waits ends it ``no_action`` at
    once, with a ``no_action`` notice (the approval message's update); nothing acted, and
    an approval afterwards is 409."""
    async with waiting_heal(tmp_path, handlers) as (h, told, heal_id):
        await fire(h, "t1", status="resolved")
        heal = await h.wait_for_outcome(heal_id, timeout=5)
        assert heal["outcome"] == "no_action" and heal["reason"].startswith(
            "resolved before acting"
        )
        assert noop.acts == [] and told.events() == [AWAITING, "no_action"]
        assert (await decide(h, heal_id, "approve")).status_code == 409


async def test_a_restart_resumes_the_wait_on_the_same_approval(
    tmp_path: Path, handlers: HandlerRegistry, noop: Noop
) -> None:
    """healer stopped while a heal awaits approval: the next start checks again and waits
    on the approval it opened (same deadline, no second request told); approved then, it
    acts once."""
    config = approve_config(tmp_path)
    secrets = Secrets(admin_token=ADMIN)
    async with running_healer(config, handlers=handlers, secrets=secrets) as h:
        heal_id = await fire(h, "t1")
        assert heal_id is not None
        await awaiting(h, heal_id)
        before = await h.journal.get_approval(heal_id)
    async with running_healer(config, handlers=handlers, secrets=secrets) as h:
        told = listen(h)
        await awaiting(h, heal_id)
        assert await h.journal.get_approval(heal_id) == before
        assert (await decide(h, heal_id, "approve")).status_code == 200

        async def done() -> Any:
            heal = await h.journal.get_heal(heal_id)
            return heal if heal is not None and heal["phase"] == "done" else None

        await until(done, what="the resumed heal to end")
        heal = await done()
        assert heal["outcome"] == "unverified" and len(noop.acts) == 1
        assert kinds(heal).count("approval_requested") == 1 and AWAITING not in told.events()
