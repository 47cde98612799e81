"""Logs an on-call person can grep: every line about a heal names it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from structlog.testing import capture_logs

from tests.support.inprocess.inproc import noop_config, running_healer
from tests.support.inprocess.payloads import alert_payload


def _config(tmp_path: Path) -> dict[str, Any]:
    return noop_config(tmp_path / "journal.db")


async def test_every_heal_log_line_carries_heal_rule_handler_and_fingerprint(
    tmp_path, handlers
) -> None:
    """From 'heal started' to 'heal finished', each line logged about a heal has heal_id,
    rule, handler and the alert's fingerprint."""
    with capture_logs() as logs:
        async with running_healer(_config(tmp_path), handlers=handlers) as h:
            resp = await h.client.post(
                "/api/v1/alerts",
                json=alert_payload({"alertname": "Poke", "target": "t1"}, fingerprint="feedbeef"),
            )
            heal_id = resp.json()["started"][0]["heal_id"]
            await h.wait_for_outcome(heal_id)
    about_heal = [line for line in logs if "heal_id" in line]
    events = [line["event"] for line in about_heal]
    assert {"heal started", "checking", "acting", "acted", "verified", "heal finished"} <= set(
        events
    )
    for line in about_heal:
        assert line["heal_id"] == heal_id, line
        assert line["rule"] == "poke", line
        assert line["handler"] == "test.noop", line
        assert line["fingerprint"] == "feedbeef", line


async def test_tokens_never_reach_the_logs(tmp_path, handlers) -> None:
    """A rejected webhook token is not logged, nor is the configured one."""
    from healer.config import Secrets

    secrets = Secrets(webhook_token="s3cret-webhook", admin_token="s3cret-admin")
    with capture_logs() as logs:
        async with running_healer(_config(tmp_path), handlers=handlers, secrets=secrets) as h:
            await h.client.post(
                "/api/v1/alerts",
                headers={"Authorization": "Bearer wrong-tok"},
                json=alert_payload({"alertname": "Poke", "target": "t1"}),
            )
    text = repr(logs)
    for secret in ("s3cret-webhook", "s3cret-admin", "wrong-tok"):
        assert secret not in text
