"""Storm on replicas: the storm (bench/storm.py) on three healer replicas sharing a
PostgreSQL store, beside the same storm on one healer on SQLite, in the same run.

A private PostgreSQL server (tests/support/servers/pgserver.py, ``fsync`` and
``synchronous_commit`` on: a durable commit costs what it costs on this disk) holds the
store; three ``healer serve`` processes run on it, each on its own port with the same
config (``journal: postgresql://...``, default pool); one more ``healer serve`` runs on a
SQLite journal. The storm comes from three simulated HA Alertmanager replicas: 100
groups of 10 alerts (1,000 fingerprints), each replica notifying every group three times
(5, 10, 10 alerts), every notification retried once before the first copy is answered:
15,000 alert copies. Towards the replicas, Alertmanager replica i posts to healer i and
its retries reach healer i+1 (as a load balancer would route them), so copies of one
alert race on different replicas; towards SQLite all of it goes to the one healer. Each
Alertmanager replica has 8 connections in all. Rounds alternate the side that goes
first; each round is a new wave (new fingerprints). The bare endpoint (bench/bare_app.py)
takes the same storm once: the limit of this machine and sender.

Measured per side: alerts/s and posts/s (2xx answers over the sender's time, first post
to last answer; median of rounds), the time to drain (first post -> last heal
finished), heals created (must be exactly one per fingerprint, not one per replica),
fingerprints healed twice, alerts lost (alert copies answered 2xx minus receipts
journaled, ``SUM(times_seen)``, read after the run: from the PostgreSQL tables by a
read-only session, from the SQLite file opened read-only), non-2xx answers. Target,
reported and never asserted: alerts/s of the 3 PostgreSQL replicas / 1 SQLite healer
>= 1.0, with the same exactly-once figures.

The durable floor: ``COMMITS`` sequential single-row INSERTs, each its own transaction
(one round trip, one WAL flush), on the same server before the healers start: commits/s
and median ms. Beside it, the store's ingest per request: ``POSTS`` sequential 1-alert
posts (one connection, no rule matches) to one replica, and to the SQLite healer: median
ms, and its ratio to one durable commit.

Quick mode: 10 groups (100 fingerprints, 1,500 alert copies), one round, 200 commits,
100 posts.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import statistics
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import asyncpg
import httpx

from bench.common import Context, Result, Target, median, ratio, spread, summary
from bench.procs import ADMIN_TOKEN, TOKEN, healers
from bench.storm import (
    PER_GROUP,
    Query,
    drain_seconds,
    healer_config,
    send,
    storm_journal,
    storm_on_bare,
    storm_wave,
    warm_up,
    wave_journal,
)
from bench.storm_sender import flood_body, storm_alert_count
from tests.support.servers.pgserver import private_postgres
from tests.support.servers.processes import PrometheusFactory

NAME = "storm_replicas"
DESCRIPTION = (
    "the storm on 3 healer replicas sharing a PostgreSQL store beside 1 healer "
    "on SQLite: alerts/s, heals created, lost; PostgreSQL's durable commit floor"
)
REPLICAS = 3
AM_REPLICAS = 3
SIDES = ("pg", "sqlite")
LABEL = {"pg": f"{REPLICAS} replicas on PostgreSQL", "sqlite": "1 healer on SQLite"}
PG_SETTINGS = {"fsync": "on", "synchronous_commit": "on", "full_page_writes": "on"}


# ---- PostgreSQL: the durable floor and a read-only look at the store --------------------


async def commit_floor(dsn: str, commits: int) -> dict[str, Any]:
    """``commits`` sequential single-row INSERTs, each its own (durable) transaction."""
    conn = await asyncpg.connect(dsn, timeout=10)
    try:
        settings = {
            k: await conn.fetchval(f"SHOW {k}")
            for k in ("fsync", "synchronous_commit", "wal_sync_method")
        }
        await conn.execute(
            "CREATE TABLE bench_durable_floor (id BIGSERIAL PRIMARY KEY,"
            " at DOUBLE PRECISION NOT NULL, body TEXT NOT NULL)"
        )
        body = flood_body(0, 1).decode()
        times = []
        started = time.perf_counter()
        for _ in range(commits):
            began = time.perf_counter()
            await conn.execute(
                "INSERT INTO bench_durable_floor (at, body) VALUES ($1, $2)", time.time(), body
            )
            times.append(time.perf_counter() - began)
        elapsed = time.perf_counter() - started
        await conn.execute("DROP TABLE bench_durable_floor")
    finally:
        await conn.close()
    return {
        "commits": commits,
        "seconds": round(elapsed, 3),
        "commits_per_second": round(commits / elapsed, 1),
        "ms": summary(times, 1000),
        "settings": settings,
    }


def pg_placeholders(sql: str) -> str:
    """``?`` placeholders (as bench/storm.py writes its queries) -> ``$1, $2, ...``."""
    numbers = iter(range(1, sql.count("?") + 1))
    return re.sub(r"\?", lambda _: f"${next(numbers)}", sql)


@contextlib.contextmanager
def pg_reader(dsn: str) -> Iterator[Query]:
    """A read-only session on the store (``default_transaction_read_only``)."""
    with asyncio.Runner() as runner:
        conn = runner.run(
            asyncpg.connect(
                dsn, timeout=10, server_settings={"default_transaction_read_only": "on"}
            )
        )
        try:
            yield lambda sql, args: [
                tuple(r) for r in runner.run(conn.fetch(pg_placeholders(sql), *args))
            ]
        finally:
            runner.run(conn.close())


# ---- the healers ------------------------------------------------------------------------


def per_request(ctx: Context, url: str, out: Path, posts: int) -> dict[str, Any]:
    """``posts`` sequential 1-alert posts on one connection (no rule matches)."""
    res = send(
        "flood",
        url,
        TOKEN,
        out,
        180,
        "--alerts",
        str(posts),
        "--per-post",
        "1",
        "--connections",
        "1",
        "--resend-every",
        str(10 * posts),
        "--deadline",
        str(ctx.pick(120, 60)),
    )
    return {
        k: res[k]
        for k in ("requests", "seconds", "requests_per_second", "latency_ms", "statuses", "non_2xx")
    }


def run(ctx: Context) -> Result:
    groups = ctx.pick(100, 10)
    rounds = ctx.repeats(3, 1)
    commits, posts = ctx.pick(2000, 200), ctx.pick(1000, 100)
    fps = groups * PER_GROUP
    planned = storm_alert_count(groups, PER_GROUP, AM_REPLICAS)
    starts_at = round(time.time()) - 600.0
    waves: dict[str, list[dict[str, Any]]] = {side: [] for side in SIDES}
    ingest: dict[str, dict[str, Any]] = {}
    workdirs = {side: ctx.workdir / side for side in SIDES}
    for d in workdirs.values():
        d.mkdir()

    with private_postgres(max_connections=60, settings=PG_SETTINGS) as pg:
        floor = asyncio.run(commit_floor(pg.dsn, commits))
        print(
            f"    durable floor: {floor['commits_per_second']:.0f} commits/s, median "
            f"{floor['ms']['median']} ms ({floor['settings']})",
            flush=True,
        )
        prometheus = PrometheusFactory(ctx.workdir / "prometheus")
        try:
            config = healer_config(prometheus.start(scrape_targets=[]).url)
            with (
                healers(workdirs["pg"], {**config, "journal": pg.dsn}, REPLICAS) as pg_procs,
                healers(workdirs["sqlite"], config, 1) as sqlite_procs,
                contextlib.ExitStack() as stack,
            ):
                procs = {"pg": pg_procs, "sqlite": sqlite_procs}
                admins = {
                    side: [
                        stack.enter_context(
                            httpx.Client(
                                base_url=p.url,
                                timeout=30.0,
                                headers={"Authorization": f"Bearer {ADMIN_TOKEN}"},
                            )
                        )
                        for p in ps
                    ]
                    for side, ps in procs.items()
                }
                for ps in procs.values():
                    for i, p in enumerate(ps):
                        warm_up(p.url, heal=True, fingerprint=f"0warm{i}")
                for r in range(rounds):
                    for side in SIDES if r % 2 == 0 else SIDES[::-1]:
                        waves[side].append(
                            storm_wave(
                                ctx,
                                [p.url for p in procs[side]],
                                admins[side],
                                workdirs[side] / f"storm-{r}.json",
                                groups,
                                r,
                                starts_at,
                                am_replicas=AM_REPLICAS,
                                label=f" on {LABEL[side]}",
                            )
                        )
                for side in SIDES:
                    ingest[side] = per_request(
                        ctx, procs[side][0].url, workdirs[side] / "per-request.json", posts
                    )
        finally:
            prometheus.stop_all()
        with pg_reader(pg.dsn) as query:
            for r, w in enumerate(waves["pg"]):
                w["journal"] = wave_journal(query, r)
    for r, w in enumerate(waves["sqlite"]):
        w["journal"] = storm_journal(workdirs["sqlite"] / "journal.db", r)
    bare = storm_on_bare(ctx, groups, starts_at, AM_REPLICAS)

    sides: dict[str, dict[str, Any]] = {}
    for side in SIDES:
        for w in waves[side]:
            w["drain_seconds"] = drain_seconds(w)
            j = w["journal"]
            print(
                f"    storm wave on {LABEL[side]}: {w['sender']['alerts_per_second']} "
                f"alerts/s, {j['heals']} heals {j['outcomes']}, drained in "
                f"{w['drain_seconds']} s",
                flush=True,
            )
        ws = waves[side]
        sides[side] = {
            "alerts_per_second": statistics.median(
                w["sender"]["alerts_per_second"] or 0 for w in ws
            ),
            "posts_per_second": statistics.median(
                w["sender"]["requests_per_second"] or 0 for w in ws
            ),
            "alerts_per_second_by_round": [w["sender"]["alerts_per_second"] for w in ws],
            "latency_ms_p50_by_round": [w["sender"]["latency_ms"]["p50"] for w in ws],
            "drain_seconds": median(w["drain_seconds"] for w in ws),
            "heals_created": [w["journal"]["heals"] for w in ws],
            "heals_off_by": sum(abs(w["journal"]["heals"] - fps) for w in ws),
            "fingerprints_healed_twice": sum(w["journal"]["fingerprints_healed_twice"] for w in ws),
            "recovered_fingerprints": [w["journal"]["recovered_fingerprints"] for w in ws],
            "alerts_accepted": sum(w["sender"]["alerts_accepted"] for w in ws),
            "receipts_journaled": sum(w["journal"]["alerts"]["receipts"] or 0 for w in ws),
            "non_2xx": sum(w["sender"]["non_2xx"] for w in ws),
            "ingest_1_alert_ms": ingest[side]["latency_ms"],
            "ingest_non_2xx": ingest[side]["non_2xx"],
        }
        sides[side]["lost"] = sides[side]["alerts_accepted"] - sides[side]["receipts_journaled"]
    bare_rate = bare["sender"]["alerts_per_second"]
    pg_side, sq_side = sides["pg"], sides["sqlite"]
    rate_ratio = ratio(pg_side["alerts_per_second"], sq_side["alerts_per_second"])
    # Each round ran both sides, one after the other: a run of this ratio.
    rate_spread = spread(
        ratio(a, b)
        for a, b in zip(
            pg_side["alerts_per_second_by_round"],
            sq_side["alerts_per_second_by_round"],
            strict=True,
        )
    )
    pg_p50 = pg_side["ingest_1_alert_ms"]["p50"]
    floor_ms = floor["ms"]["median"]
    figures: dict[str, Any] = {
        "fingerprints": fps,
        "groups": groups,
        "alerts_planned_per_storm": planned,
        "rounds": rounds,
        "summary": sides,
        "ratio_alerts_per_second_pg_to_sqlite": rate_ratio,
        "ratio_alerts_per_second_pg_to_sqlite_spread": rate_spread,
        "ratio_posts_per_second_pg_to_sqlite": ratio(
            pg_side["posts_per_second"], sq_side["posts_per_second"]
        ),
        "durable_floor": floor,
        "ratio_pg_ingest_to_durable_commit": ratio(pg_p50, floor_ms),
        "bare": {
            "alerts_per_second": bare_rate,
            "seconds": bare["seconds"],
            "sender": bare["sender"],
        },
        "waves": waves,
        "ingest_per_request": ingest,
    }
    targets = [
        Target(
            f"alerts/s, {LABEL['pg']} / {LABEL['sqlite']}",
            rate_spread.get("median"),  # the median of the rounds' ratios
            ">=",
            1.0,
            spread=rate_spread,
        ),
    ]
    for side in SIDES:
        s = sides[side]
        targets += [
            Target(
                f"{LABEL[side]}: heals created - {fps:,} expected (every storm)",
                s["heals_off_by"],
                "<=",
                0,
            ),
            Target(
                f"{LABEL[side]}: fingerprints healed twice", s["fingerprints_healed_twice"], "<=", 0
            ),
            Target(f"{LABEL[side]}: accepted alerts missing from the journal", s["lost"], "<=", 0),
            Target(
                f"{LABEL[side]}: non-2xx answers or transport errors",
                s["non_2xx"] + s["ingest_non_2xx"],
                "<=",
                0,
            ),
        ]
    med = f"median of {rounds}" if rounds > 1 else "one storm"
    table = [
        {
            "figure": f"storm alerts/s ({planned:,} alerts, {med}), {LABEL['pg']}; bare: the"
            " bare endpoint",
            "healer": pg_side["alerts_per_second"],
            "bare": bare_rate,
            "ratio": ratio(pg_side["alerts_per_second"], bare_rate),
        },
        {
            "figure": f"storm alerts/s, {LABEL['sqlite']}; bare: the bare endpoint",
            "healer": sq_side["alerts_per_second"],
            "bare": bare_rate,
            "ratio": ratio(sq_side["alerts_per_second"], bare_rate),
        },
        {
            "figure": f"storm alerts/s, {LABEL['pg']} (healer) / {LABEL['sqlite']} (bare column)",
            "healer": pg_side["alerts_per_second"],
            "bare": sq_side["alerts_per_second"],
            "ratio": rate_ratio,
        },
        {
            "figure": f"storm: first post -> last heal done (s), {LABEL['pg']} / {LABEL['sqlite']}",
            "healer": pg_side["drain_seconds"],
            "bare": sq_side["drain_seconds"],
            "ratio": ratio(pg_side["drain_seconds"], sq_side["drain_seconds"]),
        },
        {
            "figure": f"storm: heals created per storm (expected {fps:,}), PostgreSQL / SQLite",
            "healer": "/".join(map(str, pg_side["heals_created"])),
            "bare": "/".join(map(str, sq_side["heals_created"])),
            "ratio": None,
        },
        {
            "figure": "storm: alerts lost / non-2xx, PostgreSQL / SQLite",
            "healer": f"{pg_side['lost']} / {pg_side['non_2xx']}",
            "bare": f"{sq_side['lost']} / {sq_side['non_2xx']}",
            "ratio": None,
        },
        {
            "figure": "1-alert post, median ms: the PostgreSQL store; bare: one durable "
            "PostgreSQL commit (single-row INSERT, fsync on)",
            "healer": pg_p50,
            "bare": floor_ms,
            "ratio": ratio(pg_p50, floor_ms),
        },
        {
            "figure": "1-alert post, median ms: the SQLite journal; bare: the PostgreSQL store",
            "healer": sq_side["ingest_1_alert_ms"]["p50"],
            "bare": pg_p50,
            "ratio": ratio(sq_side["ingest_1_alert_ms"]["p50"], pg_p50),
        },
        {
            "figure": "durable PostgreSQL commits/s (sequential, one session)",
            "healer": None,
            "bare": floor["commits_per_second"],
            "ratio": None,
        },
    ]
    return Result(
        NAME,
        figures,
        targets,
        table,
        runs=rounds,
        params={
            "groups": groups,
            "per_group": PER_GROUP,
            "fingerprints": fps,
            "alertmanager_replicas": AM_REPLICAS,
            "healer_replicas": REPLICAS,
            "storm_alerts": planned,
            "rounds": rounds,
            "commits": commits,
            "ingest_posts": posts,
            "postgres_settings": PG_SETTINGS,
            "journal_pool_size": "default",
        },
    )
