"""The storm benchmark's Alertmanager stand-in, run as its own process so that it does
not share healer's event loop (it still shares the machine's cores)::

    python -m bench.storm_sender storm --url URL --token T --groups 100 --per-group 10 \\
        --starts-at 1795420800 --out storm.json
    python -m bench.storm_sender flood --url URL --token T --alerts 100000 \\
        --first-group 0 --deadline 600 --out flood.json

``storm``: what ``--replicas`` (default two) HA Alertmanager replicas send for
``--groups`` alert groups of ``--per-group`` alerts each (see :func:`storm_plan`), each
notification retried once, every group its own concurrent sender as in Alertmanager (one
goroutine per aggregation group), each replica its own connection pool. Time is
compressed: group_wait, group_interval and repeat_interval become a few milliseconds of
jitter. ``--url`` given once per healer replica (bench/storm_replicas.py): Alertmanager
replica i posts to healer i (mod their number) and its retries go to the next healer, as
a load balancer would route them.

``flood``: ``--alerts`` alerts in posts of ``--per-post``, every group its own
fingerprints (numbered from ``--first-group``), one post in ``--resend-every`` a re-send
of an earlier group of this run; at most ``--connections`` in flight. Bounded by count
and by ``--deadline`` seconds: past it no new post starts and ``aborted`` is true.

Both only ever talk to the given URLs (loopback in the benchmark) and write one JSON
document to ``--out``: what was sent, the answers by status, latencies, the wall-clock
time of the first post and of the last answer.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import statistics
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from bench.common import percentile
from tests.support.inprocess.payloads import alert, iso, payload

STORM_ALERTNAME = "BenchStorm"
FLOOD_ALERTNAME = "BenchLeak"


def replica_names(n: int) -> tuple[str, ...]:
    """The simulated Alertmanager replicas: ``am-0`` .. ``am-<n-1>``."""
    return tuple(f"am-{i}" for i in range(n))


REPLICAS = replica_names(2)
# Per replica and group, as Alertmanager notifies a group that grows and then repeats:
# the first half of its alerts (group_wait), all of them (group_interval), all again
# (repeat_interval).
NOTIFICATIONS = ("first-half", "grown", "repeat")


def storm_fingerprint(group: int, index: int, wave: int = 0) -> str:
    """Wave 0 is the storm; a later wave is as many new alerts (new fingerprints)."""
    return f"{5 + wave:x}{group:07x}{index:08x}"


def flood_fingerprint(group: int, index: int) -> str:
    return f"f{group:07x}{index:08x}"


def storm_alert(group: int, index: int, starts_at: float, wave: int = 0) -> dict[str, Any]:
    return alert(
        STORM_ALERTNAME,
        {
            "group": str(group),
            "instance": f"storm-w{wave}-{group}-{index}",
            "job": "bench",
            "severity": "warning",
            "wave": str(wave),
        },
        annotations={"summary": f"storm alert {index} of group {group}"},
        # Every copy of one alert, from either replica, carries the same startsAt.
        starts_at=iso(starts_at + group + index / 1000),
        generator_url="http://127.0.0.1:9090/graph?g0.expr=bench_storm",
        fingerprint=storm_fingerprint(group, index, wave),
    )


@dataclass(frozen=True, slots=True)
class Notification:
    replica: str
    group: int
    kind: str
    alerts: int  # how many of the group's alerts it carries (the first N)

    def body(self, per_group: int, starts_at: float, wave: int = 0) -> bytes:
        alerts = [storm_alert(self.group, i, starts_at, wave) for i in range(self.alerts)]
        return json.dumps(
            payload(
                *alerts,
                group_key=f'{{}}:{{alertname="{STORM_ALERTNAME}", group="{self.group}", '
                f'wave="{wave}"}}',
                group_labels={
                    "alertname": STORM_ALERTNAME,
                    "group": str(self.group),
                    "wave": str(wave),
                },
                common_labels={
                    "alertname": STORM_ALERTNAME,
                    "group": str(self.group),
                    "job": "bench",
                    "severity": "warning",
                    "wave": str(wave),
                },
                external_url=f"http://127.0.0.1:{9093 + int(self.replica.rsplit('-', 1)[1])}",
            )
        ).encode()


def storm_plan(
    groups: int, per_group: int, replicas: int = 2
) -> dict[str, list[list[Notification]]]:
    """Per Alertmanager replica, per group, the notifications in the order that replica
    sends them (each is then posted twice: the original and its retry)."""
    first = max(1, per_group // 2)
    sizes = dict(zip(NOTIFICATIONS, (first, per_group, per_group), strict=True))
    return {
        replica: [
            [Notification(replica, g, kind, sizes[kind]) for kind in NOTIFICATIONS]
            for g in range(groups)
        ]
        for replica in replica_names(replicas)
    }


def storm_alert_count(groups: int, per_group: int, replicas: int = 2) -> int:
    """Alert copies the storm posts: plan x 2 (every notification retried once)."""
    plan = storm_plan(groups, per_group, replicas)
    return 2 * sum(n.alerts for per in plan.values() for notes in per for n in notes)


def flood_body(group: int, alerts: int) -> bytes:
    parts = []
    for i in range(alerts):
        parts.append(
            '{"status":"firing","labels":{"alertname":"'
            + FLOOD_ALERTNAME
            + f'","group":"{group}","instance":"leak-{group}-{i}","job":"bench",'
            '"severity":"warning"},"annotations":{"summary":"leak check alert"},'
            '"startsAt":"2026-11-23T08:00:00.000Z","endsAt":"0001-01-01T00:00:00Z",'
            '"generatorURL":"http://127.0.0.1:9090/graph","fingerprint":"'
            + flood_fingerprint(group, i)
            + '"}'
        )
    return (
        '{"version":"4","status":"firing","receiver":"healer","groupKey":"{}:{group=\\"'
        + str(group)
        + '\\"}","truncatedAlerts":0,"groupLabels":{"group":"'
        + str(group)
        + '"},"commonLabels":{},"commonAnnotations":{},'
        '"externalURL":"http://127.0.0.1:9093","alerts":[' + ",".join(parts) + "]}"
    ).encode()


class Connection:
    """One keep-alive HTTP/1.1 connection, opened lazily and again when stale."""

    # uvicorn closes a connection idle for 5 s; one idle this long is not reused, so a
    # post never races the server closing it (a transport error with nothing wrong).
    STALE = 3.0

    def __init__(self, host: str, port: int) -> None:
        self.host, self.port = host, port
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None
        self.used = 0.0

    async def ready(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        if (
            self.reader is None
            or self.writer is None
            or self.writer.is_closing()
            or time.monotonic() - self.used > self.STALE
        ):
            self.close()
            self.reader, self.writer = await asyncio.open_connection(self.host, self.port)
        return self.reader, self.writer

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
        self.reader = self.writer = None


class Pool:
    """At most ``size`` connections to one loopback server, shared by many senders.

    A hand-written HTTP/1.1 client: a few tens of microseconds of CPU per post where
    httpx takes milliseconds, which on a two-core machine would be taken from healer.
    Bodies are sent with Content-Length; answers must carry one (uvicorn's do)."""

    def __init__(self, url: str, size: int, timeout: float, token: str) -> None:
        parts = urlsplit(url)
        if parts.scheme != "http" or not parts.hostname or not parts.port:
            raise ValueError(f"want http://HOST:PORT, got {url!r}")
        self._timeout = timeout
        self._idle: asyncio.Queue[Connection] = asyncio.Queue()
        for _ in range(size):
            self._idle.put_nowait(Connection(parts.hostname, parts.port))
        auth = f"Authorization: Bearer {token}\r\n" if token else ""
        self._head = (
            "POST /api/v1/alerts HTTP/1.1\r\nHost: "
            + parts.netloc
            + "\r\nContent-Type: application/json\r\n"
            + auth
        )

    async def post(self, body: bytes) -> tuple[int, bytes]:
        conn = await self._idle.get()
        try:
            reader, writer = await conn.ready()
            writer.write(f"{self._head}Content-Length: {len(body)}\r\n\r\n".encode() + body)
            await writer.drain()
            status, answer, keep = await asyncio.wait_for(_response(reader), self._timeout)
            conn.used = time.monotonic()
            if not keep:
                conn.close()
            return status, answer
        except BaseException:
            conn.close()
            raise
        finally:
            self._idle.put_nowait(conn)

    def close(self) -> None:
        while not self._idle.empty():
            self._idle.get_nowait().close()


async def _response(reader: asyncio.StreamReader) -> tuple[int, bytes, bool]:
    head = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1").split("\r\n")
    status = int(head[0].split(" ", 2)[1])
    headers = {}
    for line in head[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    if "content-length" not in headers:
        raise ConnectionError(f"answer without Content-Length: {head[0]}")
    body = await reader.readexactly(int(headers["content-length"]))
    return status, body, headers.get("connection", "").lower() != "close"


TRANSPORT_ERRORS = (
    OSError,
    asyncio.IncompleteReadError,
    asyncio.LimitOverrunError,
    asyncio.TimeoutError,
    ValueError,
    IndexError,
)


class Tally:
    """Answers by status, latencies, and the healer's own per-alert dispositions."""

    def __init__(self) -> None:
        self.statuses: Counter[str] = Counter()
        self.dispositions: Counter[str] = Counter()
        self.latencies: list[float] = []
        self.alerts_ok = 0
        self.first_post_at: float | None = None
        self.last_answer_at: float | None = None

    async def post(self, pool: Pool, body: bytes, alerts: int, read_body: bool) -> int | None:
        """One post (latency counted from asking the pool for a connection); its status,
        or None when no answer came (healer may or may not have stored it)."""
        began = time.monotonic()
        if self.first_post_at is None:
            self.first_post_at = time.time()
        try:
            status, answer = await pool.post(body)
        except TRANSPORT_ERRORS as exc:
            self.statuses[type(exc).__name__] += 1
            return None
        self.last_answer_at = time.time()
        self.latencies.append(time.monotonic() - began)
        self.statuses[str(status)] += 1
        if 200 <= status < 300:
            self.alerts_ok += alerts
            if read_body:
                try:
                    doc = json.loads(answer)
                except ValueError:
                    doc = {}
                for key in ("started", "duplicates", "ignored", "resolved"):
                    if isinstance(doc.get(key), list):
                        self.dispositions[key] += len(doc[key])
        return status

    def summary(self, elapsed: float) -> dict[str, Any]:
        lat = self.latencies

        def q(p: float) -> float | None:
            value = percentile(lat, p)
            return None if value is None else round(value * 1000, 2)

        requests = sum(self.statuses.values())
        non_2xx = sum(
            n
            for code, n in self.statuses.items()
            if not (code.isdigit() and 200 <= int(code) < 300)
        )
        return {
            "seconds": round(elapsed, 3),
            "requests": requests,
            "statuses": dict(self.statuses),
            "non_2xx": non_2xx,
            "alerts_accepted": self.alerts_ok,
            "alerts_per_second": round(self.alerts_ok / elapsed, 1) if elapsed else None,
            "requests_per_second": round(requests / elapsed, 1) if elapsed else None,
            "latency_ms": {
                "p50": q(0.5),
                "p99": q(0.99),
                "max": q(1.0),
                "mean": round(statistics.fmean(lat) * 1000, 2) if lat else None,
            },
            "dispositions": dict(self.dispositions),
            "first_post_at": self.first_post_at,
            "last_answer_at": self.last_answer_at,
        }


async def run_storm(args: argparse.Namespace) -> dict[str, Any]:
    rng = random.Random(args.seed)  # noqa: S311 (jitter, not secrets)
    plan = storm_plan(args.groups, args.per_group, args.replicas)
    tally = Tally()
    by_url = Counter[str]()
    posted = Counter[str]()
    bodies = {
        n: n.body(args.per_group, args.starts_at, args.wave)
        for per in plan.values()
        for notes in per
        for n in notes
    }
    deadline = time.monotonic() + args.deadline

    async def group_sender(
        pool: Pool, retry_pool: Pool, notes: list[Notification], delays: list[float]
    ) -> None:
        await asyncio.sleep(delays[0])  # the storm's alerts do not all fire in one instant
        for n, pause in zip(notes, delays[1:], strict=True):
            if time.monotonic() > deadline:
                return
            body = bodies[n]
            # The retry starts before the original is answered: Alertmanager's client
            # timed out while healer was still storing the first copy.
            original = asyncio.create_task(tally.post(pool, body, n.alerts, read_body=True))
            await asyncio.sleep(rng.uniform(0.0, args.jitter))
            retry = asyncio.create_task(tally.post(retry_pool, body, n.alerts, read_body=True))
            await asyncio.gather(original, retry)
            posted[n.kind] += 2 * n.alerts
            await asyncio.sleep(pause)

    # Alertmanager replica i posts to healer i (mod the healers given) and its retries
    # reach the next one, as behind a load balancer; each replica has --connections
    # connections in all, split between the healers it posts to.
    urls = args.url
    routes = {r: (urls[i % len(urls)], urls[(i + 1) % len(urls)]) for i, r in enumerate(plan)}
    started = time.monotonic()
    pools: dict[tuple[str, str], Pool] = {}
    for replica, pair in routes.items():
        for url in set(pair):
            pools[replica, url] = Pool(
                url, max(1, args.connections // len(set(pair))), args.timeout, args.token
            )
    try:
        tasks = []
        for replica, per in plan.items():
            first, second = routes[replica]
            for notes in per:
                delays = [rng.uniform(0.0, args.spread)] + [
                    rng.uniform(0.0, args.jitter) for _ in notes
                ]
                tasks.append(
                    group_sender(pools[replica, first], pools[replica, second], notes, delays)
                )
                by_url[first] += len(notes)
                by_url[second] += len(notes)
        await asyncio.gather(*tasks)
    finally:
        for pool in pools.values():
            pool.close()
    elapsed = time.monotonic() - started
    out = tally.summary(elapsed)
    out.update(
        {
            "groups": args.groups,
            "per_group": args.per_group,
            "replicas": list(plan),
            "urls": urls,
            "posts_planned_by_url": dict(by_url),
            "alerts_posted": sum(posted.values()),
            "alerts_posted_by_notification": dict(posted),
            "fingerprints": args.groups * args.per_group,
            "wave": args.wave,
            "aborted": time.monotonic() > deadline,
        }
    )
    return out


async def run_flood(args: argparse.Namespace) -> dict[str, Any]:
    rng = random.Random(args.seed + args.first_group)  # noqa: S311 (jitter, not secrets)
    tally = Tally()
    posts = args.alerts // args.per_post
    next_post = 0
    new_groups: list[int] = []
    ok: Counter[int] = Counter()  # group -> 2xx answers
    uncertain: Counter[int] = Counter()  # group -> posts without an answer
    resends = 0
    deadline = time.monotonic() + args.deadline
    aborted = False

    async def worker(pool: Pool) -> None:
        nonlocal next_post, resends, aborted
        while next_post < posts:
            index = next_post
            next_post += 1
            if time.monotonic() > deadline:
                aborted = True
                return
            if new_groups and index % args.resend_every == args.resend_every - 1:
                group = rng.choice(new_groups)
                resends += 1
            else:
                group = args.first_group + len(new_groups)
                new_groups.append(group)
            code = await tally.post(
                pool, flood_body(group, args.per_post), args.per_post, read_body=False
            )
            if code is None:
                uncertain[group] += 1
            elif 200 <= code < 300:
                ok[group] += 1

    started = time.monotonic()
    if len(args.url) != 1:
        raise SystemExit("flood posts to one --url")
    pool = Pool(args.url[0], args.connections, args.timeout, args.token)
    try:
        await asyncio.gather(*(worker(pool) for _ in range(args.connections)))
    finally:
        pool.close()
    elapsed = time.monotonic() - started
    out = tally.summary(elapsed)
    out.update(
        {
            "alerts_posted": out["requests"] * args.per_post,
            "per_post": args.per_post,
            "first_group": args.first_group,
            "new_groups": len(new_groups),
            "resends": resends,
            "aborted": aborted,
            "next_group": args.first_group + len(new_groups),
            # posts with no answer at all: healer may or may not have stored them
            "uncertain_posts": sum(uncertain.values()),
            "new_groups_not_accepted": sum(1 for g in new_groups if not ok[g]),
        }
    )
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="mode", required=True)
    for name in ("storm", "flood"):
        p = sub.add_parser(name)
        p.add_argument(
            "--url",
            required=True,
            action="append",
            help="base URL (loopback); storm: once per healer replica",
        )
        p.add_argument("--token", default="")
        p.add_argument("--out", type=Path, required=True)
        p.add_argument("--timeout", type=float, default=30.0, help="per request")
        p.add_argument(
            "--deadline",
            type=float,
            default=600.0,
            help="no new post starts after this many seconds",
        )
        p.add_argument("--seed", type=int, default=7)
    storm = sub.choices["storm"]
    storm.add_argument("--groups", type=int, default=100)
    storm.add_argument("--per-group", type=int, default=10)
    storm.add_argument(
        "--starts-at",
        type=float,
        required=True,
        help="epoch seconds; group g's alerts start at this + g s",
    )
    storm.add_argument(
        "--wave",
        type=int,
        default=0,
        choices=range(10),
        help="a later wave sends as many new alerts (new fingerprints)",
    )
    storm.add_argument("--replicas", type=int, default=2, help="simulated Alertmanager replicas")
    storm.add_argument("--connections", type=int, default=8, help="per Alertmanager replica")
    storm.add_argument(
        "--spread",
        type=float,
        default=0.5,
        help="groups' first notifications spread over this many seconds",
    )
    storm.add_argument(
        "--jitter",
        type=float,
        default=0.02,
        help="seconds, at most: original -> retry, notification -> next",
    )
    flood = sub.choices["flood"]
    flood.add_argument("--alerts", type=int, required=True)
    flood.add_argument("--per-post", type=int, default=50)
    flood.add_argument("--first-group", type=int, default=0)
    flood.add_argument("--resend-every", type=int, default=10)
    flood.add_argument("--connections", type=int, default=16)
    args = parser.parse_args(argv)
    result = asyncio.run(run_storm(args) if args.mode == "storm" else run_flood(args))
    args.out.write_text(json.dumps(result))


if __name__ == "__main__":
    main()
