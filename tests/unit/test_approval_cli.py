"""``healer heals --awaiting``, ``healer approve ID`` and ``healer reject ID`` against a
running healer (uvicorn on 127.0.0.1, reached through ``--url`` as from a shell): the
waiting heal is listed, an approval says who approved and what, a second one exits 1
with the API's 409, a rejection ends the heal ``rejected`` with the CLI's user."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from bench.noop import Noop
from healer.config import Secrets
from healer.plugins import HandlerRegistry
from tests.support.env import wait_until
from tests.support.inprocess.gates import ADMIN, BASE, fingerprint, gates_config
from tests.support.inprocess.inproc import healer_app
from tests.support.inprocess.payloads import alert_payload
from tests.support.inprocess.served import run_cli as cli
from tests.support.inprocess.served import served

HEADERS = {"Authorization": f"Bearer {ADMIN}"}


@pytest.fixture
def client(tmp_path: Path, handlers: HandlerRegistry) -> Iterator[httpx.Client]:
    config = gates_config(tmp_path, rule={"mode": "approve"})
    with served(healer_app(config, handlers=handlers, secrets=Secrets(admin_token=ADMIN))) as h:
        yield h


@pytest.fixture(autouse=True)
def admin_token(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HEALER_ADMIN_TOKEN", ADMIN)
    monkeypatch.setenv("USER", "carol")
    monkeypatch.delenv("HEALER_CONFIG", raising=False)


def waiting_heal(client: httpx.Client, target: str) -> str:
    labels = {"alertname": "Poke", "target": target}
    resp = client.post(
        "/api/v1/alerts",
        json=alert_payload(labels, fingerprint=fingerprint("Poke", target), starts_at=BASE),
    )
    heal_id: str = resp.json()["started"][0]["heal_id"]

    def asked() -> bool:
        heal = client.get(f"/api/v1/heals/{heal_id}", headers=HEADERS).json()
        return bool(heal["phase"] == "awaiting_approval")

    wait_until(asked, timeout=15, interval=0.05, what=f"heal {heal_id} to await approval")
    return heal_id


def ended(client: httpx.Client, heal_id: str) -> dict[str, Any]:
    def done() -> dict[str, Any] | None:
        heal: dict[str, Any] = client.get(f"/api/v1/heals/{heal_id}", headers=HEADERS).json()
        return heal if heal["phase"] == "done" else None

    return wait_until(done, timeout=15, interval=0.05, what=f"heal {heal_id} to end")


def test_list_approve_and_approve_again(
    client: httpx.Client, noop: Noop, capsys: pytest.CaptureFixture[str]
) -> None:
    """`healer heals --awaiting` lists the waiting heal (nothing else), `healer approve`
    approves it as $USER with the comment, and the heal acts once; approving it again
    exits 1 with the 409."""
    assert cli(client, "heals", "--awaiting") == 0
    assert capsys.readouterr().out == "no heal awaiting approval\n"
    heal_id = waiting_heal(client, "t1")
    assert cli(client, "heals", "--awaiting") == 0
    _, line = capsys.readouterr().out.splitlines()  # header, one row
    assert line.startswith(heal_id) and "awaiting_approval (running)  test:t1" in line
    assert cli(client, "approve", heal_id, "--comment", "go") == 0
    assert capsys.readouterr().out == f"approved heal {heal_id} as carol (targets: test:t1)\n"
    assert ended(client, heal_id)["outcome"] == "unverified" and len(noop.acts) == 1
    assert cli(client, "approve", heal_id) == 1
    assert "HTTP 409" in capsys.readouterr().err
    assert cli(client, "heals", "--json") == 0
    assert f'"id": "{heal_id}"' in capsys.readouterr().out


def test_reject_by_name(
    client: httpx.Client, noop: Noop, capsys: pytest.CaptureFixture[str]
) -> None:
    """`healer reject ID --by NAME --comment ...` ends the heal ``rejected``, journaled as
    decided by NAME through the CLI; nothing acted; an unknown heal exits 1 with 404."""
    heal_id = waiting_heal(client, "t1")
    assert cli(client, "reject", heal_id, "--by", "dave", "--comment", "not now") == 0
    assert capsys.readouterr().out.startswith(f"rejected heal {heal_id} as dave")
    heal = ended(client, heal_id)
    assert (heal["outcome"], heal["reason"]) == ("rejected", "rejected by dave (via cli): not now")
    assert noop.acts == []
    assert cli(client, "reject", "no-such-heal") == 1
    assert "HTTP 404" in capsys.readouterr().err
