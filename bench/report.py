"""The summary table of ``bench/results/*.json``, printed and written into
``docs/benchmarks.md``.

That page keeps it between ``<!-- bench:start -->`` and ``<!-- bench:end -->``, with the
timeline picture linked relative to the page.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from bench.common import REPO

START, END = "<!-- bench:start -->", "<!-- bench:end -->"
PAGE = REPO / "docs" / "benchmarks.md"
ORDER = ("ingest", "dispatch", "storm", "storm_replicas", "verify_delay", "action", "loop")


def load_results(directory: Path) -> list[dict[str, Any]]:
    docs = []
    for path in sorted(directory.glob("*.json")):
        try:
            docs.append(json.loads(path.read_text()))
        except (OSError, ValueError):
            continue
    rank = {name: i for i, name in enumerate(ORDER)}
    return sorted(docs, key=lambda d: rank.get(d.get("benchmark", ""), len(rank)))


def _fmt(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:,.3g}" if abs(value) < 100 else f"{value:,.0f}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


def _spread(s: dict[str, Any] | None) -> str:
    if not s or not s.get("n"):
        return "-"
    if s["n"] == 1:
        return f"{_fmt(s['median'])} (one run)"
    return f"{_fmt(s['min'])} / {_fmt(s['median'])} / {_fmt(s['max'])} ({s['n']} runs)"


def _commit(m: dict[str, Any]) -> str:
    dirty = m.get("dirty")
    mark = " (uncommitted changes)" if dirty else "" if dirty is False else " (dirty: unknown)"
    return f"{m.get('commit') or 'unknown'}{mark}"


def render_table(results: list[dict[str, Any]]) -> str:
    """Three markdown tables: every figure beside its bare limit; the targets, each with
    its spread over the runs; and which commit and run produced each benchmark's rows."""
    if not results:
        return "(no results yet: run ./scripts/bench)"
    machines = {(d["machine"]["cores"], d["machine"]["cpu"]) for d in results}
    lines = ["| benchmark | figure | healer | bare limit | ratio |", "|---|---|---|---|---|"]
    for doc in results:
        for row in doc.get("table", []):
            lines.append(
                f"| {doc['benchmark']} | {row['figure']} | {_fmt(row.get('healer'))}"
                f" | {_fmt(row.get('bare'))} | {_fmt(row.get('ratio'))} |"
            )
    lines += [
        "",
        "| benchmark | target | measured | min / median / max over runs | met |",
        "|---|---|---|---|---|",
    ]
    for doc in results:
        for t in doc.get("targets", []):
            met = {True: "yes", False: "**no**", None: "not measured"}[t["met"]]
            lines.append(
                # "name": what results written before issue 18 call the figure
                f"| {doc['benchmark']} | {t.get('figure', t.get('name'))} {t['op']}"
                f" {_fmt(t['limit'])}"
                f"{t['unit']} | {_fmt(t['value'])}{t['unit']} | {_spread(t.get('spread'))}"
                f" | {met} |"
            )
    lines += [
        "",
        "| benchmark | commit | run (UTC) | runs | seconds |",
        "|---|---|---|---|---|",
    ]
    for doc in results:
        m = doc["machine"]
        quick = " QUICK smoke run" if doc.get("quick") else ""
        lines.append(
            f"| {doc['benchmark']} | {_commit(m)} | {m.get('at', '-')}{quick}"
            f" | {_fmt(doc.get('runs'))} | {_fmt(doc.get('elapsed_seconds'))} |"
        )
    where = "; ".join(f"{cores} cores, {cpu or 'unknown CPU'}" for cores, cpu in sorted(machines))
    lines += ["", f"Measured on {where}."]
    return "\n".join(lines)


def update_page(
    table: str, results: list[dict[str, Any]], directory: Path, page: Path = PAGE
) -> None:
    """Replace what is between the bench markers of ``page`` with ``table`` and, when
    ``directory`` has one, the timeline picture (its path relative to the page)."""
    if any(d.get("quick") for d in results):
        raise SystemExit(f"{directory} holds a --quick run's results: not written into {page}")
    text = page.read_text()
    if START not in text or END not in text:
        raise SystemExit(f"{page} has no {START} ... {END} section for the table")
    head, rest = text.split(START, 1)
    _, tail = rest.split(END, 1)
    body = table
    picture = directory / "timeline.png"
    if picture.exists():
        rel = Path(os.path.relpath(picture.resolve(), page.parent.resolve())).as_posix()
        body += f"\n\n![One whole-loop heal per Odoo scenario, phase by phase]({rel})"
    page.write_text(f"{head}{START}\n{body}\n{END}{tail}")
