"""What the web console's pages show (healer/console/routes.py, views.py), in-process with
the no-op handler: hostile label values, evidence and reasons render as text (autoescape),
the heal list filters by rule, outcome, target, time and awaiting approval, an unknown
heal is 404, the rules page shows recent outcomes and circuits, and the approve / reject
and circuit-close forms act through the shared functions."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest
from markupsafe import escape

from healer.config import Secrets
from healer.console.views import HealFilters, heal_list
from healer.plugins import HandlerRegistry
from tests.support.inprocess.console import login
from tests.support.inprocess.gates import ADMIN, fire, fire_and_wait, gates_config, until
from tests.support.inprocess.inproc import InProcessHealer, running_healer
from tests.support.inprocess.inproc import web_alert as alert

HOSTILE = ("<script>window.pwned=1</script>", '"><img src=x onerror=alert(1)>', "{{7*7}}")


async def _ids(h: InProcessHealer, query: str = "") -> list[str]:
    resp = await h.client.get(f"/ui/heals{query}")
    assert resp.status_code == 200, resp.text
    return [line.split('"')[0] for line in resp.text.split('data-heal="')[1:]]


@pytest.mark.parametrize("hostile", HOSTILE)
async def test_hostile_labels_evidence_and_reasons_render_as_text(
    healer: InProcessHealer, hostile: str
) -> None:
    """A label value, check evidence and a note holding markup or a template expression
    show literally (escaped) on the list and the heal page; nothing of them is markup."""
    [heal_id] = await healer.fire(alert("WebDown", "web-1", note=hostile))
    await healer.wait_for_outcome(heal_id)
    await healer.journal.add_event(heal_id, "done", "check", {"evidence": {"x": hostile}})
    await healer.journal.add_event(heal_id, "done", "note", {"reason": hostile})
    shown = str(escape(hostile))
    for path, least in (("/ui/heals", 1), (f"/ui/heals/{heal_id}", 3)):
        text = (await healer.client.get(path)).text
        assert text.count(shown) >= least, path  # the label (and evidence, note) as text
        if escape(hostile) != hostile:
            assert hostile not in text
        assert "<img" not in text and "<script>window" not in text
        assert "note=49" not in text  # {{7*7}} was not evaluated


async def test_list_filters_by_rule_outcome_target_and_time(healer: InProcessHealer) -> None:
    """The list's filters narrow it as the API's do: rule, outcome, target, "since", and
    an unknown outcome or time window is a 400 page."""
    ids = {}
    for name, instance in (("WebDown", "web-1"), ("WebDown", "web-2"), ("WebRehearse", "web-1")):
        [ids[(name, instance)]] = await healer.fire(alert(name, instance))
        await healer.wait_for_outcome(ids[(name, instance)])
    assert set(await _ids(healer)) == set(ids.values())
    assert await _ids(healer, "?rule=rehearse") == [ids[("WebRehearse", "web-1")]]
    assert await _ids(healer, "?outcome=dry_run") == [ids[("WebRehearse", "web-1")]]
    assert await _ids(healer, "?target=test:web-2") == [ids[("WebDown", "web-2")]]
    assert set(await _ids(healer, "?rule=poke-web&outcome=unverified&since=1h")) == {
        ids[("WebDown", "web-1")],
        ids[("WebDown", "web-2")],
    }
    assert await _ids(healer, "?rule=poke-web&outcome=recovered") == []
    assert await _ids(healer, "?rule=&outcome=&target=&since=") != []  # empty: no filter
    for bad in ("?outcome=nope", "?since=5y", "?before=x"):
        assert (await healer.client.get(f"/ui/heals{bad}")).status_code == 400


async def test_time_filter_counts_back_from_now(healer: InProcessHealer) -> None:
    """ "since" keeps the heals created within the window before now: seen from two hours
    later, "last 1h" lists none of them and "last 6h" all."""
    [heal_id] = await healer.fire(alert("WebDown", "web-1"))
    await healer.wait_for_outcome(heal_id)
    later = time.time() + 7200
    none, _ = await heal_list(healer.services, HealFilters(since="1h"), now=later)
    every, _ = await heal_list(healer.services, HealFilters(since="6h"), now=later)
    assert none == [] and [h["id"] for h in every] == [heal_id]


async def test_list_is_newest_first(healer: InProcessHealer) -> None:
    """Heals are listed newest first."""
    first = (await healer.fire(alert("WebDown", "web-1")))[0]
    await healer.wait_for_outcome(first)
    second = (await healer.fire(alert("WebDown", "web-2")))[0]
    await healer.wait_for_outcome(second)
    assert await _ids(healer) == [second, first]


async def test_unknown_heal_is_404(healer: InProcessHealer) -> None:
    """A heal id nobody journaled is a 404 page (escaped id, no traceback)."""
    resp = await healer.client.get("/ui/heals/%3Cscript%3Enope")
    assert resp.status_code == 404
    assert "&lt;script&gt;nope" in resp.text and "<script>nope" not in resp.text


async def test_heal_page_shows_timeline_steps_and_chart(healer: InProcessHealer) -> None:
    """One heal's page lists its timeline as steps (match, check, action, each verify
    sample, outcome) and draws the verify samples as an inline SVG with one point each."""
    [heal_id] = await healer.fire(alert("WebDown", "web-1"))
    heal = await healer.wait_for_outcome(heal_id)
    text = (await healer.client.get(f"/ui/heals/{heal_id}")).text
    for step in ("match", "check", "action", "verify", "outcome"):
        assert f'class="step {step}"' in text, step
    samples = sum(1 for e in heal["timeline"] if e["kind"] == "verify_sample")
    assert samples > 0
    assert text.count('data-kind="verify_sample"') == samples
    assert text.count('<circle class="sample') == samples
    assert '<svg xmlns="http://www.w3.org/2000/svg" class="chart"' in text


async def test_running_heals_are_marked_live(healer: InProcessHealer) -> None:
    """A heal without an outcome shows as live and the page loads live.js (the static
    file); a page without running heals does not."""
    [done] = await healer.fire(alert("WebDown", "web-2"))
    await healer.wait_for_outcome(done)
    assert "live.js" not in (await healer.client.get("/ui")).text
    import asyncio

    healer.noop.gate = asyncio.Event()
    [heal_id] = await healer.fire(alert("WebDown", "web-1"))
    try:
        await until(lambda: healer.noop.acts, what="the heal acting")
        text = (await healer.client.get("/ui")).text
        assert 'class="live"' in text and 'src="/ui/static/live.js"' in text
        assert 'data-live="5"' in (await healer.client.get(f"/ui/heals/{heal_id}")).text
    finally:
        healer.noop.gate.set()
    await healer.wait_for_outcome(heal_id)
    js = await healer.client.get("/ui/static/live.js")
    assert js.status_code == 200 and js.headers["content-type"].startswith("text/javascript")


def _approve_config(tmp_path: Path) -> dict[str, Any]:
    return gates_config(
        tmp_path,
        rule={"mode": "approve", "approval": {"timeout": "30s"}},
        safety={"budget": {"max_actions": 1, "window": "1h"}},
    )


async def test_approve_and_reject_buttons(tmp_path: Path, handlers: HandlerRegistry) -> None:
    """A heal awaiting approval shows approve and reject buttons to a logged-in user
    (listed by the "awaiting approval" filter); approving it through the page lets it act
    (via console, by the name given at login), rejecting another ends it rejected; a second
    decision is the 409 of approvals.decide."""
    async with running_healer(
        _approve_config(tmp_path), handlers=handlers, secrets=Secrets(admin_token=ADMIN)
    ) as h:
        csrf = await login(h.client, ADMIN, name="alice")
        first, second = await fire(h, "t1"), await fire(h, "t2")
        assert first and second

        async def awaiting() -> bool:
            return set(await _ids(h, "?awaiting=1")) == {first, second}

        await until(awaiting, what="two heals awaiting approval")
        page = (await h.client.get(f"/ui/heals/{first}")).text
        assert 'id="approve"' in page and 'id="reject"' in page
        assert (await h.client.post(f"/ui/heals/{first}/approve", data={})).status_code == 403
        resp = await h.client.post(
            f"/ui/heals/{first}/approve", data={"csrf": csrf, "comment": "go"}
        )
        assert resp.status_code == 303 and resp.headers["location"] == f"/ui/heals/{first}"
        resp = await h.client.post(f"/ui/heals/{second}/reject", data={"csrf": csrf})
        assert resp.status_code == 303
        done = await h.wait_for_outcome(first)
        assert done["outcome"] == "unverified"  # it acted; nobody answers verify
        [approved] = [e["data"] for e in done["timeline"] if e["kind"] == "approved"]
        assert approved["by"] == "alice" and approved["via"] == "console"
        assert (await h.wait_for_outcome(second))["outcome"] == "rejected"
        again = await h.client.post(f"/ui/heals/{first}/approve", data={"csrf": csrf})
        assert again.status_code == 409
        await h.idle()


async def test_rules_page_and_closing_a_circuit(tmp_path: Path, handlers: HandlerRegistry) -> None:
    """The rules page shows each rule's recent outcomes, its last action per target and
    its open circuit; the safety page closes the circuit (then none is open), and closing
    one that is not open is a 404 page."""
    config = gates_config(tmp_path, safety={"budget": {"max_actions": 1, "window": "1h"}})
    async with running_healer(config, handlers=handlers, secrets=Secrets(admin_token=ADMIN)) as h:
        csrf = await login(h.client, ADMIN)
        assert (await fire_and_wait(h, "t1", 0))["outcome"] == "unverified"
        assert (await fire_and_wait(h, "t1", 1))["outcome"] == "escalated"
        rules = (await h.client.get("/ui/rules")).text
        assert 'data-rule="poke"' in rules and 'data-rule="poke2"' in rules
        assert "open on test:t1" in rules
        assert ">unverified<" in rules and ">escalated<" in rules
        safety = (await h.client.get("/ui/safety")).text
        assert 'name="rule" value="poke"' in safety
        resp = await h.client.post(
            "/ui/circuits/close", data={"csrf": csrf, "rule": "poke", "target": "test:t1"}
        )
        assert resp.status_code == 303
        assert await h.services.gates.circuits() == []
        again = await h.client.post("/ui/circuits/close", data={"csrf": csrf, "rule": "poke"})
        assert again.status_code == 404 and "no open circuit" in again.text
        await h.idle()
