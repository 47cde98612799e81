"""Rule matching happens outside the journal's write transaction, with RE2: a large or
hostile label value costs linear time and never holds up other posts or heal writes.
Real journal files, the real app in-process; no fakes."""

from __future__ import annotations

import asyncio
import json
import threading
from pathlib import Path
from typing import Any

import pytest
import yaml

from healer.api import Alert
from healer.cli import main
from healer.plugins import HandlerRegistry
from healer.store import HealPlan, ReceivedAlert, SqliteStore
from tests.support.inprocess.inproc import running_healer, web_alert, web_config
from tests.support.inprocess.payloads import payload
from tests.unit.test_journal_group_commit import _alert

PLAN = HealPlan("poke", "test.noop", {}, {}, False)
BOUND = 30.0  # a deadlock guard only: nothing here asserts how long anything took


def _big_body(alerts: list[Alert], size: int) -> str:
    return json.dumps(
        {
            "alerts": [{"labels": a.labels, "annotations": a.annotations} for a in alerts],
            "pad": "x" * size,
        }
    )


@pytest.mark.parametrize("size", [0, 512 * 1024], ids=["small-post", "large-post"])
async def test_matching_never_runs_on_the_journal_thread(tmp_path: Path, size: int) -> None:
    """Whatever the size of a post, the rules are matched before its write is queued,
    never on the journal's thread (where every write waits behind it)."""
    threads: list[str] = []

    def match(a: ReceivedAlert) -> HealPlan:
        threads.append(threading.current_thread().name)
        return PLAN

    alerts = [_alert(f"fp{i}") for i in range(3)]
    journal = await SqliteStore.open(tmp_path / "journal.db")
    try:
        body = _big_body(alerts, size) if size else None
        out = await journal.ingest(alerts, match, body=body)
    finally:
        await journal.close()
    assert [d.status for d in out] == ["started"] * 3
    assert len(threads) == 3
    assert not any(name.startswith("healer-journal") for name in threads), threads


async def test_a_small_post_is_stored_while_a_large_one_is_still_being_matched(
    tmp_path: Path,
) -> None:
    """A large post whose matching has not finished (held on an event) does not block a
    small post's write: the small one is journaled first, then the large one completes.
    Were matching inside the write transaction, the small write would wait forever."""
    entered, release = threading.Event(), threading.Event()

    def slow_match(a: ReceivedAlert) -> HealPlan:
        entered.set()
        if not release.wait(BOUND):
            raise AssertionError("never released")
        return PLAN

    journal = await SqliteStore.open(tmp_path / "journal.db")
    try:
        big = [_alert("big")]
        large = asyncio.create_task(
            journal.ingest(big, slow_match, body=_big_body(big, 256 * 1024))
        )
        assert await asyncio.to_thread(entered.wait, BOUND)
        [small] = await asyncio.wait_for(journal.ingest([_alert("small")], lambda _: PLAN), BOUND)
        assert small.status == "started"
        assert not large.done()
        release.set()
        [done] = await asyncio.wait_for(large, BOUND)
        assert done.status == "started"
        again = await journal.ingest([_alert("big"), _alert("small")], lambda _: PLAN)
    finally:
        release.set()
        await journal.close()
    # Exactly-once still holds for both.
    assert [d.status for d in again] == ["duplicate", "duplicate"]


async def test_a_256k_label_against_a_backtracking_rule_is_answered_with_others(
    tmp_path: Path, handlers: HandlerRegistry
) -> None:
    """The issue's case through the webhook: a 256 KiB label value against
    ``alertname=~".*Disk.*Full.*"`` is answered 200 (ignored, as Alertmanager would), and
    small posts sent alongside it are all answered 200 and started."""
    config = web_config(tmp_path, 9)
    config["webhook"] = {"max_body": "2MiB"}
    config["rules"].insert(
        0,
        {
            "name": "disk",
            "match": ['alertname=~".*Disk.*Full.*"'],
            "handler": "test.noop",
            "params": {"target": "web-disk"},
        },
    )
    hostile = web_alert("Disk" + "x" * (256 * 1024), "web-9")
    async with running_healer(config, handlers=handlers) as h:
        responses = await asyncio.wait_for(
            asyncio.gather(
                h.client.post("/api/v1/alerts", json=payload(hostile)),
                *(
                    h.client.post("/api/v1/alerts", json=payload(web_alert("WebDown", f"web-{i}")))
                    for i in range(5)
                ),
            ),
            BOUND,
        )
        assert [r.status_code for r in responses] == [200] * 6
        assert responses[0].json()["ignored"][0]["reason"] == "no rule matches"
        assert all(len(r.json()["started"]) == 1 for r in responses[1:])
        for r in responses[1:]:
            await h.wait_for_outcome(r.json()["started"][0]["heal_id"])


@pytest.mark.parametrize("pattern", ["(a)\\\\1", "(?=x)x", "(?<!a)b", "a++", "\\\\C"])
def test_check_config_refuses_what_go_re2_refuses_naming_the_rule(
    tmp_path: Path, pattern: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """A regex Alertmanager would refuse (backreference, lookaround, possessive, \\C)
    fails ``healer check-config`` with the rule's path in the message."""
    data: dict[str, Any] = {
        "rules": [
            {
                "name": "ok",
                "match": 'alertname="A"',
                "handler": "docker.restart",
                "params": {"containers": ["x"]},
            },
            {
                "name": "bad",
                "match": f'alertname=~"{pattern}"',
                "handler": "docker.restart",
                "params": {"containers": ["x"]},
            },
        ]
    }
    path = tmp_path / "healer.yml"
    path.write_text(yaml.safe_dump(data))
    assert main(["check-config", str(path)]) == 1
    err = capsys.readouterr().err
    assert "rules[1].match:" in err and "invalid regular expression" in err, err
