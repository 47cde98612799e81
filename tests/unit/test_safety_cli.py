"""``healer pause | resume | circuits | circuit-close`` against a running healer: the real
app factory and lifespan served by uvicorn in a thread on 127.0.0.1, reached by the CLI
through ``--url`` exactly as an operator's shell would."""

from __future__ import annotations

import argparse
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from healer.admin_cli import DEFAULT_URL, base_url
from healer.cli import build_parser, main
from healer.plugins import HandlerRegistry
from tests.support.env import free_port, wait_until
from tests.support.inprocess.gates import (
    ADMIN,
    BASE,
    fingerprint,
    gates_config,
    webhook_notifier,
    with_notify,
)
from tests.support.inprocess.inproc import healer_app
from tests.support.inprocess.payloads import alert_payload
from tests.support.inprocess.served import run_cli as cli
from tests.support.inprocess.served import served
from tests.support.servers.webhook import WebhookRecorder


@pytest.fixture
def client(
    tmp_path: Path, handlers: HandlerRegistry, webhook_recorder: WebhookRecorder
) -> Iterator[httpx.Client]:
    """healer served by uvicorn in a thread; a client on its base URL. Stopped after."""
    config = gates_config(
        tmp_path, safety={"budget": {"max_actions": 1, "window": "1h"}}, notify=[webhook_notifier()]
    )
    app = healer_app(config, handlers=handlers, secrets=with_notify(webhook_recorder.url))
    with served(app) as http:
        yield http


@pytest.fixture(autouse=True)
def admin_token(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HEALER_ADMIN_TOKEN", ADMIN)
    monkeypatch.delenv("HEALER_CONFIG", raising=False)


def heal_once(client: httpx.Client, n: int) -> dict[str, Any]:
    labels = {"alertname": "Poke", "target": "t1"}
    resp = client.post(
        "/api/v1/alerts",
        json=alert_payload(
            labels, fingerprint=fingerprint("Poke", "t1"), starts_at=BASE.replace(minute=n)
        ),
    )
    heal_id = resp.json()["started"][0]["heal_id"]
    headers = {"Authorization": f"Bearer {ADMIN}"}

    def done() -> dict[str, Any] | None:
        heal: dict[str, Any] = client.get(f"/api/v1/heals/{heal_id}", headers=headers).json()
        return heal if heal["outcome"] else None

    return wait_until(done, timeout=15, interval=0.05, what=f"heal {heal_id}")


def test_pause_and_resume(client: httpx.Client, capsys: pytest.CaptureFixture[str]) -> None:
    """`healer pause --for 30m --reason deploy` pauses the daemon (heals suppressed),
    `healer resume` ends it; both say what they did."""
    assert cli(client, "pause", "--for", "30m", "--reason", "deploy") == 0
    assert capsys.readouterr().out.startswith("paused until ")
    assert heal_once(client, 0)["reason"].startswith("paused: deploy")
    assert cli(client, "resume") == 0
    assert capsys.readouterr().out.startswith("resumed (paused since ")
    assert heal_once(client, 1)["outcome"] == "unverified"
    assert cli(client, "resume") == 0
    assert capsys.readouterr().out == "was not paused\n"


def test_circuits_and_circuit_close(
    client: httpx.Client, capsys: pytest.CaptureFixture[str]
) -> None:
    """`healer circuits` lists the open circuit, `healer circuit-close poke --target
    test:t1` closes it; closing what is not open exits 1 with the API's error."""
    assert cli(client, "circuits") == 0
    assert capsys.readouterr().out == "no open circuits\n"
    heal_once(client, 0)
    assert heal_once(client, 1)["outcome"] == "escalated"
    assert cli(client, "circuits") == 0
    out = capsys.readouterr().out
    assert out.startswith("open    poke  test:t1  since ") and "escalated" in out
    assert cli(client, "circuit-close", "poke", "--target", "test:t1") == 0
    assert capsys.readouterr().out == "closed circuit poke on test:t1\n"
    assert cli(client, "circuit-close", "poke") == 1
    assert "no open circuit for rule 'poke'" in capsys.readouterr().err
    assert cli(client, "circuits", "--all", "--json") == 0
    assert '"closed_by": "api"' in capsys.readouterr().out


def test_the_token_comes_from_a_file_and_is_never_printed(
    client: httpx.Client,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """--token-file wins over the environment; a wrong token is exit 1 with the HTTP error,
    and the token itself is not printed."""
    monkeypatch.setenv("HEALER_ADMIN_TOKEN", "wrong-t0ken")
    assert cli(client, "pause", "--for", "1m") == 1
    captured = capsys.readouterr()
    assert "HTTP 401" in captured.err and "wrong-t0ken" not in captured.out + captured.err
    (tmp_path / "token").write_text(ADMIN + "\n")
    assert cli(client, "pause", "--for", "1m", "--token-file", str(tmp_path / "token")) == 0


def test_an_unreachable_daemon_is_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    """Nothing listens at --url: exit 2, naming the URL."""
    url = f"http://127.0.0.1:{free_port()}"
    assert main(["circuits", "--url", url]) == 2
    assert f"cannot reach healer at {url}" in capsys.readouterr().err


def test_the_url_defaults_to_the_configs_listen(tmp_path: Path) -> None:
    """--url wins; else the config's listen (a wildcard address becomes loopback); else
    the default."""
    config = tmp_path / "healer.yml"
    config.write_text("listen: 0.0.0.0:9911\n")

    def url(*argv: str) -> str:
        args: argparse.Namespace = build_parser().parse_args(["circuits", *argv])
        return base_url(args)

    assert url("--config", str(config)) == "http://127.0.0.1:9911"
    assert url("--config", str(config), "--url", "http://h:1/") == "http://h:1"
    assert url() == DEFAULT_URL
    config.write_text("listen: 10.1.2.3:9912\n")
    assert url("--config", str(config)) == "http://10.1.2.3:9912"


def test_an_unreadable_token_file_is_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A --token-file that cannot be read is a usage error naming the file."""
    missing = tmp_path / "nope"
    assert main(["resume", "--token-file", str(missing), "--url", "http://127.0.0.1:9"]) == 2
    assert f"cannot read {missing}" in capsys.readouterr().err


def test_pause_needs_a_duration(capsys: pytest.CaptureFixture[str]) -> None:
    """`healer pause` without --for is a usage error."""
    with pytest.raises(SystemExit) as exc:
        build_parser().parse_args(["pause"])
    assert exc.value.code == 2
    assert "--for" in capsys.readouterr().err
