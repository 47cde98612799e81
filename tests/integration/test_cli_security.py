"""The exposure rule and token hygiene through the real ``healer serve`` process.

Listening beyond loopback without webhook auth is refused at start-up (non-zero exit,
a message saying what to set) unless ``allow_insecure: true``; with a token it starts,
and neither the token nor a wrong one ever reaches its log. Only loopback is ever
connected to: a 0.0.0.0 listener also serves 127.0.0.1.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import yaml

from tests.support import HealerFactory
from tests.support.env import free_port
from tests.support.inprocess.payloads import alert_payload

WEBHOOK_TOKEN = "wh-SECRET-cli-1"
ADMIN_TOKEN = "adm-SECRET-cli-2"
WRONG_TOKEN = "wrong-SECRET-cli-3"


def write_config(tmp_path: Path, **over: Any) -> Path:
    path = tmp_path / "healer.yml"
    path.write_text(
        yaml.safe_dump(
            {
                "journal": str(tmp_path / "journal.db"),
                "prometheus": {"url": "http://127.0.0.1:9", "timeout": "0.2s"},
                **over,
            }
        )
    )
    return path


def clean_env() -> dict[str, str]:
    """This environment without any healer token, so only the test decides auth."""
    return {
        k: v
        for k, v in os.environ.items()
        if k
        not in (
            "HEALER_WEBHOOK_TOKEN",
            "HEALER_WEBHOOK_PASSWORD",
            "HEALER_ADMIN_TOKEN",
            "HEALER_CONFIG",
        )
    }


def test_serve_refuses_to_listen_beyond_loopback_without_auth(tmp_path: Path) -> None:
    """``healer serve --listen 0.0.0.0:PORT`` with no webhook token exits 1 before
    binding, saying why and what to set."""
    port = free_port()
    listen = f"0.0.0.0:{port}"
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "healer",
            "serve",
            "--config",
            str(write_config(tmp_path)),
            "--listen",
            listen,
        ],
        capture_output=True,
        text=True,
        timeout=60,
        env=clean_env(),
        cwd=tmp_path,
        stdin=subprocess.DEVNULL,
    )
    assert proc.returncode == 1, proc.stderr
    assert f"listen: {listen} is beyond loopback and the webhook has no auth" in proc.stderr
    assert "HEALER_WEBHOOK_TOKEN" in proc.stderr and "allow_insecure: true" in proc.stderr
    assert not (tmp_path / "journal.db").exists()


def test_allow_insecure_lets_it_listen_beyond_loopback(
    tmp_path: Path, healer_process: HealerFactory
) -> None:
    """With ``allow_insecure: true`` the same unauthenticated listener starts and serves."""
    healer = healer_process.start(
        write_config(tmp_path, allow_insecure=True),
        host="0.0.0.0",
        env={k: "" for k in ("HEALER_WEBHOOK_TOKEN", "HEALER_ADMIN_TOKEN")},
    )
    assert healer.argv[-1].startswith("0.0.0.0:")
    with httpx.Client(base_url=healer.url, timeout=5) as client:
        assert client.get("/health").json() == {"status": "ok"}


def test_tokens_let_it_listen_beyond_loopback_and_never_reach_its_log(
    tmp_path: Path, healer_process: HealerFactory
) -> None:
    """With tokens from the environment a 0.0.0.0 listener starts; across accepted and
    refused webhook posts and history reads, no token, right or wrong, is in its log."""
    healer = healer_process.start(
        write_config(tmp_path, log={"requests": "info"}),  # the per-request line in the log too
        host="0.0.0.0",
        env={"HEALER_WEBHOOK_TOKEN": WEBHOOK_TOKEN, "HEALER_ADMIN_TOKEN": ADMIN_TOKEN},
    )
    body = alert_payload({"alertname": "Nothing"}, fingerprint="abc123")
    with httpx.Client(base_url=healer.url, timeout=5) as client:

        def post(token: str | None) -> int:
            headers = {"Authorization": f"Bearer {token}"} if token else {}
            return client.post("/api/v1/alerts", json=body, headers=headers).status_code

        assert [post(None), post(WRONG_TOKEN), post(ADMIN_TOKEN), post(WEBHOOK_TOKEN)] == [
            401,
            401,
            401,
            200,
        ]
        bearer = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
        assert client.get("/api/v1/heals", headers=bearer).status_code == 200
        assert client.get("/api/v1/heals", params={"token": ADMIN_TOKEN}).status_code == 401
    healer.stop()  # flushes and closes the log
    log = healer.log_path.read_text()
    assert "webhook accepted" in log and "webhook rejected" not in log
    for secret in (WEBHOOK_TOKEN, ADMIN_TOKEN, WRONG_TOKEN):
        assert secret not in log
