"""The whole-loop benchmark's arithmetic and picture, on made-up milestones: phases are
contiguous from the fault to the outcome, each second has exactly one owner, medians
skip failed runs, and the picture is drawn (no wall-clock time is asserted anywhere)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from bench.loop import PHASES, owned, phases, summarise
from tests.support.scenarios.odoo_scenarios import SCENARIOS

FAULT = 1_800_000_000.0


def milestones(**offsets: float | None) -> dict[str, float | None]:
    base = {
        "pending": 3.0,
        "firing": 4.0,
        "webhook": 4.1,
        "check": 4.2,
        "act": 4.5,
        "gone": 6.0,
        "seen": 6.5,
        "outcome": 9.5,
    }
    base.update(offsets)
    return {"fault": FAULT, **{k: None if v is None else FAULT + v for k, v in base.items()}}


def test_phases_run_back_to_back_from_the_fault_to_the_outcome() -> None:
    durations = phases(milestones())
    assert list(durations) == [p.name for p in PHASES]
    assert durations == {
        "detect": 3.0,
        "for": 1.0,
        "notify": 0.1,
        "check": 0.1,
        "act": 0.3,
        "recover": 1.5,
        "poll": 0.5,
        "stable_for": 3.0,
    }
    shares = owned(durations)
    assert shares["total"] == pytest.approx(9.5)
    assert shares["Prometheus"] == pytest.approx(4.0)
    assert shares["Alertmanager"] == pytest.approx(0.1)
    assert shares["healer"] == pytest.approx(0.9)  # check + act + poll
    assert shares["service"] == pytest.approx(1.5)
    assert shares["healer hold"] == pytest.approx(3.0)
    assert shares["Prometheus+Alertmanager"] == pytest.approx(4.1)
    owners = ("Prometheus", "Alertmanager", "healer", "service", "healer hold")
    assert sum(shares[o] or 0 for o in owners) == pytest.approx(shares["total"] or 0)


def test_an_alert_gone_before_the_act_finished_leaves_no_recovery_phase() -> None:
    """A rolling restart: the leaking worker is back (and the alert gone) while healer
    still restarts the next one; polling lag then counts from act done."""
    durations = phases(milestones(gone=4.3, seen=4.8))
    assert durations["recover"] == 0
    assert durations["poll"] == pytest.approx(0.3)
    assert owned(durations)["total"] == pytest.approx(9.5)


def test_a_missing_milestone_leaves_its_phase_and_owner_unknown() -> None:
    durations = phases(milestones(act=None, gone=None, seen=None))  # refused: never acted
    assert durations["act"] is None and durations["recover"] is None
    assert durations["stable_for"] == pytest.approx(5.3)  # outcome - check
    shares = owned(durations)
    assert shares["healer"] is None and shares["total"] is None
    assert shares["Prometheus+Alertmanager"] == pytest.approx(4.1)


def _record(key: str, rep: int, detect: float, outcome: str = "recovered") -> dict[str, Any]:
    durations = phases(
        milestones(
            pending=detect,
            firing=detect + 1,
            webhook=detect + 1.1,
            check=detect + 1.2,
            act=detect + 1.5,
            gone=detect + 3,
            seen=detect + 3.5,
            outcome=detect + 6.5,
        )
    )
    return {
        "scenario": key,
        "rep": rep,
        "outcome": outcome,
        "phases": durations,
        "owned": owned(durations),
    }


def test_summary_takes_medians_over_recovered_runs_and_pictures_the_median_one() -> None:
    key = next(iter(SCENARIOS))
    records = [
        _record(key, 1, 5.0),
        _record(key, 2, 1.0),
        _record(key, 3, 3.0),
        _record(key, 4, 0.5, outcome="not_recovered"),
        {"scenario": key, "rep": 5, "error": "RuntimeError: boom"},
    ]
    summary = summarise(records)[key]
    assert summary["recovered"] == 3
    assert len(summary["runs"]) == 5
    assert summary["median"]["detect"] == 3.0
    assert summary["owned"]["Prometheus+Alertmanager"] == pytest.approx(4.1)
    assert summary["owned"]["healer"] == pytest.approx(0.9)
    assert summary["ratio_healer_to_prometheus_alertmanager"] == pytest.approx(0.9 / 4.1, abs=1e-3)
    assert summary["timeline_rep"] == 3
    assert summary["handler"] and summary["title"] == SCENARIOS[key].cls.title


def test_the_timeline_picture_is_a_png(tmp_path: Path) -> None:
    from bench.timeline import render

    keys = list(SCENARIOS)
    records = [_record(key, 1, 1.0 + i) for i, key in enumerate(keys[:-1])]
    records.append({"scenario": keys[-1], "rep": 1, "error": "RuntimeError: boom"})
    doc = {
        "benchmark": "loop",
        "quick": True,
        "params": {"repetitions": 1},
        "figures": {"scenarios": summarise(records)},
    }
    out = render(doc, tmp_path / "timeline.png")
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_the_timeline_picture_follows_the_results_directory(tmp_path: Path) -> None:
    """The loop benchmark draws its picture into the run's results directory
    (``--results``), and ``python -m bench.timeline LOOP.json`` beside that file: neither
    touches bench/results/ for a run that was pointed elsewhere."""
    import json

    from bench.loop import _picture
    from bench.timeline import main

    keys = list(SCENARIOS)
    doc = {
        "benchmark": "loop",
        "quick": True,
        "params": {"repetitions": 1},
        "figures": {"scenarios": summarise([_record(keys[0], 1, 1.0)])},
    }
    results = tmp_path / "results"
    _picture(doc, results)
    assert (results / "timeline.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "loop.json").write_text(json.dumps(doc))
    assert main([str(elsewhere / "loop.json")]) == 0
    assert (elsewhere / "timeline.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
