"""A ``mode: approve`` docker.restart approved from everywhere at once restarts once:
Slack and Mattermost buttons (taken from the messages healer posted to local stand-ins,
clicked as each platform posts them, twice each) and the admin API race on one heal;
dockerd's own event log shows one restart of the container."""

from __future__ import annotations

import asyncio
import time
import uuid
from pathlib import Path
from typing import Any

import pytest

from healer.config import Secrets
from tests.support.inprocess.chat import (
    SLACK_SECRET,
    approval_request,
    approve_restart_config,
    await_phase,
    chat_urls,
    click_mattermost,
    click_slack,
    mattermost_buttons,
    slack_buttons,
)
from tests.support.inprocess.inproc import ADMIN, running_healer
from tests.support.inprocess.payloads import alert
from tests.support.scenarios.faults import docker_restarts
from tests.support.servers.webhook import WebhookRecorder

pytestmark = pytest.mark.docker


async def test_racing_approvals_restart_the_container_once(
    tmp_path: Path, containers: Any, docker_client: Any, webhook_recorder: WebhookRecorder
) -> None:
    """Two Slack clicks, two Mattermost clicks and an API approval sent together: one
    decides, the rest are told it was decided, and dockerd records exactly one restart."""
    name = f"healer-test-chat-{uuid.uuid4().hex[:8]}"
    containers.run(["sh", "-c", "trap 'exit 0' TERM; while :; do sleep 0.2; done"], name=name)
    config = approve_restart_config(str(tmp_path / "journal.db"), name, public_url="http://healer")
    secrets = Secrets(
        admin_token=ADMIN,
        slack_signing_secret=SLACK_SECRET,
        notify_urls=chat_urls(webhook_recorder),
    )
    since = int(time.time()) - 1
    async with running_healer(config, secrets=secrets) as h:
        [heal_id] = await h.fire(alert("ServiceDown", {"container": name}))
        await await_phase(h.journal, heal_id, "awaiting_approval")
        slack = slack_buttons(await approval_request(webhook_recorder, "/slack", heal_id))
        mm = mattermost_buttons(await approval_request(webhook_recorder, "/mattermost", heal_id))
        assert docker_restarts(docker_client, name, since) == 0

        async def by_slack() -> bool:
            resp = await click_slack(h.client, slack["healer_approve"], SLACK_SECRET)
            assert resp.status_code in (200, 409), resp.text
            return resp.status_code == 200

        async def by_mattermost() -> bool:
            resp = await click_mattermost(h.client, mm["approve"])
            assert resp.status_code == 200, resp.text
            return "update" in resp.json()

        async def by_api() -> bool:
            resp = await h.client.post(
                f"/api/v1/heals/{heal_id}/approve", headers=h.admin_headers, json={"by": "carol"}
            )
            assert resp.status_code in (200, 409), resp.text
            return resp.status_code == 200

        won = await asyncio.gather(
            by_slack(), by_mattermost(), by_api(), by_slack(), by_mattermost()
        )
        assert sum(won) == 1
        heal = await h.wait_for_outcome(heal_id)
        await h.idle()
    assert heal["outcome"] == "unverified", heal  # restarted; nobody answers at Prometheus
    assert docker_restarts(docker_client, name, since) == 1
