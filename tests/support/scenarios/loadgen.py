"""A webhook load generator, run as its own process so it does not share healer's CPU
time or event loop::

    python -m tests.support.scenarios.loadgen --url http://127.0.0.1:9095 --seconds 20 \\
        --rate 300 --alerts 50 --token "$HEALER_WEBHOOK_TOKEN" --out load.json

It posts Alertmanager-shaped groups (``--alerts`` alerts each, every alert with its own
fingerprint) at up to ``--rate`` requests/s with at most ``--concurrency`` in flight,
for ``--seconds``; one post in ``--resend-every`` re-sends an earlier group unchanged
(as Alertmanager does on repeat_interval, HA peers and retries). Bounded in time and in
requests; only ever talks to the given URL (loopback in tests).

The JSON written to ``--out`` says what was sent and what came back, so a test can
check the journal against it: ``groups`` maps each group number to how many times it
was answered 200, ``uncertain`` to how many of its posts got no answer at all (a
transport error: journaled or not); alert ``i`` of group ``g`` has fingerprint
``fingerprint(g, i)``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import statistics
import time
from collections import Counter
from pathlib import Path
from typing import Any

import httpx

from tests.support.inprocess.payloads import alert, payload

STARTS_AT = "2026-11-23T08:00:00Z"


def fingerprint(group: int, index: int) -> str:
    return f"{group:08x}{index:08x}"


def group_body(group: int, alerts: int) -> bytes:
    return json.dumps(
        payload(
            *(
                alert(
                    "LoadTest",
                    {
                        "load": str(group),
                        "instance": f"i-{i}",
                        "severity": "warning",
                        "job": "load",
                    },
                    annotations={"summary": f"load test alert {i} of group {group}"},
                    starts_at=STARTS_AT,
                    generator_url="http://127.0.0.1:9090/graph?g0.expr=up",
                    fingerprint=fingerprint(group, i),
                )
                for i in range(alerts)
            ),
            group_key=f'{{}}:{{load="{group}"}}',
            group_labels={"load": str(group)},
            common_labels={"alertname": "LoadTest"},
        )
    ).encode()


def percentile(values: list[float], q: float) -> float:
    if not values:
        return 0.0
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def run(args: argparse.Namespace) -> dict[str, Any]:
    rng = random.Random(args.seed)
    headers = {"Content-Type": "application/json"}
    if args.token:
        headers["Authorization"] = f"Bearer {args.token}"
    planned = int(args.rate * args.seconds)
    answered: Counter[int] = Counter()  # group -> 200 answers
    uncertain: Counter[int] = Counter()  # group -> posts that got no answer at all
    statuses: Counter[str] = Counter()
    latencies: list[float] = []
    next_index = 0
    new_groups = 0
    resends = 0
    start = time.monotonic()
    deadline = start + args.seconds

    def next_group(index: int) -> int:
        nonlocal new_groups, resends
        if new_groups and index % args.resend_every == 0:
            resends += 1
            return rng.randrange(new_groups)
        new_groups += 1
        return new_groups - 1

    async def worker(client: httpx.AsyncClient) -> None:
        nonlocal next_index
        while next_index < planned:
            index = next_index
            next_index += 1
            due = start + index / args.rate
            now = time.monotonic()
            if due > now:
                await asyncio.sleep(due - now)
            if time.monotonic() >= deadline:
                return
            group = next_group(index)
            began = time.monotonic()
            try:
                resp = await client.post(
                    "/api/v1/alerts", content=group_body(group, args.alerts), headers=headers
                )
            except httpx.TransportError as exc:
                # No answer: healer may or may not have journaled it.
                statuses[type(exc).__name__] += 1
                uncertain[group] += 1
                continue
            latencies.append(time.monotonic() - began)
            statuses[str(resp.status_code)] += 1
            if resp.status_code == 200:
                answered[group] += 1

    # Pooled connections expire well before uvicorn's 5 s keep-alive timeout, or a post
    # may race the server closing its connection (a ReadError with nothing wrong).
    limits = httpx.Limits(
        max_connections=args.concurrency,
        max_keepalive_connections=args.concurrency,
        keepalive_expiry=1.0,
    )
    async with httpx.AsyncClient(base_url=args.url, limits=limits, timeout=args.timeout) as client:
        await asyncio.gather(*(worker(client) for _ in range(args.concurrency)))
    elapsed = time.monotonic() - start
    requests = sum(statuses.values())
    ok = sum(answered.values())
    return {
        "seconds": round(elapsed, 3),
        "requests": requests,
        "statuses": dict(statuses),
        "alerts_per_request": args.alerts,
        "new_groups": new_groups,
        "resends": resends,
        "requests_per_second": round(requests / elapsed, 1),
        "alerts_per_second": round(ok * args.alerts / elapsed, 1),
        "latency_p50_ms": round(percentile(latencies, 0.50) * 1000, 1),
        "latency_p99_ms": round(percentile(latencies, 0.99) * 1000, 1),
        "latency_mean_ms": round(statistics.fmean(latencies) * 1000, 1) if latencies else 0.0,
        "groups": {str(g): n for g, n in sorted(answered.items())},
        "uncertain": {str(g): n for g, n in sorted(uncertain.items())},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--url", required=True, help="healer's base URL (loopback)")
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--rate", type=float, default=300.0, help="requests/s at most")
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--alerts", type=int, default=50, help="alerts per request")
    parser.add_argument("--resend-every", type=int, default=10)
    parser.add_argument("--timeout", type=float, default=30.0)
    parser.add_argument("--seed", type=int, default=4)
    parser.add_argument("--token", default="")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    result = asyncio.run(run(args))
    args.out.write_text(json.dumps(result))
    summary = {k: v for k, v in result.items() if k not in ("groups", "uncertain")}
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
