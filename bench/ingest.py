"""Ingest: healer's webhook with its real journal against a bare FastAPI endpoint.

Three servers run at once on loopback (each its own process, same uvicorn settings):
healer, the bare endpoint, and the durable floor (the bare endpoint plus a
group-committed, fsynced append of each body: the least any receiver that answers only
once the alerts are on disk must do; bench/bare_app.py). wrk, in another process, posts
Alertmanager-shaped groups (1 and 50 alerts, every alert its own fingerprint, none
matching a rule) at each in turn, the order reversed every other round, for ``ROUNDS``
rounds of ``seconds`` each (``--runs``: rounds, default 5). Medians over rounds; each
ratio's spread (min / median / max) is over the rounds, each round a run, and a target's
value is the median of its ratio over the rounds.

Targets (issue 18), against the durable floor of the same round: requests/s healer /
floor >= 0.85 for 1-alert posts, alerts/s healer / floor >= 0.8 for 50-alert posts, p99
latency healer / floor <= 1.2 for both. Reported beside them: healer / bare and durable
floor / bare (what durability alone costs on this machine).
"""

from __future__ import annotations

import statistics
from typing import Any

from bench.common import Context, Result, Target, ratio, spread
from bench.procs import TOKEN, bare_endpoint, healer, wrk

NAME = "ingest"
DESCRIPTION = "webhook posts/s with the journal on, against a bare FastAPI endpoint"
SIZES = (1, 50)
SERVERS = ("healer", "bare", "floor")
CONNECTIONS = 16


def run(ctx: Context) -> Result:
    rounds = ctx.repeats(5)
    seconds = ctx.pick(5, 1)
    runs: dict[str, dict[int, list[dict[str, Any]]]] = {
        who: {n: [] for n in SIZES} for who in SERVERS
    }
    with (
        healer(ctx.workdir, {"rules": []}) as h,
        bare_endpoint(ctx.workdir) as bare,
        bare_endpoint(ctx.workdir, durable=True) as floor,
    ):
        servers = {"healer": (h.url, TOKEN), "bare": (bare.url, None), "floor": (floor.url, None)}
        for r in range(rounds):
            for size in SIZES:
                order = SERVERS if r % 2 == 0 else SERVERS[::-1]
                for who in order:
                    url, token = servers[who]
                    stats = wrk(
                        url,
                        seconds=seconds,
                        connections=CONNECTIONS,
                        alerts=size,
                        tag=f"{who[0]}{r}s{size}",
                        token=token,
                    )
                    runs[who][size].append(stats)
                    print(
                        f"    round {r + 1}/{rounds} {who:6} {size:2} alerts/post: "
                        f"{stats['rps']:7.0f} req/s, p99 {stats['p99_us'] / 1000:.1f} ms, "
                        f"non-2xx {stats['non_2xx']}",
                        flush=True,
                    )
    figures: dict[str, Any] = {"runs": runs, "connections": CONNECTIONS}
    targets, table = [], []
    for size in SIZES:
        med = {
            who: {
                k: statistics.median(s[k] for s in runs[who][size])
                for k in ("rps", "alerts_per_s", "p50_us", "p99_us")
            }
            for who in runs
        }
        errors = {
            who: sum(
                s["non_2xx"] + s["connect_errors"] + s["read_errors"] + s["timeouts"]
                for s in runs[who][size]
            )
            for who in runs
        }
        rps_ratio = ratio(med["healer"]["rps"], med["bare"]["rps"])
        floor_ratio = ratio(med["floor"]["rps"], med["bare"]["rps"])
        over_floor = ratio(med["healer"]["rps"], med["floor"]["rps"])
        p99_over_floor = ratio(med["healer"]["p99_us"], med["floor"]["p99_us"])

        def per_round(key: str, a: str, b: str, size: int = size) -> dict[str, Any]:
            return spread(
                ratio(x[key], y[key]) for x, y in zip(runs[a][size], runs[b][size], strict=True)
            )

        spreads = {
            "rps_healer_to_bare": per_round("rps", "healer", "bare"),
            "rps_floor_to_bare": per_round("rps", "floor", "bare"),
            "rps_healer_to_floor": per_round("rps", "healer", "floor"),
            "p99_healer_to_floor": per_round("p99_us", "healer", "floor"),
        }
        figures[f"{size}_alerts"] = {
            "median": med,
            "errors": errors,
            "ratio_rps": rps_ratio,
            "ratio_rps_floor_to_bare": floor_ratio,
            "ratio_rps_healer_to_floor": over_floor,
            "ratio_p99_healer_to_floor": p99_over_floor,
            "spread_over_rounds": spreads,
        }
        table += [
            {
                "figure": f"{size}-alert posts: requests/s",
                "healer": med["healer"]["rps"],
                "bare": med["bare"]["rps"],
                "ratio": rps_ratio,
            },
            {
                "figure": f"{size}-alert posts: alerts/s",
                "healer": med["healer"]["alerts_per_s"],
                "bare": med["bare"]["alerts_per_s"],
                "ratio": ratio(med["healer"]["alerts_per_s"], med["bare"]["alerts_per_s"]),
            },
            {
                "figure": f"{size}-alert posts: p50 / p99 latency (ms)",
                "healer": f"{med['healer']['p50_us'] / 1000:.1f} / "
                f"{med['healer']['p99_us'] / 1000:.1f}",
                "bare": f"{med['bare']['p50_us'] / 1000:.1f} / {med['bare']['p99_us'] / 1000:.1f}",
                "ratio": ratio(med["healer"]["p99_us"], med["bare"]["p99_us"]),
            },
            {
                "figure": f"{size}-alert posts: requests/s against the durable floor (bare +"
                f" fsynced append; floor/bare {floor_ratio})",
                "healer": med["healer"]["rps"],
                "bare": med["floor"]["rps"],
                "ratio": over_floor,
            },
            {
                "figure": f"{size}-alert posts: p99 latency (ms) against the durable floor",
                "healer": med["healer"]["p99_us"] / 1000,
                "bare": med["floor"]["p99_us"] / 1000,
                "ratio": p99_over_floor,
            },
        ]
        # alerts/s and requests/s ratios are one ratio: every post carries ``size`` alerts.
        # A target's value: the median of the ratio over the rounds (each round a run).
        what = "requests/s" if size == 1 else "alerts/s"
        targets += [
            Target(
                f"{what} healer / durable floor, {size}-alert posts",
                spreads["rps_healer_to_floor"].get("median"),
                ">=",
                0.85 if size == 1 else 0.8,
                spread=spreads["rps_healer_to_floor"],
            ),
            Target(
                f"p99 latency healer / durable floor, {size}-alert posts",
                spreads["p99_healer_to_floor"].get("median"),
                "<=",
                1.2,
                spread=spreads["p99_healer_to_floor"],
            ),
            Target(f"failed requests, {size}-alert posts", errors["healer"], "<=", 0),
        ]
    return Result(
        NAME,
        figures,
        targets,
        table,
        runs=rounds,
        params={
            "rounds": rounds,
            "seconds": seconds,
            "connections": CONNECTIONS,
            "sizes": list(SIZES),
        },
    )
