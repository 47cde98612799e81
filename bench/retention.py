"""Retention: a journal under a steady stream of alerts stays flat once its window has
passed, and pruning costs ingest little.

Two ``healer serve`` processes on SQLite journals, one after the other, each taking the
same stream: wrk posting Alertmanager-shaped groups of 50 alerts (every alert its own
fingerprint, none matching a rule: journaled ``ignored``, 16 connections) flat out, in
back-to-back wrk segments of 10 s, 90 s in all. One has ``retention: {heals: 30s,
alerts: 30s, every: 1s}`` (a window W of 30 s in real time: the config takes durations
in seconds), the other ``retention: {enabled: false}``. After each segment
the journal's size on disk (the file and its write-ahead log) is read. Full runs do it
twice, in both orders (without, with, with, without), and take medians.

Measured:

* flatness: the pruning journal's size at the end over its size once one window had
  passed (the first segment ending at or after W): ~1 is flat (target <= 1.25); the
  same ratio for the journal that keeps everything shows what it would be otherwise;
* cost: alerts/s posted while pruning (the segments after the first window, when every
  row inserted is matched by one deleted) over alerts/s without pruning in the same
  segments (target >= 0.9);
* the rows pruned (healer_journal_pruned_rows_total) and no failed post.

Quick mode: W = 2 s, a prune every 0.5 s, four segments of 1 s, one pass.
"""

from __future__ import annotations

import statistics
from pathlib import Path
from typing import Any

import httpx

from bench.common import Context, Result, Target, ratio
from bench.procs import TOKEN, healer, wrk

NAME = "retention"
DESCRIPTION = "journal size and ingest under a steady stream, with a short retention window"
ALERTS = 50
CONNECTIONS = 16


def _size(path: Path) -> int:
    """The journal's bytes on disk: the file and its write-ahead log."""
    return sum(p.stat().st_size for p in (path, path.with_name(path.name + "-wal")) if p.exists())


def _pruned(url: str) -> dict[str, float]:
    """healer_journal_pruned_rows_total per table, from /metrics."""
    text = httpx.get(f"{url}/metrics", timeout=10.0).text
    found: dict[str, float] = {}
    for line in text.splitlines():
        if line.startswith("healer_journal_pruned_rows_total{"):
            labels, value = line.rsplit(" ", 1)
            found[labels.split('table="', 1)[1].split('"', 1)[0]] = float(value)
    return found


def _stream(
    ctx: Context, tag: str, retention: dict[str, Any], segments: int, seconds: float
) -> dict[str, Any]:
    """One healer with ``retention`` under the stream; per segment: alerts/s, errors,
    journal bytes."""
    workdir = ctx.workdir / tag
    workdir.mkdir()
    journal = workdir / "journal.db"
    rows: list[dict[str, Any]] = []
    with healer(workdir, {"rules": [], "retention": retention}) as h:
        for n in range(segments):
            stats = wrk(
                h.url,
                seconds=seconds,
                connections=CONNECTIONS,
                alerts=ALERTS,
                tag=f"{tag}{n}",
                token=TOKEN,
            )
            errors = (
                stats["non_2xx"]
                + stats["connect_errors"]
                + stats["read_errors"]
                + stats["timeouts"]
            )
            rows.append(
                {
                    "alerts_per_s": stats["alerts_per_s"],
                    "errors": errors,
                    "bytes": _size(journal),
                    "p99_us": stats["p99_us"],
                }
            )
            print(
                f"    {tag:8} segment {n + 1}/{segments}: {stats['alerts_per_s']:8.0f} alerts/s,"
                f" journal {_size(journal) / 2**20:7.1f} MiB, errors {errors}",
                flush=True,
            )
        pruned = _pruned(h.url)
    return {"segments": rows, "pruned_rows": pruned}


def run(ctx: Context) -> Result:
    window = ctx.pick(30.0, 2.0)
    seconds = ctx.pick(10.0, 1.0)
    segments = ctx.pick(9, 4)
    passes = ctx.pick(("without", "with", "with", "without"), ("without", "with"))
    every = ctx.pick("1s", "0.5s")
    pruning = {"heals": f"{window:g}s", "alerts": f"{window:g}s", "every": every}
    runs: dict[str, list[dict[str, Any]]] = {"with": [], "without": []}
    for n, kind in enumerate(passes):
        retention = pruning if kind == "with" else {"enabled": False}
        runs[kind].append(_stream(ctx, f"{kind}{n}", retention, segments, seconds))

    # The first segment that ends once one window has passed: sizes are compared from it,
    # rates after it (pruning then deletes as much as is inserted).
    at_window = next(i for i in range(segments) if (i + 1) * seconds >= window)

    def growth(run: dict[str, Any]) -> float | None:
        sizes = [s["bytes"] for s in run["segments"]]
        return ratio(sizes[-1], sizes[at_window])

    def steady_rate(run: dict[str, Any]) -> float:
        return statistics.median(s["alerts_per_s"] for s in run["segments"][at_window + 1 :])

    flat = statistics.median(g for g in map(growth, runs["with"]) if g is not None)
    grows = statistics.median(g for g in map(growth, runs["without"]) if g is not None)
    rate = {k: statistics.median(steady_rate(r) for r in runs[k]) for k in runs}
    cost = ratio(rate["with"], rate["without"])
    end_bytes = {k: statistics.median(r["segments"][-1]["bytes"] for r in runs[k]) for k in runs}
    window_bytes = {
        k: statistics.median(r["segments"][at_window]["bytes"] for r in runs[k]) for k in runs
    }
    errors = sum(s["errors"] for k in runs for r in runs[k] for s in r["segments"])
    pruned = runs["with"][0]["pruned_rows"]
    figures: dict[str, Any] = {
        "runs": runs,
        "size_ratio_end_to_window": {"with": flat, "without": grows},
        "journal_bytes_at_window": window_bytes,
        "journal_bytes_at_end": end_bytes,
        "steady_alerts_per_s": rate,
        "ratio_alerts_per_s": cost,
        "errors": errors,
    }
    table = [
        {
            "figure": "journal size at the end / after one window (pruning vs keeping all)",
            "healer": flat,
            "bare": grows,
            "ratio": ratio(flat, grows),
        },
        {
            "figure": "journal MiB at the end (pruning vs keeping all)",
            "healer": round(end_bytes["with"] / 2**20, 1),
            "bare": round(end_bytes["without"] / 2**20, 1),
            "ratio": ratio(end_bytes["with"], end_bytes["without"]),
        },
        {
            "figure": f"alerts/s, {ALERTS}-alert posts, past the window (pruning vs not)",
            "healer": rate["with"],
            "bare": rate["without"],
            "ratio": cost,
        },
    ]
    targets = [
        Target("journal size end / one window, pruning", flat, "<=", 1.25),
        Target("alerts/s pruning / not pruning", cost, ">=", 0.9),
        Target("failed posts", errors, "<=", 0),
        Target("alert rows pruned", pruned.get("alerts", 0.0), ">=", 1),
    ]
    return Result(
        NAME,
        figures,
        targets,
        table,
        params={
            "window_s": window,
            "segment_s": seconds,
            "segments": segments,
            "passes": list(passes),
            "alerts_per_post": ALERTS,
            "connections": CONNECTIONS,
            "every": pruning["every"],
        },
    )
