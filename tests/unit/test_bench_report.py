"""bench/'s own plumbing: targets, percentiles and spreads, the summary table and what it
says produced it, its section of docs/benchmarks.md (never from a smoke run), where a
smoke run's results go, and the no-op plugin and the durable floor the benchmarks load (the
benchmarks themselves run in tests/integration/test_bench_smoke.py and ./scripts/bench)."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from bench.__main__ import main as bench_main
from bench.__main__ import results_dir
from bench.bare_app import create_app
from bench.common import (
    QUICK_RESULTS,
    RESULTS,
    Result,
    Target,
    chunks,
    percentile,
    revision,
    spread,
    summary,
    write_result,
)
from bench.noop import NAME as NOOP
from bench.noop import plugin_path
from bench.report import END, PAGE, START, load_results, render_table, update_page
from healer.plugins import HandlerRegistry
from tests.support.inprocess.payloads import alert_payload


def test_a_target_is_met_only_on_its_side_of_the_limit() -> None:
    """<= and >= bounds, inclusive; a figure that could not be measured is neither."""
    assert Target("ratio", 0.8, ">=", 0.8).met is True
    assert Target("ratio", 0.79, ">=", 0.8).met is False
    assert Target("p99", 5.0, "<=", 5).met is True
    assert Target("p99", 5.1, "<=", 5).met is False
    assert Target("p99", None, "<=", 5).met is None


def test_a_target_in_the_json_carries_its_figure_bound_met_and_spread(tmp_path: Path) -> None:
    """Each target of a result file reads {figure, value, target, met} and the spread of
    its figure over the runs; the file says how many runs and which commit produced it."""
    runs = spread([1.0, 0.8, 0.9])
    path = write_result(
        Result("ingest", {}, [Target("ratio", 0.9, ">=", 0.85, spread=runs)], [], runs=3),
        1.0,
        False,
        tmp_path,
    )
    doc = json.loads(path.read_text())
    [target] = doc["targets"]
    assert target["figure"] == "ratio" and target["value"] == 0.9
    assert target["target"] == ">= 0.85" and target["met"] is True
    assert target["spread"] == {"n": 3, "min": 0.8, "median": 0.9, "max": 1.0}
    assert doc["runs"] == 3
    assert doc["machine"]["commit"] and isinstance(doc["machine"]["dirty"], bool)
    assert doc["machine"]["at"].endswith("+00:00")


def test_spreads_and_runs_of_rounds() -> None:
    """A spread leaves unmeasured values out; rounds cut into runs keep their order and
    every round, the runs as even as they can be."""
    assert spread([None, 2.0]) == {"n": 1, "min": 2.0, "median": 2.0, "max": 2.0}
    assert spread([None]) == {"n": 0}
    assert chunks(list(range(7)), 3) == [[0, 1, 2], [3, 4], [5, 6]]
    assert chunks([1, 2], 3) == [[1], [2]]


def test_the_commit_is_dirty_only_for_changes_beyond_what_a_run_writes(tmp_path: Path) -> None:
    """A tree with a change says dirty; one whose only changes are bench results or the
    benchmarks page (what the run itself writes) does not; no git, no commit."""

    def git(*args: str) -> None:
        subprocess.run(["git", "-C", str(tmp_path), *args], check=True, capture_output=True)

    git("init", "-q")
    for path in ("code.py", "bench/results/ingest.json", "docs/benchmarks.md"):
        (tmp_path / path).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / path).write_text("v1\n")
    git("add", ".")
    git("-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "one")
    commit, dirty = revision(tmp_path)
    assert len(commit) >= 7 and dirty is False
    (tmp_path / "bench/results/ingest.json").write_text("v2\n")
    (tmp_path / "bench/results/timeline.png").write_text("new\n")
    (tmp_path / "docs/benchmarks.md").write_text("v2\n")
    assert revision(tmp_path) == (commit, False)
    (tmp_path / "code.py").write_text("v2\n")
    assert revision(tmp_path) == (commit, True)
    assert revision(tmp_path / "no-such-dir") == ("", None)


def test_a_smoke_run_never_writes_over_the_full_results_or_the_page(tmp_path: Path) -> None:
    """--quick goes to bench/results/quick unless told otherwise, is refused when pointed at
    bench/results or asked to --write the page; and the page is never written from a
    smoke run's results."""
    assert results_dir(True, None) == QUICK_RESULTS
    assert results_dir(False, None) == RESULTS
    assert results_dir(True, tmp_path) == tmp_path
    with pytest.raises(ValueError, match="never writes over the full results"):
        results_dir(True, RESULTS)
    for argv in (
        ["ingest", "--quick", "--write"],
        ["ingest", "--quick", "--results", str(RESULTS)],
    ):
        with pytest.raises(SystemExit) as exc:
            bench_main(argv)
        assert exc.value.code == 2
    write_result(Result("ingest", {}, [], []), 1.0, True, tmp_path)
    page = tmp_path / "benchmarks.md"
    page.write_text(f"{START}\nold\n{END}\n")
    with pytest.raises(SystemExit, match="--quick"):
        update_page("| t |", load_results(tmp_path), tmp_path, page)
    assert page.read_text() == f"{START}\nold\n{END}\n"


def test_percentiles_are_nearest_rank() -> None:
    """p99 of 100 values is the 99th smallest, p50 of 4 values the 2nd; none of nothing."""
    values = [float(v) for v in range(1, 101)]
    assert percentile(values, 0.99) == 99.0
    assert percentile([4.0, 1.0, 3.0, 2.0], 0.5) == 2.0
    assert percentile([], 0.5) is None
    assert summary([0.001, 0.003, 0.002], scale=1000)["median"] == 2.0


def test_the_table_shows_every_row_and_flags_a_missed_target(tmp_path: Path) -> None:
    """Results written by write_result come back in benchmark order; a missed target
    reads **no**, an unmeasured one says so, each with its spread over the runs; and a
    table per benchmark says which commit and which run (UTC time, runs) produced it."""
    write_result(
        Result(
            "storm",
            {},
            [Target("heals", 1000, "<=", 1000)],
            [{"figure": "heals", "healer": 1000, "bare": 1000, "ratio": 1.0}],
        ),
        1.0,
        False,
        tmp_path,
    )
    write_result(
        Result(
            "ingest",
            {},
            [
                Target("ratio", 0.5, ">=", 0.8, spread=spread([0.4, 0.5, 0.6])),
                Target("p99", None, "<=", 5),
            ],
            [{"figure": "posts/s", "healer": 500.0, "bare": 1000.0, "ratio": 0.5}],
            runs=3,
        ),
        1.0,
        False,
        tmp_path,
    )
    results = load_results(tmp_path)
    assert [r["benchmark"] for r in results] == ["ingest", "storm"]
    table = render_table(results)
    assert "| ingest | posts/s | 500 | 1,000 | 0.5 |" in table
    assert "| ingest | ratio >= 0.8 | 0.5 | 0.4 / 0.5 / 0.6 (3 runs) | **no** |" in table
    assert "| ingest | p99 <= 5 | - | - | not measured |" in table
    assert "| storm | heals <= 1,000 | 1,000 | - | yes |" in table
    m = results[0]["machine"]
    dirty = " (uncommitted changes)" if m["dirty"] else ""
    assert f"| ingest | {m['commit']}{dirty} | {m['at']} | 3 | 1 |" in table
    assert f"| storm | {results[1]['machine']['commit']}" in table


def test_the_committed_results_render_older_ones_included() -> None:
    """The results in bench/results render, those written before targets carried their
    spread, runs and dirty flag included: a partial full run rewrites the page over them."""
    results = load_results(RESULTS)
    assert results
    table = render_table(results)
    for doc in results:
        assert f"| {doc['benchmark']} | {doc['machine']['commit']}" in table


def test_the_benchmarks_page_section_is_replaced_and_nothing_else(tmp_path: Path) -> None:
    """Only the text between the bench markers changes; a page without them is an error,
    not a silent no-op."""
    page = tmp_path / "benchmarks.md"
    page.write_text(f"# top\n{START}\nold table\n{END}\n## after\n")
    update_page("| new |", [], tmp_path / "no-results", page)
    assert page.read_text() == f"# top\n{START}\n| new |\n{END}\n## after\n"
    page.write_text("# no markers\n")
    with pytest.raises(SystemExit, match="no"):
        update_page("| new |", [], tmp_path / "no-results", page)


def test_the_timeline_picture_is_linked_relative_to_the_page(tmp_path: Path) -> None:
    """The picture's link is relative to the page's own folder (docs/ -> ../bench/...), so
    it resolves where the page is read; and the real page is docs/benchmarks.md, with the
    markers in place."""
    results = tmp_path / "bench" / "results"
    results.mkdir(parents=True)
    (results / "timeline.png").write_bytes(b"png")
    page = tmp_path / "docs" / "benchmarks.md"
    page.parent.mkdir()
    page.write_text(f"{START}\n{END}\n")
    update_page("| t |", [], results, page)
    link = page.read_text().split("](", 1)[1].split(")", 1)[0]
    assert link == "../bench/results/timeline.png"
    assert (page.parent / link).resolve() == (results / "timeline.png").resolve()
    assert PAGE.relative_to(PAGE.parents[1]) == Path("docs/benchmarks.md")
    text = PAGE.read_text(encoding="utf-8")
    assert START in text and END in text


def test_the_noop_handler_is_a_real_entry_point_plugin(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """bench.noop reaches healer the way a third-party plugin does: its dist-info on the
    path, discovered and validated through the healer.handlers entry-point group."""
    monkeypatch.setattr(sys, "path", [str(plugin_path(tmp_path)), *sys.path])
    registry = HandlerRegistry.from_entry_points()
    assert registry.get(NOOP) is not None


async def test_the_durable_floor_answers_only_once_every_body_is_in_its_file(
    tmp_path: Path,
) -> None:
    """The ingest benchmark's durable floor (bench/bare_app.py --durable): posts sent at
    once are all answered 202 and each body is a line of the file when its answer comes;
    a bad payload is refused like healer refuses it and is not stored."""
    log = tmp_path / "floor.log"
    app = create_app(log)
    bodies = [
        json.dumps(alert_payload({"alertname": "Floor"}, fingerprint=f"fp{i}")) for i in range(20)
    ]
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://floor"
    ) as client:
        answers = await asyncio.gather(
            *(
                client.post(
                    "/api/v1/alerts", content=b, headers={"Content-Type": "application/json"}
                )
                for b in bodies
            )
        )
        bad = await client.post("/api/v1/alerts", content=b'{"version": "3"}')
    assert [a.status_code for a in answers] == [202] * 20
    assert sorted(log.read_text().splitlines()) == sorted(bodies)
    assert bad.status_code == 422
    assert len(log.read_text().splitlines()) == 20
