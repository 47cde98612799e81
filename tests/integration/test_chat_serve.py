"""Chat approvals through the real ``healer serve`` process: the Slack signing secret read
from its file at start-up, an alert through the webhook, the approval request posted to
local stand-ins for Slack and Mattermost, and the buttons clicked over real HTTP as each
platform posts them. A forged click and another heal's token are refused, a signed Slack
click approves (dockerd restarts the container once), the Mattermost Reject button
rejects, and the signing secret never reaches the log."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from tests.support import HealerFactory
from tests.support.env import free_port
from tests.support.inprocess.chat import (
    MATTERMOST_PATH,
    SLACK_PATH,
    approve_restart_config,
    chat_urls,
    mattermost_buttons,
    mattermost_click,
    slack_buttons,
    slack_payload,
    slack_request,
)
from tests.support.inprocess.payloads import alert_payload
from tests.support.scenarios.faults import docker_restarts
from tests.support.servers.webhook import Received, WebhookRecorder

pytestmark = pytest.mark.docker

SECRET = "slack-signing-SECRET-serve-7"  # what the process reads from its file
ADMIN = "adm-chat-serve"


def _request(recorder: WebhookRecorder, path: str, heal_id: str) -> Received:
    buttons = mattermost_buttons if path == "/mattermost" else slack_buttons
    return recorder.wait_for(
        lambda r: r.path == path and heal_id in r.raw.decode() and bool(buttons(r)),
        what=f"approval request for {heal_id} at {path}",
    )


def _outcome(client: httpx.Client, heal_id: str, timeout: float = 30.0) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        heal: dict[str, Any] = client.get(f"/api/v1/heals/{heal_id}").json()
        if heal.get("outcome") is not None:
            return heal
        time.sleep(0.1)
    raise TimeoutError(f"heal {heal_id} has no outcome after {timeout}s")


def test_serve_approves_from_slack_and_rejects_from_mattermost(
    tmp_path: Path,
    healer_process: HealerFactory,
    webhook_recorder: WebhookRecorder,
    containers: Any,
    docker_client: Any,
) -> None:
    """Two heals wait for approval in a real ``healer serve``; forged Slack clicks and a
    cross-heal Mattermost token change nothing; a signed Slack click approves the first
    (one restart in dockerd's events), Mattermost's Reject rejects the second (none)."""
    tag = uuid.uuid4().hex[:8]
    names = [f"healer-test-chatserve-{tag}-{i}" for i in (1, 2)]
    for name in names:
        containers.run(["sh", "-c", "trap 'exit 0' TERM; while :; do sleep 0.2; done"], name=name)
    secret_file = tmp_path / "slack-signing-secret"
    secret_file.write_text(SECRET + "\n")
    secret_file.chmod(0o600)
    config = tmp_path / "healer.yml"
    config.write_text(
        yaml.safe_dump(
            approve_restart_config(
                str(tmp_path / "journal.db"),
                f"healer-test-chatserve-{tag}-*",
                public_url="http://healer.example.org",
                integrations={"slack": {"signing_secret_file": str(secret_file)}},
            )
        )
    )
    env = {
        **dict(zip(("CHAT_SLACK_URL", "CHAT_MM_URL"), chat_urls(webhook_recorder), strict=True)),
        "HEALER_ADMIN_TOKEN": ADMIN,
    }
    since = int(time.time()) - 1
    healer = healer_process.start(config, env=env)
    base = f"http://127.0.0.1:{healer.port}"
    with httpx.Client(
        base_url=base, headers={"Authorization": f"Bearer {ADMIN}"}, timeout=10
    ) as client:
        ids = []
        for i, name in enumerate(names):
            body = alert_payload(
                {"alertname": "ServiceDown", "container": name}, fingerprint=f"{tag}{i}"
            )
            resp = client.post("/api/v1/alerts", json=body)
            assert resp.status_code == 200, resp.text
            [started] = resp.json()["started"]
            ids.append(started["heal_id"])
        first, second = ids
        slack = slack_buttons(_request(webhook_recorder, "/slack", first))["healer_approve"]
        mm_first = mattermost_buttons(_request(webhook_recorder, "/mattermost", first))
        mm_second = mattermost_buttons(_request(webhook_recorder, "/mattermost", second))

        payload = slack_payload(first, "approve", value=slack["value"])
        for secret, at in (("not-the-secret", None), (SECRET, time.time() - 400)):
            forged = httpx.post(base + SLACK_PATH, **_form(slack_request(secret, payload, at=at)))
            assert forged.status_code == 401, forged.text
        stolen = mm_first["approve"]["integration"]["context"]["token"]
        cross = httpx.post(base + MATTERMOST_PATH, json=mattermost_click(second, stolen, "approve"))
        assert cross.status_code == 403, cross.text
        awaiting = client.get("/api/v1/heals", params={"phase": "awaiting_approval"}).json()
        assert {h["id"] for h in awaiting["heals"]} == {first, second}

        signed = httpx.post(base + SLACK_PATH, **_form(slack_request(SECRET, payload)))
        assert signed.status_code == 200, signed.text
        reject = mm_second["reject"]["integration"]["context"]
        answer = httpx.post(
            base + MATTERMOST_PATH,
            json=mattermost_click(second, reject["token"], reject["decision"]),
        )
        assert answer.status_code == 200, answer.text
        assert "rejected by @bob" in answer.json()["update"]["message"]
        assert _outcome(client, first)["outcome"] == "unverified"  # restarted
        assert _outcome(client, second)["outcome"] == "rejected"
    assert docker_restarts(docker_client, names[0], since) == 1
    assert docker_restarts(docker_client, names[1], since) == 0
    healer.stop()
    assert SECRET not in healer.log_path.read_text()


def _form(request: tuple[bytes, dict[str, str]]) -> dict[str, Any]:
    body, headers = request
    return {"content": body, "headers": headers}


def test_serve_refuses_a_slack_integration_without_its_secret(tmp_path: Path) -> None:
    """``integrations.slack`` with no signing secret (no file, no variable) stops
    ``healer serve`` at start-up (exit 1), naming what to set, before any journal."""
    config = tmp_path / "healer.yml"
    config.write_text(
        json.dumps(
            {
                "journal": str(tmp_path / "journal.db"),
                "prometheus": {"url": "http://127.0.0.1:9"},
                "integrations": {"slack": {}},
            }
        )
    )
    env = {k: v for k, v in os.environ.items() if k != "HEALER_SLACK_SIGNING_SECRET"}
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "healer",
            "serve",
            "--config",
            str(config),
            "--listen",
            f"127.0.0.1:{free_port()}",
        ],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
        cwd=tmp_path,
        stdin=subprocess.DEVNULL,
    )
    assert proc.returncode == 1, proc.stderr
    assert "integrations.slack" in proc.stderr
    assert "$HEALER_SLACK_SIGNING_SECRET" in proc.stderr
    assert not (tmp_path / "journal.db").exists()
