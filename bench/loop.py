"""Whole loop: each Odoo runbook fault healed through real Prometheus and Alertmanager,
phase by phase, with who owns each phase.

Every repetition of every scenario runs on a fresh world: the scenario of
tests/support/scenarios/odoo_scenarios.py (the code the end-to-end tests run: the same fault,
exporters, the shipped alert rule at test speed, Alertmanager with ``group_wait: 0s``,
``healer serve`` with the shipped Odoo rule), then the fault is injected and the heal's
milestones are read from the source that knows each one (OdooLoop.milestones):

==========  =====================================================================
fault       the bench's clock, when it broke the thing
pending     Prometheus: first rule evaluation with the alert pending (raw ALERTS)
firing      Prometheus: first evaluation with the alert firing (raw ALERTS)
webhook     healer journaled the alert Alertmanager posted (the ``matched`` event)
check, act  healer's timeline: check done, act done
gone        Prometheus: first evaluation after the last firing sample
seen        healer's first sample of its final healthy streak
outcome     healer journaled ``recovered``
==========  =====================================================================

Phases (:data:`PHASES`) run between consecutive milestones and each has an owner:
Prometheus (detect: scrape, rule threshold, evaluation; then the rule's ``for:``),
Alertmanager (firing -> webhook: Prometheus' notifier, ``group_wait``, the POST),
healer (check, act, and the polling lag between the alert's end and healer seeing
it), the service with Prometheus (act -> gone: the service comes back, the next scrape
and evaluation clear the alert) and healer's deliberate hold (``stable_for``, raised to
the rule's ``for:`` plus one interval, so that a relapse cannot pass for a recovery).

Scenarios run interleaved (one repetition of each, then the next), so a busy machine
weighs on all alike. Figures: every repetition's milestones and phases; per scenario
the median of each phase and of each owner's share. Table: healer-owned seconds
(check + act + poll) against Prometheus + Alertmanager-owned (fault -> webhook), as
medians, and their ratio. The alert rules run at test speed (1 s scrapes and
evaluations, ``for:`` of 1-2 s instead of 30 s-10 min): in production the Prometheus
share is minutes. No target on times; the target is that every heal recovered. The
picture (:mod:`bench.timeline`) shows, per scenario, the repetition with the median
fault -> recovered time.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import pytest

from bench.common import Context, Result, Target, machine, median, ratio
from tests.support.scenarios.odoo_loop import TEST_SPEED, shipped_rule
from tests.support.scenarios.odoo_scenarios import SCENARIOS, odoo_world
from tests.support.servers.containers import ContainerFactory, build_busybox_image, connect_docker

NAME = "loop"
DESCRIPTION = (
    "the Odoo runbook's faults healed through real Prometheus and Alertmanager: "
    "time per phase, healer's share against theirs"
)
HEAL_TIMEOUT = 90.0
"""Seconds a repetition waits for its heal's outcome."""
BUDGET = 15 * 60.0
"""No repetition starts after this many seconds: the whole run stays bounded."""


@dataclass(frozen=True)
class Phase:
    name: str
    owner: str
    start: str  # milestone names
    end: str
    what: str


PHASES = (
    Phase(
        "detect",
        "Prometheus",
        "fault",
        "pending",
        "fault -> pending: scrape, rule threshold, evaluation",
    ),
    Phase("for", "Prometheus", "pending", "firing", "pending -> firing: the rule's for:"),
    Phase(
        "notify",
        "Alertmanager",
        "firing",
        "webhook",
        "firing -> webhook: Prometheus' notifier, group_wait, POST, journal",
    ),
    Phase("check", "healer", "webhook", "check", "webhook -> check done"),
    Phase("act", "healer", "check", "act", "check -> act done"),
    Phase(
        "recover",
        "service",
        "act",
        "gone",
        "act -> alert gone: the service recovers, next scrape and evaluation",
    ),
    Phase("poll", "healer", "gone", "seen", "alert gone -> healer's verify sees it"),
    Phase(
        "stable_for",
        "healer hold",
        "seen",
        "outcome",
        "seen -> recovered: healer holds for stable_for",
    ),
)
OWNERS = {
    "Prometheus": "Prometheus",
    "Alertmanager": "Alertmanager",
    "healer": "healer (check, act, verify polling)",
    "service": "the service recovering + Prometheus noticing",
    "healer hold": "healer's stable_for hold",
}


def phases(milestones: Mapping[str, float | None]) -> dict[str, float | None]:
    """Seconds in each of :data:`PHASES`. Boundaries never go back: a milestone earlier
    than the one before it (the alert gone before healer finished acting, say) ends its
    phase at zero length. A missing milestone leaves its phase None."""
    out: dict[str, float | None] = {}
    previous = milestones["fault"]
    assert previous is not None
    for phase in PHASES:
        end = milestones.get(phase.end)
        if end is None:
            out[phase.name] = None
            continue
        end = max(end, previous)
        out[phase.name] = round(end - previous, 3)
        previous = end
    return out


def owned(durations: Mapping[str, float | None]) -> dict[str, float | None]:
    """Seconds per owner (None when a phase of that owner is missing), the Prometheus +
    Alertmanager sum and the whole fault -> recovered."""
    out: dict[str, float | None] = {}
    for owner in OWNERS:
        parts = [durations.get(p.name) for p in PHASES if p.owner == owner]
        out[owner] = None if None in parts else round(sum(p for p in parts if p), 3)
    prom, am = out["Prometheus"], out["Alertmanager"]
    out["Prometheus+Alertmanager"] = None if prom is None or am is None else round(prom + am, 3)
    values = [durations.get(p.name) for p in PHASES]
    out["total"] = None if None in values else round(sum(v for v in values if v), 3)
    return out


def _median(values: list[float | None]) -> float | None:
    value = median(values)
    return None if value is None else round(value, 3)


async def _one(ctx: Context, key: str, rep: int, docker: Any) -> dict[str, Any]:
    """One heal of scenario ``key`` on a fresh world, removed whatever happens."""
    workdir = ctx.workdir / f"{key}-{rep}"
    workdir.mkdir(parents=True, exist_ok=True)
    record: dict[str, Any] = {"scenario": key, "rep": rep}
    kind = SCENARIOS[key]
    containers = None
    if kind.needs_docker:
        if docker is None:
            record["error"] = "Docker unavailable"
            return record
        containers = ContainerFactory(*docker)
    try:
        with odoo_world(workdir, containers=containers) as world:
            async with kind.start(world) as scenario:
                fault_at = await scenario.inject()
                heal = await scenario.wait_for_heal(HEAL_TIMEOUT)
                milestones = scenario.loop.milestones(heal, fault_at)
    except (Exception, pytest.skip.Exception, pytest.fail.Exception) as exc:
        # A component missing (tests.support says so through pytest) or a broken run:
        # recorded, and the next repetition goes on.
        record["error"] = f"{type(exc).__name__}: {exc}"[:2000]
        return record
    durations = phases(milestones)
    record.update(
        outcome=heal["outcome"],
        reason=heal["reason"],
        heal_id=heal["id"],
        milestones=milestones,
        after_fault={
            k: None if v is None else round(v - fault_at, 3) for k, v in milestones.items()
        },
        phases=durations,
        owned=owned(durations),
        healer_durations=heal.get("durations"),
        act=[e["data"].get("summary") for e in heal["timeline"] if e["kind"] == "act"],
    )
    return record


def _docker(ctx: Context) -> tuple[Any, str] | None:
    try:
        client = connect_docker()
    except (pytest.skip.Exception, pytest.fail.Exception) as exc:
        print(f"    Docker unavailable ({exc}): the Docker scenarios fail", flush=True)
        return None
    try:
        return client, build_busybox_image(client, ctx.workdir / "busybox-image")
    except Exception:
        client.close()
        raise


def _progress(record: dict[str, Any], reps: int) -> str:
    head = f"    {record['scenario']:21} {record['rep']}/{reps}:"
    if "error" in record:
        return f"{head} FAILED {record['error'].splitlines()[0][:200]}"
    t = record["after_fault"]
    o = record["owned"]

    def s(v: float | None) -> str:
        return "-" if v is None else f"{v:.2f}"

    return (
        f"{head} {record['outcome']}; firing +{s(t['firing'])}, webhook "
        f"+{s(t['webhook'])}, act done +{s(t['act'])}, outcome +{s(t['outcome'])} s; "
        f"healer {s(o['healer'])} s, Prometheus+AM {s(o['Prometheus+Alertmanager'])} s"
    )


async def _run_all(ctx: Context, reps: int) -> list[dict[str, Any]]:
    started = time.monotonic()
    docker = _docker(ctx)
    records: list[dict[str, Any]] = []
    try:
        for rep in range(1, reps + 1):
            for key in SCENARIOS:
                if time.monotonic() - started > BUDGET:
                    records.append(
                        {
                            "scenario": key,
                            "rep": rep,
                            "error": f"skipped: the {BUDGET:.0f} s budget is spent",
                        }
                    )
                else:
                    records.append(await _one(ctx, key, rep, docker))
                print(_progress(records[-1], reps), flush=True)
    finally:
        if docker is not None:
            docker[0].close()
    return records


def summarise(records: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Per scenario: what it is, its runs, the median of each phase and owner share,
    the healer / Prometheus+Alertmanager ratio, and which run the picture shows."""
    out: dict[str, dict[str, Any]] = {}
    for key, kind in SCENARIOS.items():
        runs = [r for r in records if r["scenario"] == key]
        good = [r for r in runs if r.get("outcome") == "recovered"]
        summary: dict[str, Any] = {
            "title": kind.cls.title,
            "alert": kind.cls.alert,
            "handler": shipped_rule(kind.cls.alert)["handler"],
            "runs": runs,
            "recovered": len(good),
            "median": {p.name: _median([r["phases"][p.name] for r in good]) for p in PHASES},
            "owned": {
                o: _median([r["owned"][o] for r in good])
                for o in (*OWNERS, "Prometheus+Alertmanager", "total")
            },
        }
        summary["ratio_healer_to_prometheus_alertmanager"] = ratio(
            summary["owned"]["healer"], summary["owned"]["Prometheus+Alertmanager"]
        )
        if good:
            by_total = sorted(good, key=lambda r: r["owned"]["total"] or 0.0)
            summary["timeline_rep"] = by_total[(len(by_total) - 1) // 2]["rep"]
        out[key] = summary
    return out


def run(ctx: Context) -> Result:
    reps = ctx.pick(5, 1)
    records = asyncio.run(_run_all(ctx, reps))
    scenarios = summarise(records)
    figures: dict[str, Any] = {
        "phases": [asdict(p) for p in PHASES],
        "owners": OWNERS,
        "scenarios": scenarios,
    }
    table = []
    for s in scenarios.values():
        table.append(
            {
                "figure": f"{s['title']}: healer s (check+act+poll) vs Prometheus+AM s "
                "(fault -> webhook), medians",
                "healer": s["owned"]["healer"],
                "bare": s["owned"]["Prometheus+Alertmanager"],
                "ratio": s["ratio_healer_to_prometheus_alertmanager"],
            }
        )
    failures = sum(1 for r in records if r.get("outcome") != "recovered")
    params = {
        "repetitions": reps,
        "heal_timeout_s": HEAL_TIMEOUT,
        "scrape_and_evaluation_interval": "1s",
        "group_wait": "0s",
        "stable_for": "3s (raised by healer to the rule's for: + one interval)",
        "alert_rules_at_test_speed": {
            a: {"for": s.for_, "why": s.why} for a, s in TEST_SPEED.items()
        },
    }
    result = Result(
        NAME,
        figures,
        [Target("whole-loop heals not ending recovered", failures, "<=", 0)],
        table,
        params,
        runs=reps,
    )
    _picture(
        {
            "benchmark": NAME,
            "quick": ctx.quick,
            "machine": machine(),
            "params": params,
            "figures": figures,
        },
        ctx.results,
    )
    return result


def _picture(doc: dict[str, Any], results: Path) -> None:
    """The timeline picture, beside the JSON results of this run (``--results``)."""
    try:
        from bench.timeline import render
    except ImportError as exc:  # matplotlib is the `bench` extra
        print(f"    no timeline picture: {exc} (pip install -e '.[bench]')", flush=True)
        return
    path = render(doc, results / "timeline.png")
    print(f"    {path}", flush=True)
