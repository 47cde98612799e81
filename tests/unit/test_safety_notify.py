"""Notifiers: retries with backoff against a real HTTP server on 127.0.0.1, failures that
never fail a heal, URLs (secrets) that never reach logs, the journal or the API, and alert
labels that cannot format or ping in chat."""

from __future__ import annotations

import logging
from pathlib import Path

import httpx
import pytest
from structlog.testing import capture_logs

from healer.config import ConfigError, NotifierConfig, parse_config, resolve_secrets
from healer.notify import Escalation, Notifier, chat_text, redact
from healer.plugins import HandlerRegistry
from tests.support.env import free_port
from tests.support.inprocess.gates import fire_and_wait, gates_config, webhook_notifier, with_notify
from tests.support.inprocess.inproc import running_healer
from tests.support.servers.webhook import WebhookRecorder

ESC = Escalation(
    rule="poke",
    target="test:t1",
    heal_id="0123abcd",
    reason="budget spent",
    opened_at=0.0,
    labels={"alertname": "Poke"},
    quiet=3600,
)


@pytest.fixture
def dead_url() -> str:
    """A loopback URL nobody listens on, with a secret-looking path."""
    return f"http://127.0.0.1:{free_port()}/hooks/s3cret-dead-key"


def notifier(url: str, **over: object) -> Notifier:
    conf = NotifierConfig.model_validate(
        {
            "kind": "webhook",
            "url_env": "X",
            "retries": 2,
            "backoff": "10ms",
            "timeout": "2s",
            **over,
        }
    )
    return Notifier(conf, url, 0)


async def test_a_500_is_retried_until_it_succeeds(webhook_recorder: WebhookRecorder) -> None:
    """500, 503, then 200: delivered on the third attempt, three POSTs with the same body."""
    webhook_recorder.responses = [500, 503]
    async with httpx.AsyncClient() as http:
        delivery = await notifier(f"{webhook_recorder.url}/hook").send(http, ESC)
    assert (delivery.ok, delivery.attempts, delivery.status) == (True, 3, 200)
    bodies = [r.body for r in webhook_recorder.snapshot()]
    assert len(bodies) == 3 and bodies[0] == bodies[2]


async def test_retries_are_bounded(webhook_recorder: WebhookRecorder) -> None:
    """Always 500: 1 + retries attempts, then a failed delivery naming the status."""
    webhook_recorder.responses = [500] * 10
    async with httpx.AsyncClient() as http:
        delivery = await notifier(webhook_recorder.url, retries=1).send(http, ESC)
    assert (delivery.ok, delivery.attempts, delivery.error) == (False, 2, "HTTP 500")
    assert len(webhook_recorder.snapshot()) == 2


async def test_backoff_doubles_between_attempts(webhook_recorder: WebhookRecorder) -> None:
    """The waits before retries are backoff, 2 x backoff, ..."""
    webhook_recorder.responses = [500] * 3
    waits: list[float] = []

    async def sleep(seconds: float) -> None:
        waits.append(seconds)

    async with httpx.AsyncClient() as http:
        await notifier(webhook_recorder.url, retries=3, backoff="1s").send(http, ESC, sleep)
    assert waits == [1.0, 2.0, 4.0]


async def test_a_4xx_is_not_retried(webhook_recorder: WebhookRecorder) -> None:
    """A 404 (wrong hook) stays wrong: one attempt."""
    webhook_recorder.responses = [404]
    async with httpx.AsyncClient() as http:
        delivery = await notifier(webhook_recorder.url).send(http, ESC)
    assert (delivery.ok, delivery.attempts, delivery.status) == (False, 1, 404)


async def test_an_unreachable_notifier_fails_with_a_redacted_error(dead_url: str) -> None:
    """Connection refused on every attempt: a failed delivery whose error text does not
    contain the URL's secret path."""
    async with httpx.AsyncClient() as http:
        delivery = await notifier(dead_url, retries=1).send(http, ESC)
    assert (delivery.ok, delivery.attempts, delivery.status) == (False, 2, None)
    assert delivery.error is not None and "s3cret-dead-key" not in delivery.error


def test_redact_masks_the_url_its_path_and_its_query() -> None:
    """Whatever an HTTP library puts in an error, the credential parts are masked."""
    url = "https://chat.example/hooks/k3y?token=t0k"
    text = redact(f"error for url {url}; path /hooks/k3y; query token=t0k", url)
    assert "k3y" not in text and "t0k" not in text


async def test_a_notifier_down_does_not_fail_the_heal(
    tmp_path: Path, handlers: HandlerRegistry, dead_url: str, webhook_recorder: WebhookRecorder
) -> None:
    """One notifier down, one up: the heal still ends escalated, both deliveries are in its
    timeline (failed and ok), and healer keeps serving."""
    config = gates_config(
        tmp_path,
        safety={"budget": {"max_actions": 1, "window": "1h"}},
        notify=[webhook_notifier(retries=1), webhook_notifier()],
    )
    async with running_healer(
        config, handlers=handlers, secrets=with_notify(dead_url, webhook_recorder.url)
    ) as h:
        await fire_and_wait(h, "t1", n=0)
        heal = await fire_and_wait(h, "t1", n=1)
        assert (await h.client.get("/health")).status_code == 200
    assert heal["outcome"] == "escalated"
    assert heal["reason"].endswith("escalated (1/2 notifiers reached)")
    deliveries = [e["data"] for e in heal["timeline"] if e["kind"] == "escalation"]
    assert [(d["notifier"], d["ok"], d["attempts"]) for d in deliveries] == [
        ("webhook[0]", False, 2),
        ("webhook[1]", True, 1),
    ]


async def test_notifier_urls_never_reach_logs_journal_or_api(
    tmp_path: Path,
    handlers: HandlerRegistry,
    dead_url: str,
    webhook_recorder: WebhookRecorder,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Every log line (structlog and stdlib, httpx's own at DEBUG included), the heal's
    timeline, the circuits API and repr(Secrets) are free of both notifier URLs' secret
    parts, for a delivered and a failed notification."""
    good = f"{webhook_recorder.url}/hooks/s3cret-good-key"
    config = gates_config(
        tmp_path,
        safety={"budget": {"max_actions": 1, "window": "1h"}},
        notify=[webhook_notifier(), webhook_notifier(retries=1)],
    )
    secrets = with_notify(good, dead_url)
    caplog.set_level(logging.DEBUG)
    with capture_logs() as logs:
        async with running_healer(config, handlers=handlers, secrets=secrets) as h:
            await fire_and_wait(h, "t1", n=0)
            heal = await fire_and_wait(h, "t1", n=1)
            api = [
                (await h.client.get(path, headers=h.admin_headers)).text
                for path in (
                    f"/api/v1/heals/{heal['id']}",
                    "/api/v1/circuits?all=true",
                    "/api/v1/heals",
                )
            ]
    assert heal["outcome"] == "escalated"
    assert any("HTTP Request" in r.getMessage() for r in caplog.records)  # httpx did log
    text = "\n".join([repr(logs), caplog.text, *api, repr(secrets), str(heal)])
    for secret in ("s3cret-good-key", "s3cret-dead-key"):
        assert secret not in text


def test_notifier_urls_come_from_a_file_or_an_env_var(tmp_path: Path) -> None:
    """url_file and url_env resolve in order; a missing variable, an empty file or a value
    that is not an http(s) URL is a config error naming the key, never the value."""
    (tmp_path / "mm").write_text("https://chat.example/hooks/abc\n")
    config = parse_config(
        {
            "notify": [
                {"kind": "mattermost", "url_file": str(tmp_path / "mm")},
                {"kind": "slack", "url_env": "SLACK_HOOK"},
            ]
        }
    )
    secrets = resolve_secrets(config, {"SLACK_HOOK": "https://hooks.slack.example/T/B/x"})
    assert secrets.notify_urls == (
        "https://chat.example/hooks/abc",
        "https://hooks.slack.example/T/B/x",
    )
    assert "hooks" not in repr(secrets)
    with pytest.raises(ConfigError) as missing:
        resolve_secrets(config, {})
    assert missing.value.errors == [("notify[1].url_env", "$SLACK_HOOK is not set")]
    with pytest.raises(ConfigError) as bad:
        resolve_secrets(config, {"SLACK_HOOK": "ftp://s3cret"})
    assert "s3cret" not in str(bad.value) and bad.value.errors[0][0] == "notify[1]"


@pytest.mark.parametrize(
    "entry",
    [
        {"kind": "slack"},
        {"kind": "slack", "url_env": "A", "url_file": "/x"},
        {"kind": "email", "url_env": "A"},
        {"kind": "slack", "url_env": "A", "retries": 11},
        {"kind": "slack", "url": "https://inline.example/hook"},
    ],
)
def test_a_bad_notifier_entry_is_a_config_error(entry: dict[str, object]) -> None:
    """Exactly one URL source, a known kind, bounded retries; no inline URL (a secret)."""
    with pytest.raises(ConfigError) as exc:
        parse_config({"notify": [entry]})
    assert exc.value.errors[0][0].startswith("notify[0]")


def test_alert_labels_cannot_format_or_ping_in_chat() -> None:
    """Label values sit in code spans without backticks or newlines; Slack's control
    sequences (<!channel>) are escaped."""
    esc = Escalation(
        rule="poke",
        target="test:t1",
        heal_id="h",
        reason="r",
        opened_at=0.0,
        labels={"alertname": "x`\n**bold** <!channel> @all"},
    )
    mattermost, slack = chat_text(esc), chat_text(esc, slack=True)
    assert "`x' **bold** <!channel> @all`" in mattermost
    assert "<!channel>" not in slack and "&lt;!channel&gt;" in slack
    assert mattermost.count("\n") == slack.count("\n") == 4
