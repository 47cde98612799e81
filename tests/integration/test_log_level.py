"""``log.level`` / ``serve --log-level`` and ``log.requests`` through the real ``healer
serve`` process: the per-request "webhook accepted" line is logged at debug by default
(left out of an info log), at info with ``log.requests: info``, back at ``--log-level
debug`` (which overrides the file), and gone with every other info line at ``log.level:
warning`` even when ``log.requests: info``.
A bad level is a config error naming the key."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from healer.cli import main
from tests.support import HealerFactory
from tests.support.inprocess.payloads import alert_payload


def write_config(tmp_path: Path, **log: str) -> Path:
    path = tmp_path / "healer.yml"
    config: dict[str, Any] = {
        "journal": str(tmp_path / "journal.db"),
        "prometheus": {"url": "http://127.0.0.1:9", "timeout": "0.2s"},
    }
    if log:
        config["log"] = log
    path.write_text(yaml.safe_dump(config))
    return path


def events(tmp_path: Path, healer_process: HealerFactory, *args: str, **log: str) -> list[str]:
    """The ``event`` of every JSON log line of a healer that took one webhook post."""
    healer = healer_process.start(
        write_config(tmp_path, **log),
        args=["--log-format", "json", *args],
        env={"HEALER_WEBHOOK_TOKEN": "", "HEALER_ADMIN_TOKEN": ""},
    )
    with httpx.Client(base_url=healer.url, timeout=5) as client:
        body = alert_payload({"alertname": "Nothing"}, fingerprint="abc123")
        assert client.post("/api/v1/alerts", json=body).status_code == 200
    healer.stop()  # flushes and closes the log
    text = healer.log_path.read_text()  # after the factory's "=== argv" header line
    lines = [json.loads(line) for line in text.splitlines() if line.startswith("{")]
    return [line["event"] for line in lines]


@pytest.mark.parametrize(
    ("log", "args", "accepted", "started"),
    [
        ({}, (), False, True),
        ({"requests": "info"}, (), True, True),
        ({"requests": "debug"}, (), False, True),
        ({}, ("--log-level", "debug"), True, True),
        ({"level": "warning", "requests": "info"}, (), False, False),
        ({"level": "warning", "requests": "info"}, ("--log-level", "info"), True, True),
    ],
    ids=[
        "default",
        "requests-info",
        "requests-debug",
        "cli-debug",
        "warning",
        "cli-overrides-file",
    ],
)
def test_levels(
    tmp_path: Path,
    healer_process: HealerFactory,
    log: dict[str, str],
    args: tuple[str, ...],
    accepted: bool,
    started: bool,
) -> None:
    """Whether "webhook accepted" and the info line "healer started" reach the log follows
    the file's ``log:`` and the command line's ``--log-level`` as documented."""
    seen = events(tmp_path, healer_process, *args, **log)
    assert ("webhook accepted" in seen) is accepted, seen
    assert ("healer started" in seen) is started, seen


def test_bad_level_is_a_config_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """``log.level: verbose`` and ``log.requests: warning`` are refused by check-config,
    each error naming its key; ``--log-level loud`` is refused by the parser (exit 2)."""
    path = tmp_path / "bad.yml"
    path.write_text(yaml.safe_dump({"log": {"level": "verbose", "requests": "warning"}}))
    assert main(["check-config", str(path)]) == 1
    err = capsys.readouterr().err
    assert "log.level" in err and "log.requests" in err
    with pytest.raises(SystemExit) as exit_:
        main(["serve", "--config", str(path), "--log-level", "loud"])
    assert exit_.value.code == 2
