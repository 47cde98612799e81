"""Heal notices on the whole loop (a busybox service, real Prometheus, real Alertmanager, a
real ``healer serve`` process, a real dockerd), told to Mattermost and Slack stand-ins
(WebhookRecorder on 127.0.0.1): the notifier URLs come from ``url_file`` secrets as in
production, the approval request carries each platform's buttons, and after a human
approves, the action and the recovery are told with the time to recovery."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.support.env import wait_until
from tests.support.servers.webhook import WebhookRecorder

pytestmark = [pytest.mark.e2e, pytest.mark.docker, pytest.mark.prometheus]

PUBLIC = "https://healer.example.org"


def _notifier(tmp_path: Path, kind: str, url: str) -> dict[str, Any]:
    secret = tmp_path / f"{kind}.url"
    secret.write_text(url)
    return {"kind": kind, "name": kind, "url_file": str(secret), "retries": 1, "backoff": "0s"}


def _bodies(recorder: WebhookRecorder, path: str) -> list[Any]:
    return [r.body for r in recorder.snapshot() if r.path == path]


def test_an_approved_heal_is_told_from_request_to_recovery(
    make_loop: Any, tmp_path: Path, webhook_recorder: WebhookRecorder
) -> None:
    """``mode: approve``, notify_on [acted, recovered]: the request reaches Mattermost
    (buttons posting the heal's token to ``{public_url}/api/v1/integrations/mattermost``)
    and Slack (``healer_approve``/``healer_reject``); approved through the admin API, the
    heal restarts the container and recovers; both platforms then get ``acted`` and
    ``recovered`` (with the time to recovery and the approver's action), and every
    delivery is a ``notify`` entry on the heal's timeline."""
    notify = [
        _notifier(tmp_path, "mattermost", f"{webhook_recorder.url}/mm"),
        _notifier(tmp_path, "slack", f"{webhook_recorder.url}/slack"),
    ]
    loop = make_loop(
        mode="approve",
        overrides={
            "notify": notify,
            "notifications": {"notify_on": ["acted", "recovered"]},
            "public_url": PUBLIC,
        },
    )
    loop.service.break_()
    [mm_request] = wait_until(
        lambda: _bodies(webhook_recorder, "/mm"), timeout=90, interval=0.5, what="the request"
    )
    [waiting] = loop.heals(phase="awaiting_approval")
    [approve, reject] = mm_request["attachments"][0]["actions"]
    assert approve["integration"]["url"] == f"{PUBLIC}/api/v1/integrations/mattermost"
    assert approve["integration"]["context"]["heal_id"] == waiting["id"]
    assert (approve["integration"]["context"]["decision"], reject["name"]) == (
        "approve",
        "Reject",
    )
    [slack_request] = _bodies(webhook_recorder, "/slack")
    [actions] = [b for b in slack_request["blocks"] if b["type"] == "actions"]
    assert [json.loads(e["value"]) for e in actions["elements"]] == [
        {"heal_id": waiting["id"], "decision": "approve"},
        {"heal_id": waiting["id"], "decision": "reject"},
    ]
    with httpx.Client(timeout=10.0) as client:
        answer = client.post(
            f"{loop.healer.url}/api/v1/heals/{waiting['id']}/approve",
            json={"by": "ann"},
            headers={"Authorization": f"Bearer {loop.admin_token}"},
        )
    assert answer.status_code == 200, answer.text
    heal = loop.wait_for_finished_heal()
    assert heal["outcome"] == "recovered", (heal["reason"], loop.healer.log_tail())
    wait_until(
        lambda: len(_bodies(webhook_recorder, "/slack")) >= 3,
        timeout=30,
        interval=0.2,
        what="the acted and recovered messages",
    )
    mm = _bodies(webhook_recorder, "/mm")
    assert len(mm) == 3, mm
    recovered = mm[-1]["attachments"][0]
    assert recovered["title_link"] == f"{PUBLIC}/api/v1/heals/{heal['id']}"
    assert "**Outcome:** `recovered` after" in recovered["text"]
    assert f"docker:{loop.service.name}" in recovered["text"]
    slack = _bodies(webhook_recorder, "/slack")
    assert "recovered" in slack[-1]["text"] and len(slack) == 3

    def journaled() -> list[dict[str, Any]] | None:
        entries = [e["data"] for e in loop.heal(heal["id"])["timeline"] if e["kind"] == "notify"]
        return entries if len(entries) >= 6 else None

    entries = wait_until(journaled, timeout=30, interval=0.5, what="6 notify entries")
    assert sorted((e["event"], e["notifier"]) for e in entries) == sorted(
        (event, kind)
        for event in ("awaiting_approval", "acted", "recovered")
        for kind in ("mattermost", "slack")
    )
    assert all(e["ok"] for e in entries)
