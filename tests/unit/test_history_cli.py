"""``healer heals`` and ``healer heal ID`` against a running healer (uvicorn on 127.0.0.1,
reached through ``--url`` as from a shell, with the admin token): the table filters by
rule, outcome, target and time, one heal prints its timeline step by step, bad input
exits 2 or 1 with the reason, and a label holding a terminal escape prints as text."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from healer.config import Secrets
from healer.plugins import HandlerRegistry
from tests.support.env import wait_until
from tests.support.inprocess.gates import ADMIN, BASE, fingerprint, gates_config
from tests.support.inprocess.inproc import healer_app
from tests.support.inprocess.payloads import alert_payload
from tests.support.inprocess.served import run_cli as cli
from tests.support.inprocess.served import served

HEADERS = {"Authorization": f"Bearer {ADMIN}"}
HOSTILE = "\x1b]0;pwned\x07\x1b[2J<b>x</b>\nnext"


@pytest.fixture
def client(tmp_path: Path, handlers: HandlerRegistry) -> Iterator[httpx.Client]:
    config = gates_config(tmp_path)
    with served(healer_app(config, handlers=handlers, secrets=Secrets(admin_token=ADMIN))) as h:
        yield h


@pytest.fixture(autouse=True)
def admin_token(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HEALER_ADMIN_TOKEN", ADMIN)
    monkeypatch.delenv("HEALER_CONFIG", raising=False)


def ended(client: httpx.Client, heal_id: str) -> dict[str, Any]:
    def done() -> dict[str, Any] | None:
        heal: dict[str, Any] = client.get(f"/api/v1/heals/{heal_id}", headers=HEADERS).json()
        return heal if heal["phase"] == "done" else None

    return wait_until(done, timeout=15, interval=0.05, what=f"heal {heal_id} to end")


def alert_heal(client: httpx.Client, name: str, target: str, **extra: str) -> dict[str, Any]:
    labels = {"alertname": name, "target": target, **extra}
    resp = client.post(
        "/api/v1/alerts",
        json=alert_payload(labels, fingerprint=fingerprint(name, target), starts_at=BASE),
    )
    assert resp.status_code == 200, resp.text
    return ended(client, resp.json()["started"][0]["heal_id"])


def dry_run_heal(client: httpx.Client, target: str) -> dict[str, Any]:
    resp = client.post(
        "/api/v1/heals",
        headers=HEADERS,
        json={"rule": "poke", "labels": {"alertname": "Poke", "target": target}, "dry_run": True},
    )
    assert resp.status_code == 202, resp.text
    return ended(client, resp.json()["heal_id"])


def rows(out: str) -> list[str]:
    """The table's rows, header checked and dropped."""
    header, *body = out.splitlines()
    assert header.split()[:3] == ["ID", "CREATED", "(UTC)"], header
    return body


def test_table_filters_by_rule_outcome_target_and_time(
    client: httpx.Client, capsys: pytest.CaptureFixture[str]
) -> None:
    """Three heals (poke on t1, poke2 on t2, a dry run of poke on t3) list newest first;
    each filter keeps exactly the heals it names; ``--since`` counts back from now, so a
    window shorter than the time since the last heal lists none."""
    first = alert_heal(client, "Poke", "t1")
    second = alert_heal(client, "Poke2", "t2")
    third = dry_run_heal(client, "t3")

    assert cli(client, "heals") == 0
    listed = rows(capsys.readouterr().out)
    assert [line.split()[0] for line in listed] == [third["id"], second["id"], first["id"]]
    assert "dry_run" in listed[0] and "test:t3" in listed[0]
    assert "poke2" in listed[1] and first["outcome"] in listed[2]

    for argv, expected in (
        (("--rule", "poke2"), [second]),
        (("--outcome", "dry_run"), [third]),
        (("--target", "test:t1"), [first]),
        (("--rule", "poke", "--outcome", first["outcome"]), [first]),
        (("--since", "1h"), [third, second, first]),
        (("--limit", "1"), [third]),
    ):
        assert cli(client, "heals", *argv) == 0, argv
        got = [line.split()[0] for line in rows(capsys.readouterr().out)]
        assert got == [h["id"] for h in expected], argv

    time.sleep(0.3)  # ordering only: the window below ends before it, whatever the box's speed
    assert cli(client, "heals", "--since", "200ms") == 0
    assert capsys.readouterr().out == "no heals\n"
    assert cli(client, "heals", "--rule", "no-such-rule", "--json") == 0
    assert '"heals": []' in capsys.readouterr().out


def test_one_heal_prints_its_timeline(
    client: httpx.Client, capsys: pytest.CaptureFixture[str]
) -> None:
    """``healer heal ID`` prints what the heal was and how it ended, then one line per
    timeline entry in order (match, check, act, verify, outcome) with the time since the
    heal began; ``--json`` prints the API's document."""
    heal = alert_heal(client, "Poke", "t1")
    assert cli(client, "heal", heal["id"]) == 0
    out = capsys.readouterr().out
    head, _, steps = out.partition("\ntimeline\n")
    assert head.startswith(f"heal {heal['id']}: {heal['outcome']}")
    assert "rule       poke (test.noop)" in head and "targets    test:t1" in head
    assert "alertname=Poke" in head and "alert started 2026-01-01T08:00:00" in head
    lines = steps.splitlines()
    assert len(lines) == len(heal["timeline"])
    assert [line.split()[2] for line in lines] == [e["kind"] for e in heal["timeline"]]
    assert all(line.split()[0].startswith("+") for line in lines)
    assert cli(client, "heal", heal["id"], "--json") == 0
    assert f'"id": "{heal["id"]}"' in capsys.readouterr().out


def test_hostile_label_prints_as_text(
    client: httpx.Client, capsys: pytest.CaptureFixture[str]
) -> None:
    """A label value holding terminal escapes (set the window title, clear the screen) and a
    newline reaches neither the table nor the report raw: control characters print as
    escapes, so the terminal shows the text and each heal stays one line."""
    heal = alert_heal(client, "Poke", "t1", note=HOSTILE)
    assert cli(client, "heal", heal["id"]) == 0
    out = capsys.readouterr().out
    assert "\x1b" not in out and "\x07" not in out
    assert r"note=\x1b]0;pwned\x07\x1b[2J<b>x</b>\nnext" in out
    assert cli(client, "heals") == 0
    assert "\x1b" not in capsys.readouterr().out


def test_bad_input_exits_with_the_reason(
    client: httpx.Client, capsys: pytest.CaptureFixture[str]
) -> None:
    """A duration that is not one and a limit out of range exit 2 naming the flag; an
    unknown outcome is refused by the parser (exit 2); an unknown heal id, or one that
    tries to climb the URL path, exits 1 with the daemon's 404."""
    assert cli(client, "heals", "--since", "yesterday") == 2
    assert "--since: 'yesterday' is not a duration" in capsys.readouterr().err
    for argv in (("--limit", "0"), ("--limit", "501"), ("--outcome", "healed")):
        with pytest.raises(SystemExit) as exit_:
            cli(client, "heals", *argv)
        assert exit_.value.code == 2, argv
        assert argv[0] in capsys.readouterr().err
    for heal_id in ("no-such-heal", "../../metrics", "x?limit=1"):
        assert cli(client, "heal", heal_id) == 1, heal_id
        assert "HTTP 404" in capsys.readouterr().err


def test_needs_the_admin_token_when_one_is_set(
    client: httpx.Client, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Without the token (none in the environment) the daemon says 401 and the CLI exits 1,
    printing the reason and never a token."""
    monkeypatch.delenv("HEALER_ADMIN_TOKEN")
    assert cli(client, "heals") == 1
    err = capsys.readouterr().err
    assert "HTTP 401" in err and ADMIN not in err
