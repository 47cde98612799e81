"""Retention: a journal under a steady stream of alerts stays flat once its window has
passed, and pruning costs ingest little.

Two ``healer serve`` processes on SQLite journals run side by side and take turns: wrk
posts Alertmanager-shaped groups of 50 alerts (every alert its own fingerprint, none
matching a rule: journaled ``ignored``; 16 connections) flat out at one for a 10 s
segment, then at the other, and so on, nine segments each. One has ``retention: {heals:
40s, alerts: 40s, every: 1s}`` (a window of 40 s in real time: the config takes durations
in seconds), the other ``retention: {enabled: false}``. Taking turns puts the machine's
noise on both alike; the window is two rounds of turns, so the rows the pruning healer
got in one of its segments expire during another of its own segments, and it prunes
while it is measured. After each segment the journal's size on disk (the file and its
write-ahead log) is read.

Measured:

* flatness: the pruning journal's size at the end over its size once it held one
  window of the stream (after its second segment; nothing is old enough to prune yet):
  ~1 is flat (target <= 1.25); the same ratio for the journal that keeps everything
  shows what it would be otherwise;
* cost: alerts/s while pruning (the segments past the window, when every row inserted is
  matched by one deleted) over alerts/s without pruning in the same turns (target
  >= 0.9);
* the rows pruned (healer_journal_pruned_rows_total) and no failed post.

Quick mode: segments of 1 s, a 4 s window, four segments each.
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


def _segment(h: Any, journal: Path, tag: str, seconds: float) -> dict[str, Any]:
    """One wrk segment against ``h``: alerts/s, errors, the journal's bytes after it."""
    stats = wrk(
        h.url, seconds=seconds, connections=CONNECTIONS, alerts=ALERTS, tag=tag, token=TOKEN
    )
    errors = stats["non_2xx"] + stats["connect_errors"] + stats["read_errors"] + stats["timeouts"]
    return {
        "alerts_per_s": stats["alerts_per_s"],
        "errors": errors,
        "bytes": _size(journal),
        "p99_us": stats["p99_us"],
    }


def run(ctx: Context) -> Result:
    seconds = ctx.pick(10.0, 1.0)
    segments = ctx.pick(9, 4)
    window = 4 * seconds  # two rounds of turns: a pruning healer's rows expire in its turn
    every = ctx.pick("1s", "0.5s")
    configs = {
        "with": {"heals": f"{window:g}s", "alerts": f"{window:g}s", "every": every},
        "without": {"enabled": False},
    }
    runs: dict[str, list[dict[str, Any]]] = {"with": [], "without": []}
    journals = {kind: ctx.workdir / kind / "journal.db" for kind in configs}
    for kind in configs:
        (ctx.workdir / kind).mkdir()
    with (
        healer(ctx.workdir / "with", {"rules": [], "retention": configs["with"]}) as pruning,
        healer(ctx.workdir / "without", {"rules": [], "retention": configs["without"]}) as keeping,
    ):
        for n in range(segments):
            for kind, h in (("with", pruning), ("without", keeping)):
                row = _segment(h, journals[kind], f"{kind[:2]}{n}", seconds)
                runs[kind].append(row)
                print(
                    f"    {kind:7} segment {n + 1}/{segments}: {row['alerts_per_s']:8.0f}"
                    f" alerts/s, journal {row['bytes'] / 2**20:7.1f} MiB, errors {row['errors']}",
                    flush=True,
                )
        pruned = _pruned(pruning.url)

    # After its second segment a journal holds one window of the stream (two of its
    # segments); from its third on, the pruning one deletes as much as it inserts.
    at_window, steady = 1, slice(2, None)
    growth = {k: ratio(runs[k][-1]["bytes"], runs[k][at_window]["bytes"]) for k in runs}
    rate = {k: statistics.median(s["alerts_per_s"] for s in runs[k][steady]) for k in runs}
    cost = ratio(rate["with"], rate["without"])
    end_bytes = {k: runs[k][-1]["bytes"] for k in runs}
    errors = sum(s["errors"] for k in runs for s in runs[k])
    figures: dict[str, Any] = {
        "runs": runs,
        "size_ratio_end_to_window": growth,
        "journal_bytes_at_window": {k: runs[k][at_window]["bytes"] for k in runs},
        "journal_bytes_at_end": end_bytes,
        "steady_alerts_per_s": rate,
        "ratio_alerts_per_s": cost,
        "errors": errors,
        "pruned_rows": pruned,
    }
    table = [
        {
            "figure": "journal size at the end / after one window (pruning vs keeping all)",
            "healer": growth["with"],
            "bare": growth["without"],
            "ratio": ratio(growth["with"], growth["without"]),
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
        Target("journal size end / one window, pruning", growth["with"], "<=", 1.25),
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
            "segments_each": segments,
            "alerts_per_post": ALERTS,
            "connections": CONNECTIONS,
            "every": every,
        },
    )
