"""Secrets stay secret: tokens are compared in constant time and never logged; DSN
passwords are masked in logs, heal reasons and timelines (on disk too), the history
API, readiness answers and config errors.

The real CLI's exposure rule (``serve --listen 0.0.0.0``) is tested in
tests/integration/test_cli_security.py.
"""

from __future__ import annotations

import base64
import json
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any, ClassVar

import pytest
from structlog.testing import capture_logs

from healer.api import ActResult, CheckResult, HandlerParams, HealContext, Target
from healer.cli import main
from healer.config import Secrets
from healer.http import auth
from healer.logs import redact_secrets
from healer.plugins import HandlerRegistry
from tests.support.inprocess.inproc import noop_config, running_healer
from tests.support.inprocess.payloads import alert_payload

WEBHOOK_TOKEN = "wh-SECRET-token-1"
ADMIN_TOKEN = "adm-SECRET-token-2"
WRONG_TOKEN = "wrong-SECRET-token-3"
PASSWORD = "pw-SECRET-4"
DSN = f"postgresql://healer:{PASSWORD}@db.internal:5432/odoo"


# --- tokens ---------------------------------------------------------------------------------


async def test_every_token_check_goes_through_compare_digest(
    tmp_path: Path, handlers: HandlerRegistry, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Bearer, basic-auth user and password, and admin token are each compared with
    hmac.compare_digest (constant time), never with ``==``."""
    compared: list[tuple[bytes, bytes]] = []
    real = auth.hmac.compare_digest

    def spy(a: bytes, b: bytes) -> bool:
        compared.append((a, b))
        return real(a, b)

    monkeypatch.setattr(auth.hmac, "compare_digest", spy)
    secrets = Secrets(
        webhook_token=WEBHOOK_TOKEN, webhook_basic=("am", PASSWORD), admin_token=ADMIN_TOKEN
    )
    body = alert_payload({"alertname": "Nothing"})
    async with running_healer(
        noop_config(tmp_path / "j.db"), handlers=handlers, secrets=secrets
    ) as h:
        steps = [
            ("/api/v1/alerts", {"Authorization": f"Bearer {WEBHOOK_TOKEN}"}, 200, 1),
            (
                "/api/v1/alerts",
                {"Authorization": "Basic " + base64.b64encode(f"am:{PASSWORD}".encode()).decode()},
                200,
                2,
            ),
            ("/api/v1/alerts", {"Authorization": f"Bearer {WRONG_TOKEN}"}, 401, 1),
        ]
        for path, headers, status, comparisons in steps:
            before = len(compared)
            resp = await h.client.post(path, json=body, headers=headers)
            assert resp.status_code == status
            assert len(compared) - before == comparisons, path
        before = len(compared)
        resp = await h.client.get(
            "/api/v1/heals", headers={"Authorization": f"Bearer {WRONG_TOKEN}"}
        )
        assert resp.status_code == 401
        assert len(compared) - before == 1


async def test_the_challenge_names_basic_when_basic_auth_is_configured(
    tmp_path: Path, handlers: HandlerRegistry
) -> None:
    """A 401 tells the client which schemes work: Bearer always, Basic when configured."""
    async with running_healer(
        noop_config(tmp_path / "j.db"),
        handlers=handlers,
        secrets=Secrets(webhook_basic=("am", PASSWORD)),
    ) as h:
        resp = await h.client.post("/api/v1/alerts", json=alert_payload({"alertname": "A"}))
    assert resp.status_code == 401
    assert resp.headers["www-authenticate"] == 'Bearer realm="healer", Basic realm="healer"'


async def test_no_token_reaches_the_logs_in_a_full_request_cycle(
    tmp_path: Path, handlers: HandlerRegistry
) -> None:
    """Webhook accepted and refused, a manual trigger run to its outcome, history read
    with a right and a wrong admin token: no token, right or wrong, in any log event."""
    secrets = Secrets(webhook_token=WEBHOOK_TOKEN, admin_token=ADMIN_TOKEN)
    with capture_logs() as logs:
        async with running_healer(
            noop_config(tmp_path / "j.db"), handlers=handlers, secrets=secrets
        ) as h:
            hook = {"Authorization": f"Bearer {WEBHOOK_TOKEN}"}
            resp = await h.client.post(
                "/api/v1/alerts",
                headers=hook,
                json=alert_payload({"alertname": "Poke", "target": "t1"}),
            )
            await h.wait_for_outcome(resp.json()["started"][0]["heal_id"])
            for token in (WRONG_TOKEN, ADMIN_TOKEN):
                await h.client.post(
                    "/api/v1/alerts",
                    json=alert_payload({"alertname": "A"}),
                    headers={"Authorization": f"Bearer {token}"},
                )
            resp = await h.client.post(
                "/api/v1/heals",
                headers=h.admin_headers,
                json={"handler": "test.noop", "params": {"target": "t2"}, "reason": "by hand"},
            )
            await h.wait_for_outcome(resp.json()["heal_id"])
            await h.client.get("/api/v1/heals", headers=h.admin_headers)
            await h.client.get("/api/v1/heals", headers={"Authorization": f"Bearer {WRONG_TOKEN}"})
    assert len(logs) > 5
    text = repr(logs)
    for secret in (WEBHOOK_TOKEN, ADMIN_TOKEN, WRONG_TOKEN):
        assert secret not in text


# --- DSN passwords ------------------------------------------------------------------------


class LeakyParams(HandlerParams):
    step: str = "check"


class Leaky:
    """A handler whose library leaks its connection string into errors and evidence."""

    name: ClassVar[str] = "test.leaky"
    Params: ClassVar[type[HandlerParams]] = LeakyParams
    requires: ClassVar[frozenset[str]] = frozenset({"postgres"})

    async def check(self, ctx: HealContext, params: LeakyParams) -> CheckResult:
        await ctx.record("note", {"connecting": DSN, "kv": f"host=db password={PASSWORD}"})
        if params.step == "check":
            raise RuntimeError(f"could not connect to {DSN}: timeout")
        return CheckResult(targets=[Target(kind="test", name="db")], evidence={"dsn": DSN})

    async def act(self, ctx: HealContext, params: LeakyParams, check: CheckResult) -> ActResult:
        return ActResult(summary=f"reconnected {DSN}", details={"urls": [DSN]})


def _leaky_config(journal: Path) -> dict[str, Any]:
    return {
        **noop_config(journal),
        "allow": [{"kind": "test", "name": "*"}],
        "databases": {"odoo": {"dsn_env": "ODOO_DSN", "connect_timeout": "1s"}},
        "rules": [
            {
                "name": "leak",
                "match": 'alertname="Leak"',
                "handler": "test.leaky",
                "params": {"step": "{{ labels.step }}"},
                "verify": {"stable_for": "0s", "timeout": "0.2s"},
            }
        ],
    }


async def test_a_password_in_a_handler_error_is_masked_everywhere(tmp_path: Path) -> None:
    """A handler that puts a DSN with its password into an exception, a timeline note,
    evidence and its act summary: the password is in no log event, no heal reason or
    timeline served by the API, no readiness answer, and nowhere in the journal files."""
    handlers = HandlerRegistry.from_entry_points(("test.leaky", Leaky()))
    journal = tmp_path / "j.db"
    secrets = Secrets(
        admin_token=ADMIN_TOKEN,
        databases={"odoo": f"postgresql://healer:{PASSWORD}@127.0.0.1:1/odoo"},
    )
    # Captured through the redaction processor, as configure_logging puts it in every
    # pipeline (test_configured_logging_masks_structlog_and_stdlib_records).
    with capture_logs(processors=[redact_secrets]) as logs:
        async with running_healer(_leaky_config(journal), handlers=handlers, secrets=secrets) as h:
            ids = []
            for step in ("check", "act"):
                resp = await h.client.post(
                    "/api/v1/alerts",
                    json=alert_payload({"alertname": "Leak", "step": step}, fingerprint=f"f{step}"),
                )
                ids.append(resp.json()["started"][0]["heal_id"])
            failed = await h.wait_for_outcome(ids[0])
            await h.wait_for_outcome(ids[1])
            served = [
                (await h.client.get(f"/api/v1/heals/{i}", headers=h.admin_headers)).text
                for i in ids
            ]
            served.append((await h.client.get("/api/v1/heals", headers=h.admin_headers)).text)
            ready = await h.client.get("/health/ready")
    assert failed["reason"] == (
        "check failed: RuntimeError: could not connect to "
        "postgresql://healer:***@db.internal:5432/odoo: timeout"
    )
    assert ready.status_code == 503 and "postgres:odoo" in ready.json()["checks"]
    assert "***" in served[0] and "***" in served[1]
    for text in [*served, ready.text, repr(logs)]:
        assert PASSWORD not in text
    on_disk = b"".join(p.read_bytes() for p in tmp_path.glob("j.db*"))
    assert PASSWORD.encode() not in on_disk


async def test_a_password_in_an_alert_label_is_masked_in_the_api(
    tmp_path: Path, handlers: HandlerRegistry
) -> None:
    """Labels are journaled as received (a restart re-runs the heal from them), but the
    history API shows them with passwords masked."""
    async with running_healer(noop_config(tmp_path / "j.db"), handlers=handlers) as h:
        resp = await h.client.post(
            "/api/v1/alerts", json=alert_payload({"alertname": "Poke", "target": "t1", "url": DSN})
        )
        heal_id = resp.json()["started"][0]["heal_id"]
        await h.wait_for_outcome(heal_id)
        heal = (await h.client.get(f"/api/v1/heals/{heal_id}", headers=h.admin_headers)).json()
        listed = (await h.client.get("/api/v1/heals", headers=h.admin_headers)).text
    assert heal["labels"]["url"] == "postgresql://healer:***@db.internal:5432/odoo"
    assert PASSWORD not in json.dumps(heal) and PASSWORD not in listed


def test_the_log_processor_masks_every_value() -> None:
    """redact_secrets masks URL and key=value passwords in the message, in fields, in
    nested structures and in rendered exception text."""
    event = redact_secrets(
        None,
        "info",
        {
            "event": f"connecting to {DSN}",
            "dsn": f"host=h password={PASSWORD} user=u",
            "nested": {"urls": [DSN, ("x", DSN)]},
            "exception": f"Traceback...\nError: {DSN}",
            "count": 3,
        },
    )
    assert PASSWORD not in repr(event)
    assert event["event"] == "connecting to postgresql://healer:***@db.internal:5432/odoo"
    assert event["dsn"] == "host=h password=*** user=u"
    assert event["count"] == 3


def test_configured_logging_masks_structlog_and_stdlib_records() -> None:
    """With healer's real logging set-up (as ``healer serve`` does it), a password in a
    structlog event, in a logged exception, and in a standard-library record (uvicorn's
    loggers) comes out masked. Run in a child process: logging config is global."""
    code = textwrap.dedent(f"""
        import logging, structlog
        from healer.logs import configure_logging
        configure_logging(json=True)
        structlog.get_logger("t").info("up", dsn={DSN!r})
        try:
            raise RuntimeError({DSN!r})
        except RuntimeError:
            structlog.get_logger("t").exception("failed")
            logging.getLogger("uvicorn.error").exception("uvicorn saw %s", {DSN!r})
    """)
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    )
    lines = [json.loads(line) for line in out.stderr.splitlines()]
    assert [line["event"] for line in lines] == [
        "up",
        "failed",
        "uvicorn saw postgresql://healer:***@db.internal:5432/odoo",
    ]
    assert "RuntimeError: postgresql://healer:***@" in lines[1]["exception"]
    assert PASSWORD not in out.stderr


def test_check_config_never_prints_a_password(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """check-config quotes some bad values in its errors; a DSN typed into the wrong key,
    or a DSN with a password inline, is reported without the password."""
    path = tmp_path / "healer.yml"
    path.write_text(
        textwrap.dedent(f"""
        shutdown_grace: "{DSN}"
        databases:
          odoo: {{dsn: "{DSN}"}}
    """)
    )
    assert main(["check-config", str(path)]) == 1
    captured = capsys.readouterr()
    assert "shutdown_grace" in captured.err and "databases.odoo" in captured.err
    assert "postgresql://healer:***@db.internal" in captured.err
    assert PASSWORD not in captured.out + captured.err
