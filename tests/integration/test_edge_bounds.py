"""The real ``healer serve`` process (uvicorn, real sockets, healer's own logging set-up):
huge values in every field class get small answers and small log lines, and a client
that leaves mid-body is one warning line and a code="499" count, not a traceback and
a 500.
"""

from __future__ import annotations

import json
import socket
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from tests.support import HealerFactory
from tests.support.inprocess.payloads import alert_payload

HUGE = "Z" * 400_000  # well under the 1 MiB max_body, several hundred times the clip
SMALL_ANSWER = 4096
SMALL_LOG = 16_384  # bytes a request may add to the log (a few clipped lines)


@pytest.fixture
def serve(tmp_path: Path, healer_process: HealerFactory) -> Any:
    config = tmp_path / "healer.yml"
    config.write_text(
        yaml.safe_dump(
            {
                "journal": str(tmp_path / "journal.db"),
                "prometheus": {"url": "http://127.0.0.1:9", "timeout": "0.2s"},
                "allow": [{"kind": "docker", "name": "web-*"}],
                "rules": [
                    {
                        "name": "poke",
                        "match": 'alertname=~"Poke.*"',
                        "handler": "docker.restart",
                        "params": {"containers": ["{{ labels.target }}"]},
                        "dry_run": True,
                        "verify": {"stable_for": "0s", "timeout": "0.2s"},
                    }
                ],
            }
        )
    )
    return healer_process.start(config, env={"HEALER_ADMIN_TOKEN": "adm-edge-bounds"})


def _alert(**over: Any) -> dict[str, Any]:
    body = alert_payload({"alertname": "Poke", "target": "web-1"})
    alert = body["alerts"][0]
    for key, value in over.items():
        if key in ("version", "status", "receiver", "groupKey"):
            body[key] = value
        elif key in ("label_name", "label_value", "annotation"):
            field = "annotations" if key == "annotation" else "labels"
            name = value if key == "label_name" else "extra"
            alert[field] = {**alert[field], name: value if key != "label_name" else "v"}
        else:
            alert[key] = value
    return body


FIELDS = {  # field class -> the body carrying a huge value there
    "version": _alert(version=HUGE),
    "status": _alert(status=HUGE),
    "receiver": _alert(receiver=HUGE),
    "groupKey": _alert(groupKey=HUGE),
    "label name": _alert(label_name=HUGE),
    "label value": _alert(label_value=HUGE),
    "alertname": _alert(labels={"alertname": "Poke" + HUGE, "target": "web-1"}),
    "target label": _alert(labels={"alertname": "Poke", "target": "web-" + HUGE}),
    "annotation": _alert(annotation=HUGE),
    "startsAt": _alert(startsAt=HUGE),
    "fingerprint": _alert(fingerprint=HUGE),
    "generatorURL": _alert(generatorURL=HUGE),
}


def _wait_for(predicate: Any, what: str, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.1)


def test_huge_values_in_every_field_get_small_answers_and_log_lines(serve: Any) -> None:
    """A 400 KB value in each field class (version, status, receiver, groupKey, label name,
    label value, alertname, a templated label, annotation, startsAt, fingerprint,
    generatorURL) and in admin requests (rule, handler, heal id, query parameter): each
    answer stays under 4 KB and each request adds under 16 KB to the log."""
    admin = {"Authorization": "Bearer adm-edge-bounds"}
    with httpx.Client(base_url=serve.url, timeout=30.0) as client:
        requests: list[tuple[str, Any]] = [
            (name, lambda body=body: client.post("/api/v1/alerts", json=body))
            for name, body in FIELDS.items()
        ]
        requests += [
            (
                "manual rule",
                lambda: client.post("/api/v1/heals", headers=admin, json={"rule": HUGE}),
            ),
            (
                "manual handler",
                lambda: client.post("/api/v1/heals", headers=admin, json={"handler": HUGE}),
            ),
            (
                "manual label",
                lambda: client.post(
                    "/api/v1/heals",
                    headers=admin,
                    json={"rule": "poke", "labels": {"alertname": "Poke", "target": HUGE}},
                ),
            ),
            ("pause for", lambda: client.post("/api/v1/pause", headers=admin, json={"for": HUGE})),
            ("heal id", lambda: client.get(f"/api/v1/heals/{HUGE[:6000]}", headers=admin)),
            (
                "outcome",
                lambda: client.get("/api/v1/heals", headers=admin, params={"outcome": HUGE[:6000]}),
            ),
        ]
        for name, send in requests:
            before = serve.log_path.stat().st_size
            resp = send()
            assert resp.status_code < 500, (name, resp.text[:300])
            assert len(resp.content) < SMALL_ANSWER, (name, resp.text[:300])
            time.sleep(0.3)  # let the heal it may have started log its lines
            grown = serve.log_path.stat().st_size - before
            assert grown < SMALL_LOG, (name, grown, serve.log_tail(5)[:2000])
    assert "Traceback" not in serve.log_path.read_text(errors="replace")


def _metric(url: str, code: str) -> float:
    text = httpx.get(f"{url}/metrics", timeout=5.0).text
    for line in text.splitlines():
        if line.startswith(f'healer_webhook_requests_total{{code="{code}"}}'):
            return float(line.split()[-1])
    return 0.0


def test_a_client_leaving_mid_body_is_499_and_one_line(serve: Any) -> None:
    """Over a real socket: headers promising 2,000 bytes, 100 sent, the connection closed.
    healer counts code="499" (never 500) and logs one 'webhook rejected' line for it,
    with no traceback; it keeps serving."""
    body = json.dumps(alert_payload({"alertname": "Poke", "target": "web-1"})).encode()
    host, port = serve.url.removeprefix("http://").split(":")
    before = serve.log_path.stat().st_size
    with socket.create_connection((host, int(port)), timeout=5) as conn:
        conn.sendall(
            b"POST /api/v1/alerts HTTP/1.1\r\nHost: healer\r\n"
            b"Content-Type: application/json\r\nContent-Length: 2000\r\n\r\n" + body[:100]
        )
        time.sleep(0.2)
    _wait_for(lambda: _metric(serve.url, "499") == 1, 'code="499" counted')
    assert _metric(serve.url, "500") == 0
    with serve.log_path.open("rb") as log:
        log.seek(before)
        added = log.read().decode(errors="replace")
    assert "Traceback" not in added and "Exception" not in added, added
    rejected = [line for line in added.splitlines() if "webhook rejected" in line]
    assert len(rejected) == 1 and "499" in rejected[0], added
    assert (
        httpx.post(
            f"{serve.url}/api/v1/alerts",
            content=body,
            timeout=10.0,
            headers={"Content-Type": "application/json"},
        ).status_code
        == 200
    )
