"""Ingest: healer's webhook with its real journal against a bare FastAPI endpoint.

Both run at once on loopback (each its own process, same uvicorn settings); wrk, in a
third process, posts Alertmanager-shaped groups (1 and 50 alerts, every alert its own
fingerprint, none matching a rule) at one and then the other, alternating, for
``ROUNDS`` rounds of ``SECONDS`` each. Medians over rounds; ratio = healer / bare.
Target: requests/s ratio >= 0.8 for both sizes.
"""

from __future__ import annotations

import statistics
from typing import Any

from bench.common import Context, Result, Target, ratio
from bench.procs import TOKEN, bare_endpoint, healer, wrk

NAME = "ingest"
DESCRIPTION = "webhook posts/s with the journal on, against a bare FastAPI endpoint"
SIZES = (1, 50)
CONNECTIONS = 16


def run(ctx: Context) -> Result:
    rounds = ctx.pick(5, 1)
    seconds = ctx.pick(5, 1)
    runs: dict[str, dict[int, list[dict[str, Any]]]] = {
        "healer": {n: [] for n in SIZES}, "bare": {n: [] for n in SIZES}}
    with healer(ctx.workdir, {"rules": []}) as h, bare_endpoint(ctx.workdir) as bare:
        servers = {"healer": (h.url, TOKEN), "bare": (bare.url, None)}
        for r in range(rounds):
            for size in SIZES:
                order = ("healer", "bare") if r % 2 == 0 else ("bare", "healer")
                for who in order:
                    url, token = servers[who]
                    stats = wrk(url, seconds=seconds, connections=CONNECTIONS, alerts=size,
                                tag=f"{who[0]}{r}s{size}", token=token)
                    runs[who][size].append(stats)
                    print(f"    round {r + 1}/{rounds} {who:6} {size:2} alerts/post: "
                          f"{stats['rps']:7.0f} req/s, p99 {stats['p99_us'] / 1000:.1f} ms, "
                          f"non-2xx {stats['non_2xx']}", flush=True)
    figures: dict[str, Any] = {"runs": runs, "connections": CONNECTIONS}
    targets, table = [], []
    for size in SIZES:
        med = {who: {k: statistics.median(s[k] for s in runs[who][size])
                     for k in ("rps", "alerts_per_s", "p50_us", "p99_us")}
               for who in runs}
        errors = {who: sum(s["non_2xx"] + s["connect_errors"] + s["read_errors"]
                           + s["timeouts"] for s in runs[who][size]) for who in runs}
        rps_ratio = ratio(med["healer"]["rps"], med["bare"]["rps"])
        figures[f"{size}_alerts"] = {"median": med, "errors": errors, "ratio_rps": rps_ratio}
        table += [
            {"figure": f"{size}-alert posts: requests/s", "healer": med["healer"]["rps"],
             "bare": med["bare"]["rps"], "ratio": rps_ratio},
            {"figure": f"{size}-alert posts: alerts/s", "healer": med["healer"]["alerts_per_s"],
             "bare": med["bare"]["alerts_per_s"],
             "ratio": ratio(med["healer"]["alerts_per_s"], med["bare"]["alerts_per_s"])},
            {"figure": f"{size}-alert posts: p50 / p99 latency (ms)",
             "healer": f"{med['healer']['p50_us'] / 1000:.1f} / "
                       f"{med['healer']['p99_us'] / 1000:.1f}",
             "bare": f"{med['bare']['p50_us'] / 1000:.1f} / {med['bare']['p99_us'] / 1000:.1f}",
             "ratio": ratio(med["healer"]["p99_us"], med["bare"]["p99_us"])},
        ]
        targets.append(Target(f"requests/s healer/bare, {size}-alert posts", rps_ratio,
                              ">=", 0.8))
        targets.append(Target(f"failed requests, {size}-alert posts", errors["healer"], "<=", 0))
    return Result(NAME, figures, targets, table,
                  params={"rounds": rounds, "seconds": seconds, "connections": CONNECTIONS,
                          "sizes": list(SIZES)})
