"""Storm: an alert storm from two HA Alertmanagers heals each alert exactly once, and a
million alerts through the receiver leave healer's memory flat.

**Part 1, the storm.** 1,000 alerts (fingerprints) in 100 Alertmanager groups of 10. Each
of two simulated replicas notifies every group as Alertmanager does when a group grows
and then repeats: its first 5 alerts, then all 10, then all 10 again (2,500 alert copies
per replica), and every notification is retried once, the retry starting before the
first copy is answered (a client timeout while healer still stores it): 2 x 2 x 2,500 =
10,000 alerts. The sender (bench/storm_sender.py) is its own process: one concurrent
sender per group and replica (as Alertmanager runs one per aggregation group), each
replica with its own 8 connections, groups starting over 0.5 s, time between
notifications compressed to milliseconds. Every copy of an alert carries the same
startsAt. One rule matches them all and runs ``bench.noop`` on a target per alert
(``{{ labels.instance }}``), cooldown 0s, budget 1,000, default ``max_concurrent_heals``,
verified against a real Prometheus (``vector(0)``, stable_for 0s) so heals end
``recovered``.

Measured: heals created (must be exactly 1,000) and their outcomes, answers (all 2xx),
alert receipts journaled (``SUM(times_seen)`` = 10,000: none lost), time to drain (the
first post -> the last heal's ``finished_at``, both wall clock on this machine), healer's
RSS idle before (warm: after one heal of a second rule, ``warmup``, which the counts leave
out), at peak (sampled every 0.2 s) and after the drain. Heal counts come from
``GET /api/v1/heals`` while healer runs and from its journal file (opened read-only
once healer has stopped); the drain is awaited by polling ``/metrics``
(``healer_heals_total{rule="storm"}``), which costs healer less than listing heals.
The bare limit is the same storm sent to the bare FastAPI endpoint (bench/bare_app.py:
parse and answer 202): its time from the first post to the last answer and its RSS.
Once drained, a second wave (1,000 new alerts, the same storm shape) tells a per-heal
leak from a one-off: RSS after it is reported beside RSS after the first; the heal
counts of both waves are held to the same targets.

Where a heal's time goes is read from its timeline (``timeline_gaps_ms``: created ->
checked -> acted -> verifying -> sampled -> outcome, median and p99), so a slow drain
shows whether heals wait for a concurrency slot or for the journal.

**Part 2, the leak check.** A fresh healer (same config; alerts named ``BenchLeak``, so no
rule matches and each is journaled ``ignored``, in its post's body) receives 1,000,000
alerts in posts of 50 (one post in ten a re-send of an earlier group), 16 connections, in
ten count-bounded runs of the flood sender of 100,000 alerts each. After each run healer
is left idle for a moment and its RSS read (median of 5 samples): the target is RSS after
all 1,000,000 <= 1.2 x RSS after the first 100,000. Throughput per run is recorded
(alerts/s); the bare endpoint takes one 100,000-alert run for comparison. The whole part
is bounded: past 15 minutes no new post starts, the run is reported aborted and the leak
target "not measured". Journal cross-check: every distinct alert of the posts answered
2xx is in the journal (``alert_log``, read from the kept bodies), and no body is kept
twice for a re-sent group.

Quick mode: 100 fingerprints (10 groups, 1,000 alerts) and 20,000 alerts in five runs of
4,000 (the ratio is then after 20,000 / after the first 4,000).
"""

from __future__ import annotations

import contextlib
import json
import sqlite3
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import httpx

from bench.common import REPO, Context, PeakRss, Result, Target, ratio, rss_bytes, summary
from bench.noop import noop_config, noop_rule
from bench.procs import ADMIN_TOKEN, TOKEN, bare_endpoint, healer
from bench.storm_sender import (
    FLOOD_ALERTNAME,
    STORM_ALERTNAME,
    storm_alert_count,
    storm_fingerprint,
)
from tests.support.inprocess.payloads import alert, payload
from tests.support.servers.processes import PrometheusFactory

NAME = "storm"
DESCRIPTION = (
    "10,000 alerts / 1,000 fingerprints from two Alertmanager replicas: exactly "
    "1,000 heals, drain time, memory; then 1,000,000 alerts: memory flat"
)
RULE = "storm"
WARMUP_RULE = "warmup"
PER_GROUP = 10
PER_POST = 50
LEAK_SECONDS = 15 * 60
MiB = 1024 * 1024


def _human(n: int) -> str:
    return (
        f"{n // 1_000_000}M"
        if n % 1_000_000 == 0
        else (f"{n // 1000}k" if n % 1000 == 0 else f"{n:,}")
    )


def _mib(value: float | None) -> float | None:
    return None if value is None else round(value / MiB, 1)


def healer_config(prometheus_url: str) -> dict[str, Any]:
    # Each rule its own dict: one object twice would be written as a YAML alias, which
    # healer's config refuses.
    verify = {"query": "vector(0)", "stable_for": "0s", "timeout": "30s"}
    return noop_config(
        [
            noop_rule(RULE, STORM_ALERTNAME, "{{ labels.instance }}", verify=verify),
            # One heal before measuring, so "RSS before" is healer with its heal path
            # (handler, gates, verifier, Prometheus client) loaded, not a cold one.
            noop_rule(WARMUP_RULE, "BenchWarmup", "warmup", verify=dict(verify)),
        ],
        prometheus={"url": prometheus_url},
    )


def settled_rss(ctx: Context, pid: int, pause: float = 0.5) -> int:
    """Median RSS over 5 readings 0.2 s apart (quick: 3, 0.1 s) after ``pause`` idle
    seconds (quick: a fifth of it)."""
    time.sleep(ctx.pick(pause, pause / 5))
    readings = []
    for _ in range(ctx.pick(5, 3)):
        readings.append(rss_bytes(pid))
        time.sleep(ctx.pick(0.2, 0.1))
    return int(statistics.median(readings))


def warm_up(url: str, heal: bool, fingerprint: str = "0warm") -> None:
    """One post, one history read, one metrics read; with ``heal``, the post matches the
    warm-up rule and its heal is waited for (bounded). Replicas sharing a store each
    need their own ``fingerprint`` (one heal per alert across replicas)."""
    name = "BenchWarmup" if heal else "BenchNothing"
    body = payload(alert(name, fingerprint=fingerprint))
    with httpx.Client(base_url=url, timeout=10.0) as client:
        client.post(
            "/api/v1/alerts", json=body, headers={"Authorization": f"Bearer {TOKEN}"}
        ).raise_for_status()
        client.get(
            "/api/v1/heals", params={"limit": 1}, headers={"Authorization": f"Bearer {ADMIN_TOKEN}"}
        )
        client.get("/metrics")
        if heal and not wait_ended([client], WARMUP_RULE, 1, 30.0):
            raise RuntimeError("the warm-up heal did not end within 30 s")


def send(
    mode: str, url: str | Sequence[str], token: str, out: Path, timeout: float, *args: str
) -> dict[str, Any]:
    """Run the sender (bench/storm_sender.py) in its own process; its JSON summary.
    Several URLs: a storm spread over healer replicas (see the sender)."""
    urls = [url] if isinstance(url, str) else list(url)
    argv = [
        sys.executable,
        "-m",
        "bench.storm_sender",
        mode,
        *(arg for u in urls for arg in ("--url", u)),
        "--token",
        token,
        "--out",
        str(out),
        *args,
    ]
    subprocess.run(argv, cwd=REPO, check=True, timeout=timeout, stdin=subprocess.DEVNULL)
    result: dict[str, Any] = json.loads(out.read_text())
    return result


# ---- part 1: the storm ----------------------------------------------------------------


def list_heals(client: httpx.Client, limit_pages: int) -> list[dict[str, Any]]:
    """Every heal of the storm rule, paging with ``before=`` (bounded in pages)."""
    heals: list[dict[str, Any]] = []
    before: float | None = None
    for _ in range(limit_pages):
        params: dict[str, Any] = {"rule": RULE, "limit": 500}
        if before is not None:
            params["before"] = before
        resp = client.get("/api/v1/heals", params=params)
        resp.raise_for_status()
        doc = resp.json()
        heals += doc["heals"]
        before = doc["next_before"]
        if before is None:
            break
    return heals


def heals_ended(client: httpx.Client, rule: str) -> float:
    """Sum of ``healer_heals_total{rule=...}``: the rule's heals that have an outcome."""
    text = client.get("/metrics").text
    return sum(
        float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith("healer_heals_total{") and f'rule="{rule}"' in line
    )


def wait_ended(clients: Sequence[httpx.Client], rule: str, created: int, timeout: float) -> bool:
    """Until ``created`` heals of ``rule`` have ended, summed over the healers (replicas)
    of ``clients`` (polling /metrics: cheap for healer)."""
    deadline = time.monotonic() + timeout
    for _ in range(int(timeout / 0.25) + 2):
        if sum(heals_ended(c, rule) for c in clients) >= created:
            return True
        if time.monotonic() > deadline:
            return False
        time.sleep(0.25)
    return False


def open_ro(path: Path) -> sqlite3.Connection:
    return sqlite3.connect(f"file:{path}?mode=ro", uri=True)


Query = Callable[[str, tuple[Any, ...]], list[tuple[Any, ...]]]
"""Run one SQL statement (``?`` placeholders) on a journal, read-only; its rows."""


@contextlib.contextmanager
def sqlite_reader(path: Path) -> Iterator[Query]:
    db = open_ro(path)
    try:
        yield lambda sql, args: db.execute(sql, args).fetchall()
    finally:
        db.close()


# Consecutive timeline events of one heal, and what lies between them.
GAPS = (
    ("matched", "check", "created -> checked (pause read, slot wait, 2 journal writes, check)"),
    ("check", "act", "checked -> acted (1 write, budget transaction + 1 read, 1 write, act)"),
    ("act", "verify_start", "acted -> verifying (2 journal writes)"),
    ("verify_start", "verify_sample", "verifying -> sampled (1 write, 1 Prometheus query)"),
    ("verify_sample", "outcome", "sampled -> outcome (1 journal write)"),
)


def storm_journal(path: Path, wave: int) -> dict[str, Any]:
    """What the SQLite journal says about one wave once healer has stopped (read-only)."""
    with sqlite_reader(path) as query:
        return wave_journal(query, wave)


def wave_journal(query: Query, wave: int) -> dict[str, Any]:
    """What a journal (SQLite or PostgreSQL: the same tables) says about one wave."""
    prefix = storm_fingerprint(0, 0, wave)[0]
    rows, receipts, min_seen, max_seen = query(
        "SELECT COUNT(*), SUM(times_seen), MIN(times_seen), MAX(times_seen) FROM alerts"
        " WHERE alertname=? AND substr(fingerprint, 1, 1)=?",
        (STORM_ALERTNAME, prefix),
    )[0]
    dispositions = {
        str(k): int(v)
        for k, v in query(
            "SELECT disposition, COUNT(*) FROM alerts WHERE alertname=?"
            " AND substr(fingerprint, 1, 1)=? GROUP BY disposition",
            (STORM_ALERTNAME, prefix),
        )
    }
    mine = "heals.rule=? AND substr(heals.fingerprint, 1, 1)=?"
    heals = query(
        f"SELECT fingerprint, outcome, created_at, finished_at, durations FROM heals WHERE {mine}",
        (RULE, prefix),
    )
    actions = query(
        f"SELECT COUNT(*) FROM safety_actions JOIN heals ON heals.id = heal_id WHERE {mine}",
        (RULE, prefix),
    )[0][0]
    events = query(
        f"SELECT heal_id, kind, at FROM events JOIN heals ON heals.id = heal_id"
        f" WHERE {mine} ORDER BY heal_id, seq",
        (RULE, prefix),
    )
    per_fp: dict[str, int] = {}
    outcomes: dict[str, int] = {}
    for fp, outcome, *_ in heals:
        per_fp[fp] = per_fp.get(fp, 0) + 1
        outcomes[str(outcome)] = outcomes.get(str(outcome), 0) + 1
    done = [h for h in heals if h[3] is not None]
    timelines: dict[str, dict[str, float]] = {}
    for heal_id, kind, at in events:
        timelines.setdefault(heal_id, {}).setdefault(kind, at)
    gaps = {
        label: summary(
            [t[b] - t[a] for t in timelines.values() if a in t and b in t], scale=1000, digits=1
        )
        for a, b, label in GAPS
    }
    return {
        "alerts": {
            "rows": rows,
            "receipts": None if receipts is None else int(receipts),
            "times_seen_min": min_seen,
            "times_seen_max": max_seen,
            "dispositions": dispositions,
        },
        "heals": len(heals),
        "fingerprints_healed": len(per_fp),
        "fingerprints_healed_twice": sum(1 for n in per_fp.values() if n > 1),
        "recovered_fingerprints": len({h[0] for h in heals if h[1] == "recovered"}),
        "outcomes": outcomes,
        "actions_recorded": actions,
        "events": len(events),
        "first_created_at": min((h[2] for h in heals), default=None),
        "last_finished_at": max((h[3] for h in done), default=None),
        "heal_seconds": summary([h[3] - h[2] for h in done], digits=3),
        "heal_total_durations": summary(
            [json.loads(h[4]).get("total", 0.0) for h in done], digits=3
        ),
        "timeline_gaps_ms": gaps,
    }


def storm_wave(
    ctx: Context,
    urls: Sequence[str],
    admins: Sequence[httpx.Client],
    out: Path,
    groups: int,
    wave: int,
    starts_at: float,
    *,
    am_replicas: int = 2,
    label: str = "",
) -> dict[str, Any]:
    """One storm wave sent to the healers at ``urls`` (replicas of one store, or one
    healer); waits (bounded) for its heals to end. ``admins``: one admin client per
    healer, the first also lists the heals (every replica sees the whole store)."""
    sender = send(
        "storm",
        urls,
        TOKEN,
        out,
        ctx.pick(360, 120),
        "--groups",
        str(groups),
        "--per-group",
        str(PER_GROUP),
        "--wave",
        str(wave),
        "--replicas",
        str(am_replicas),
        "--starts-at",
        str(starts_at),
        "--deadline",
        str(ctx.pick(300, 60)),
    )
    print(
        f"    storm wave {wave}{label} sent: {sender['requests']} posts in "
        f"{sender['seconds']:.1f} s, answers {sender['statuses']}",
        flush=True,
    )
    pages = (wave + 1) * groups * PER_GROUP // 500 + 10
    created = len(list_heals(admins[0], pages))
    drained = wait_ended(admins, RULE, created, ctx.pick(300, 60))
    heals = list_heals(admins[0], pages)
    return {
        "sender": sender,
        "drained": drained,
        "api": {
            "heals_so_far": len(heals),
            "done": sum(1 for x in heals if x["phase"] == "done"),
            "outcomes": _count(x["outcome"] for x in heals),
        },
    }


def drain_seconds(wave: dict[str, Any]) -> float | None:
    """First post -> the wave's last heal finished (from its journal); None if not drained."""
    first, last = wave["sender"]["first_post_at"], wave["journal"]["last_finished_at"]
    return (
        round(last - first, 3)
        if wave["drained"] and first is not None and last is not None
        else None
    )


def storm_on_healer(ctx: Context, groups: int, starts_at: float) -> dict[str, Any]:
    """The storm (wave 0), then as many new alerts again (wave 1): does memory come back
    to where the first storm left it, or grow by as much again?"""
    workdir = ctx.workdir / "storm"
    workdir.mkdir()
    prometheus = PrometheusFactory(workdir)
    waves: list[dict[str, Any]] = []
    out: dict[str, Any] = {"waves": waves}
    try:
        prom = prometheus.start(scrape_targets=[])
        with healer(workdir, healer_config(prom.url)) as h:
            assert h.pid is not None
            warm_up(h.url, heal=True)
            out["rss_before"] = settled_rss(ctx, h.pid, pause=1.0)
            admin = httpx.Client(
                base_url=h.url, timeout=30.0, headers={"Authorization": f"Bearer {ADMIN_TOKEN}"}
            )
            with admin:
                for wave in range(2):
                    with PeakRss(h.pid) as peak:
                        w = storm_wave(
                            ctx,
                            [h.url],
                            [admin],
                            workdir / f"storm-{wave}.json",
                            groups,
                            wave,
                            starts_at,
                        )
                    waves.append({**w, "rss_peak": peak.peak, "rss_after": settled_rss(ctx, h.pid)})
        for wave, w in enumerate(waves):
            w["journal"] = storm_journal(workdir / "journal.db", wave)
            w["drain_seconds"] = drain_seconds(w)
            print(
                f"    storm wave {wave} on healer: {w['journal']['heals']} heals "
                f"{w['journal']['outcomes']}, drained in {w['drain_seconds']} s; RSS peak "
                f"{_mib(w['rss_peak'])}, after {_mib(w['rss_after'])} MiB (before "
                f"{_mib(out['rss_before'])})",
                flush=True,
            )
    finally:
        prometheus.stop_all()
    return out


def storm_on_bare(
    ctx: Context, groups: int, starts_at: float, am_replicas: int = 2
) -> dict[str, Any]:
    workdir = ctx.workdir / "storm-bare"
    workdir.mkdir()
    out: dict[str, Any] = {}
    with bare_endpoint(workdir) as bare:
        assert bare.pid is not None
        warm_up(bare.url, heal=False)
        out["rss_before"] = settled_rss(ctx, bare.pid, pause=1.0)
        with PeakRss(bare.pid) as peak:
            out["sender"] = send(
                "storm",
                bare.url,
                "",
                workdir / "storm.json",
                ctx.pick(360, 120),
                "--groups",
                str(groups),
                "--per-group",
                str(PER_GROUP),
                "--replicas",
                str(am_replicas),
                "--starts-at",
                str(starts_at),
                "--deadline",
                str(ctx.pick(300, 60)),
            )
        out["rss_peak"] = peak.peak
        out["rss_after"] = settled_rss(ctx, bare.pid)
    s = out["sender"]
    out["seconds"] = (
        round(s["last_answer_at"] - s["first_post_at"], 3)
        if s["last_answer_at"] is not None
        else None
    )
    print(
        f"    storm on bare: {s['requests']} posts, last answer after {out['seconds']} s",
        flush=True,
    )
    return out


def _count(values: Any) -> dict[str, int]:
    counts: dict[str, int] = {}
    for v in values:
        counts[str(v)] = counts.get(str(v), 0) + 1
    return counts


# ---- part 2: the leak check -------------------------------------------------------------


def flood(
    url: str, token: str, out: Path, alerts: int, first_group: int, deadline: float
) -> dict[str, Any]:
    return send(
        "flood",
        url,
        token,
        out,
        deadline + 120,
        "--alerts",
        str(alerts),
        "--per-post",
        str(PER_POST),
        "--first-group",
        str(first_group),
        "--deadline",
        str(max(1.0, deadline)),
    )


def leak_journal(path: Path) -> dict[str, Any]:
    """What the journal kept of the flood: unmatched alerts keep no row, so they are read
    from the kept bodies through ``alert_log`` (entries: one per alert per body kept)."""
    db = open_ro(path)
    try:
        distinct, entries = db.execute(
            "SELECT COUNT(DISTINCT fingerprint), COUNT(*) FROM alert_log WHERE alertname=?",
            (FLOOD_ALERTNAME,),
        ).fetchone()
        dispositions = dict(
            db.execute(
                "SELECT disposition, COUNT(*) FROM alert_log WHERE alertname=?"
                " GROUP BY disposition",
                (FLOOD_ALERTNAME,),
            ).fetchall()
        )
        heals = db.execute("SELECT COUNT(*) FROM heals").fetchone()[0]
    finally:
        db.close()
    return {
        "distinct_alerts": distinct,
        "entries": entries,
        "dispositions": dispositions,
        "heals": heals,
        "file_mib": _mib(path.stat().st_size),
    }


def leak_on_healer(ctx: Context, total: int, chunk: int) -> dict[str, Any]:
    workdir = ctx.workdir / "leak"
    workdir.mkdir()
    limit = ctx.pick(LEAK_SECONDS, 120)
    started = time.monotonic()
    runs: list[dict[str, Any]] = []
    out: dict[str, Any] = {"runs": runs, "aborted": False}
    # Prometheus is never asked: no alert matches a rule.
    with healer(workdir, healer_config("http://127.0.0.1:9")) as h:
        assert h.pid is not None
        warm_up(h.url, heal=False)
        out["rss_start"] = settled_rss(ctx, h.pid, pause=1.0)
        next_group = 0
        with PeakRss(h.pid) as peak:
            for n in range(total // chunk):
                left = limit - (time.monotonic() - started)
                if left <= 0:
                    out["aborted"] = True
                    break
                res = flood(h.url, TOKEN, workdir / f"flood-{n}.json", chunk, next_group, left)
                next_group = res["next_group"]
                res["rss_after"] = settled_rss(ctx, h.pid)
                res["sent_so_far"] = sum(r["alerts_posted"] for r in runs) + res["alerts_posted"]
                runs.append(res)
                print(
                    f"    leak {_human(res['sent_so_far']):>5}: {res['alerts_per_second']:7.0f}"
                    f" alerts/s, p99 {res['latency_ms']['p99']} ms, RSS "
                    f"{_mib(res['rss_after'])} MiB, answers {res['statuses']}",
                    flush=True,
                )
                if res["aborted"]:
                    out["aborted"] = True
                    break
        out["rss_peak"] = peak.peak
    out["seconds"] = round(time.monotonic() - started, 1)
    out["journal"] = leak_journal(workdir / "journal.db")
    sent = sum(r["alerts_posted"] for r in runs)
    out["alerts_sent"] = sent
    if out["aborted"]:
        out["abort_message"] = (
            f"leak check aborted after {limit / 60:g} minutes: {sent:,} of {total:,} alerts "
            f"sent; healer took them too slowly (see runs[].alerts_per_second)"
        )
        print(f"!!! {out['abort_message']}", flush=True)
    return out


def leak_on_bare(ctx: Context, chunk: int) -> dict[str, Any]:
    workdir = ctx.workdir / "leak-bare"
    workdir.mkdir()
    with bare_endpoint(workdir) as bare:
        assert bare.pid is not None
        warm_up(bare.url, heal=False)
        rss_start = settled_rss(ctx, bare.pid, pause=1.0)
        res = flood(bare.url, "", workdir / "flood.json", chunk, 0, ctx.pick(300, 60))
        res["rss_start"] = rss_start
        res["rss_after"] = settled_rss(ctx, bare.pid)
    print(f"    leak on bare {_human(chunk)}: {res['alerts_per_second']:.0f} alerts/s", flush=True)
    return res


# ---- the result -----------------------------------------------------------------------


def run(ctx: Context) -> Result:
    groups = ctx.pick(100, 10)
    fps = groups * PER_GROUP
    expected_alerts = storm_alert_count(groups, PER_GROUP)
    total, chunk = ctx.pick(1_000_000, 20_000), ctx.pick(100_000, 4_000)
    starts_at = round(time.time()) - 600.0  # group g's alerts started 600 - g s ago

    storm = storm_on_healer(ctx, groups, starts_at)
    storm_bare = storm_on_bare(ctx, groups, starts_at)
    leak = leak_on_healer(ctx, total, chunk)
    leak_bare = leak_on_bare(ctx, chunk)

    waves = storm["waves"]
    w0 = waves[0]
    sj, sender = w0["journal"], w0["sender"]
    runs = leak["runs"]
    rss_first = runs[0]["rss_after"] if runs else None
    rss_last = runs[-1]["rss_after"] if runs else None
    complete = not leak["aborted"] and leak["alerts_sent"] >= total
    leak_ratio = ratio(rss_last, rss_first)
    leak_rates = [r["alerts_per_second"] for r in runs if r["alerts_per_second"]]
    healer_rate = statistics.median(leak_rates) if leak_rates else None
    lj = leak["journal"]
    leak_accepted = sum(r["alerts_accepted"] for r in runs)
    leak_new = sum(r["new_groups"] for r in runs) * PER_POST
    errors = {
        "storm": sum(w["sender"]["non_2xx"] for w in waves),
        "leak": sum(r["non_2xx"] for r in runs),
    }

    figures: dict[str, Any] = {
        "storm": {
            "fingerprints": fps,
            "groups": groups,
            "alerts_planned": expected_alerts,
            "healer": storm,
            "bare": storm_bare,
            "summary": {
                "heals_created": sj["heals"],
                "heals_expected": fps,
                "fingerprints_healed_twice": sj["fingerprints_healed_twice"],
                "outcomes": sj["outcomes"],
                "alerts_sent": sender["alerts_posted"],
                "alerts_accepted": sender["alerts_accepted"],
                "receipts_journaled": sj["alerts"]["receipts"],
                "answers_started": sender["dispositions"].get("started"),
                "answers_duplicate": sender["dispositions"].get("duplicates"),
                "non_2xx": sender["non_2xx"],
                "drain_seconds": w0["drain_seconds"],
                "timeline_gaps_ms": {
                    k: {q: v.get(q) for q in ("median", "p99")}
                    for k, v in sj["timeline_gaps_ms"].items()
                },
                "bare_seconds": storm_bare["seconds"],
                "rss_mib": {
                    "before": _mib(storm["rss_before"]),
                    "peak": _mib(w0["rss_peak"]),
                    "after": _mib(w0["rss_after"]),
                },
                "bare_rss_mib": {
                    k: _mib(storm_bare[f"rss_{k}"]) for k in ("before", "peak", "after")
                },
                "second_wave": {
                    "heals_created": waves[1]["journal"]["heals"],
                    "outcomes": waves[1]["journal"]["outcomes"],
                    "drain_seconds": waves[1]["drain_seconds"],
                    "rss_mib_peak": _mib(waves[1]["rss_peak"]),
                    "rss_mib_after": _mib(waves[1]["rss_after"]),
                },
            },
        },
        "leak": {
            "alerts_planned": total,
            "run_size": chunk,
            "healer": leak,
            "bare": leak_bare,
            "summary": {
                "alerts_sent": leak["alerts_sent"],
                "complete": complete,
                "rss_mib_start": _mib(leak["rss_start"]),
                "rss_mib_after_first_run": _mib(rss_first),
                "rss_mib_after_all": _mib(rss_last),
                "rss_mib_peak": _mib(leak["rss_peak"]),
                "rss_mib_curve": [[r["sent_so_far"], _mib(r["rss_after"])] for r in runs],
                "ratio_all_to_first": leak_ratio,
                "alerts_per_second_median": healer_rate,
                "alerts_per_second_by_run": leak_rates,
                "bare_alerts_per_second": leak_bare["alerts_per_second"],
                "journal_distinct_alerts": lj["distinct_alerts"],
                "journal_distinct_alerts_expected": leak_new,
                "journal_entries": lj["entries"],
                "alerts_accepted": leak_accepted,
                "non_2xx": errors["leak"],
                "seconds": leak["seconds"],
            },
        },
    }

    lost_storm = sum(
        w["sender"]["alerts_accepted"] - (w["journal"]["alerts"]["receipts"] or 0) for w in waves
    )
    targets = [
        Target(
            f"storm: heals created - {fps:,} expected (one per fingerprint; both waves)",
            sum(abs(w["journal"]["heals"] - fps) for w in waves),
            "<=",
            0,
        ),
        Target(
            "storm: fingerprints without a recovered heal (both waves)",
            sum(fps - w["journal"]["recovered_fingerprints"] for w in waves),
            "<=",
            0,
        ),
        Target("storm: accepted alerts missing from the journal (both waves)", lost_storm, "<=", 0),
        Target(
            f"non-2xx answers or transport errors (storm + {_human(total)})",
            errors["storm"] + errors["leak"],
            "<=",
            0,
        ),
        Target(
            f"leak: distinct accepted alerts missing from the journal ({_human(total)})",
            max(0, leak_new - lj["distinct_alerts"]),
            "<=",
            0,
        ),
        Target(
            f"leak: RSS after {_human(total)} / after the first {_human(chunk)}",
            leak_ratio if complete else None,
            "<=",
            1.2,
        ),
    ]
    table = [
        {
            "figure": f"storm: heals created (expected {fps:,}, {expected_alerts:,} alerts)",
            "healer": sj["heals"],
            "bare": fps,
            "ratio": ratio(sj["heals"], fps),
        },
        {
            "figure": "storm: heals recovered",
            "healer": sj["outcomes"].get("recovered", 0),
            "bare": fps,
            "ratio": ratio(sj["outcomes"].get("recovered", 0), fps),
        },
        {
            "figure": "storm: first post -> last heal done (s); bare: last answer",
            "healer": w0["drain_seconds"],
            "bare": storm_bare["seconds"],
            "ratio": ratio(w0["drain_seconds"], storm_bare["seconds"]),
        },
        {
            "figure": "storm: RSS idle before (MiB)",
            "healer": _mib(storm["rss_before"]),
            "bare": _mib(storm_bare["rss_before"]),
            "ratio": ratio(storm["rss_before"], storm_bare["rss_before"]),
        },
        {
            "figure": "storm: RSS peak (MiB)",
            "healer": _mib(w0["rss_peak"]),
            "bare": _mib(storm_bare["rss_peak"]),
            "ratio": ratio(w0["rss_peak"], storm_bare["rss_peak"]),
        },
        {
            "figure": "storm: RSS after drain (MiB)",
            "healer": _mib(w0["rss_after"]),
            "bare": _mib(storm_bare["rss_after"]),
            "ratio": ratio(w0["rss_after"], storm_bare["rss_after"]),
        },
        {
            "figure": f"storm: RSS after a second wave of {fps:,} new alerts (MiB); ratio: "
            "to after the first",
            "healer": _mib(waves[1]["rss_after"]),
            "bare": None,
            "ratio": ratio(waves[1]["rss_after"], w0["rss_after"]),
        },
        {
            "figure": f"leak: RSS after first {_human(chunk)} / after {_human(total)} (MiB)",
            "healer": f"{_mib(rss_first)} / {_mib(rss_last)}" + ("" if complete else " (aborted)"),
            "bare": None,
            "ratio": leak_ratio,
        },
        {
            "figure": f"leak: alerts/s (median of {len(runs)} runs; bare: one)",
            "healer": healer_rate,
            "bare": leak_bare["alerts_per_second"],
            "ratio": ratio(healer_rate, leak_bare["alerts_per_second"]),
        },
    ]
    return Result(
        NAME,
        figures,
        targets,
        table,
        params={
            "groups": groups,
            "per_group": PER_GROUP,
            "fingerprints": fps,
            "storm_alerts": expected_alerts,
            "replicas": 2,
            "retries": 1,
            "storm_waves": 2,
            "leak_alerts": total,
            "leak_run": chunk,
            "per_post": PER_POST,
            "leak_connections": 16,
            "leak_limit_seconds": ctx.pick(LEAK_SECONDS, 120),
        },
    )
