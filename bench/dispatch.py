"""Dispatch latency: from a webhook request's arrival to the handler's ``check`` starting.

healer records both ends itself: the receiver stamps the request's arrival (the
``received_at`` of the heal's ``matched`` event) and the ``bench.noop`` handler stamps the
moment its ``check`` starts (``evidence.check_started_at``); both are wall-clock times of
one process, so their difference is the whole dispatch path: auth, body, parsing, the
durable journal write (its fsync), matching, the safety gates, the phase change, and
handing the heal to the handler. The rule is dry-run, so nothing acts and no heal
waits on verification.

Idle: single-alert posts one after another, a pause between them. Under load: the same
probes, every 50 ms, while another process posts 100 groups of 50 alerts per second
(5,000 alerts/s, none matching a rule; tests/support/scenarios/loadgen.py). The bare
endpoint (bench/bare_app.py, healer's uvicorn settings) takes the same probes, idle and
under the same load, and its request time as the client sees it is the bar: each run
(``--runs``, default 3) measures both sides in turn, and the ratios' spread is over the
runs. Once more, healer alone, while wrk floods it as in the ingest benchmark (16
connections, as fast as it answers): there the probes queue behind the flood, which is
reported but not held to a target.
Targets (issue 18): dispatch p99 <= 1.5x the bare endpoint's request p99 idle, <= 2x
its request p99 under the steady load, in the same run.
"""

from __future__ import annotations

import contextlib
import json
import threading
import time
from collections.abc import Iterator
from typing import Any

import httpx

from bench.common import Context, Result, Target, median, ratio, spread, summary
from bench.noop import noop_config, noop_rule
from bench.procs import ADMIN_TOKEN, TOKEN, bare_endpoint, healer, steady_load, wrk
from tests.support.inprocess.payloads import alert, payload

NAME = "dispatch"
DESCRIPTION = "request arrival -> handler check, idle and under ingest load"
CONFIG = noop_config([noop_rule("dispatch", "BenchDispatch", "{{ labels.fp }}", dry_run=True)])
RATE, SIZE = 100, 50  # the steady load: posts/s, alerts per post


def _probe_body(tag: str, n: int) -> dict[str, Any]:
    fp = f"{tag}p{n}"
    return payload(alert("BenchDispatch", {"fp": fp}, fingerprint=fp), group_key=fp)


def _probe(
    client: httpx.Client,
    tag: str,
    count: int,
    pause: float,
    token: str | None = TOKEN,
) -> tuple[list[str], list[float]]:
    """Post ``count`` single-alert probes, ``pause`` s apart: the heal ids they started
    (healer) and each request's time, as the client sees it, in seconds."""
    heal_ids, seconds = [], []
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    for n in range(count):
        started = time.perf_counter()
        resp = client.post("/api/v1/alerts", json=_probe_body(tag, n), headers=headers)
        seconds.append(time.perf_counter() - started)
        resp.raise_for_status()
        heal_ids += [s["heal_id"] for s in resp.json().get("started", [])]
        time.sleep(pause)
    return heal_ids, seconds


def _latencies(client: httpx.Client, heal_ids: list[str], timeout: float = 60) -> list[float]:
    """Seconds from arrival to check start, per heal (waits until each has checked)."""
    out = []
    deadline = time.monotonic() + timeout
    for heal_id in heal_ids:
        while True:
            heal = client.get(
                f"/api/v1/heals/{heal_id}", headers={"Authorization": f"Bearer {ADMIN_TOKEN}"}
            ).json()
            events = {e["kind"]: e["data"] for e in heal["timeline"]}
            if "check" in events:
                break
            if time.monotonic() > deadline:
                raise TimeoutError(f"heal {heal_id} never reached check: {heal}")
            time.sleep(0.05)
        out.append(
            events["check"]["evidence"]["check_started_at"] - events["matched"]["received_at"]
        )
    return out


def _probes_under(
    client: httpx.Client, seconds: float, load: Any, token: str | None
) -> tuple[list[str], list[float]]:
    """Probe every 50 ms while ``load`` (a context manager) keeps the server busy."""
    with load:
        time.sleep(1)  # let the load reach its pace
        return _probe(client, f"b{time.time_ns()}", int((seconds - 1.5) / 0.05), 0.05, token)


def _one_run(
    ctx: Context, n: int, healer_client: httpx.Client, bare_client: httpx.Client
) -> dict[str, Any]:
    """One run: healer's dispatch and the bare endpoint's request times, idle and under
    the steady load, each side in turn (healer first on even runs)."""
    probes = ctx.pick(300, 30)
    seconds = ctx.pick(20, 4)
    out: dict[str, Any] = {}
    sides = ("healer", "bare") if n % 2 == 0 else ("bare", "healer")
    for phase in ("idle", "steady"):
        for side in sides:
            client = healer_client if side == "healer" else bare_client
            token = TOKEN if side == "healer" else None
            if phase == "idle":
                ids, took = _probe(client, f"{side[0]}i{n}", probes, 0.02, token)
            else:
                summary_path = ctx.workdir / f"steady-{side}-{n}.json"
                ids, took = _probes_under(
                    client,
                    seconds,
                    steady_load(
                        str(client.base_url).rstrip("/"),
                        seconds=seconds,
                        rate=RATE,
                        alerts=SIZE,
                        out=summary_path,
                    ),
                    token,
                )
                load = json.loads(summary_path.read_text())
                out[f"{side}_steady_load"] = {
                    k: load.get(k) for k in ("requests_per_second", "alerts_per_second", "statuses")
                }
            if side == "healer":
                out[f"dispatch_{phase}_ms"] = summary(_latencies(client, ids), scale=1000)
            out[f"{side}_request_{phase}_ms"] = summary(took, scale=1000)
    for phase in ("idle", "steady"):
        out[f"ratio_{phase}"] = ratio(
            out[f"dispatch_{phase}_ms"].get("p99"), out[f"bare_request_{phase}_ms"].get("p99")
        )
    return out


def _saturated(
    ctx: Context, url: str, client: httpx.Client
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Dispatch while wrk floods healer (16 connections, as fast as it answers): reported,
    not held to a target."""
    seconds = ctx.pick(20, 4)
    out: dict[str, Any] = {}
    thread = threading.Thread(
        target=lambda: out.update(
            wrk(
                url,
                seconds=seconds,
                connections=16,
                alerts=SIZE,
                tag=f"ds{time.time_ns()}",
                token=TOKEN,
            )
        )
    )

    @contextlib.contextmanager
    def flood() -> Iterator[None]:
        thread.start()
        try:
            yield
        finally:
            thread.join(seconds + 90)

    ids, _ = _probes_under(client, seconds, flood(), TOKEN)
    return summary(_latencies(client, ids), scale=1000), out


def run(ctx: Context) -> Result:
    runs = ctx.repeats(3)
    with (
        healer(ctx.workdir, CONFIG) as h,
        bare_endpoint(ctx.workdir) as bare,
        httpx.Client(base_url=h.url, timeout=10) as client,
        httpx.Client(base_url=bare.url, timeout=10) as bare_client,
    ):
        _probe(client, "warm", 10, 0.01)  # imports, first connections, first pages
        _probe(bare_client, "warm", 10, 0.01, None)
        per_run = [_one_run(ctx, n, client, bare_client) for n in range(runs)]
        flooded, saturated_load = _saturated(ctx, h.url, client)

    def pooled(key: str) -> dict[str, Any]:
        return {k: median(r[key].get(k) for r in per_run) for k in ("median", "p99")}

    idle, busy = pooled("dispatch_idle_ms"), pooled("dispatch_steady_ms")
    bare_idle, bare_busy = pooled("bare_request_idle_ms"), pooled("bare_request_steady_ms")
    spreads = {phase: spread(r[f"ratio_{phase}"] for r in per_run) for phase in ("idle", "steady")}
    figures = {
        "runs": per_run,
        "median_over_runs_ms": {
            "dispatch_idle": idle,
            "dispatch_steady": busy,
            "bare_request_idle": bare_idle,
            "bare_request_steady": bare_busy,
            "healer_request_idle": pooled("healer_request_idle_ms"),
            "healer_request_steady": pooled("healer_request_steady_ms"),
        },
        "spread_over_runs": spreads,
        "saturating_load_ms": flooded,
        "saturating_load": {
            k: saturated_load.get(k) for k in ("rps", "alerts_per_s", "non_2xx", "p99_us")
        },
    }

    def row(figure: str, h: dict[str, Any], b: dict[str, Any], r: float | None) -> dict[str, Any]:
        return {
            "figure": figure,
            "healer": f"{h.get('median')} / {h.get('p99')}",
            "bare": f"{b.get('median')} / {b.get('p99')}",
            "ratio": r,
        }

    load = f"{RATE} posts/s of {SIZE} alerts"
    table = [
        row(
            "arrival -> check, idle: median / p99 (ms); bare: the bare endpoint's request"
            f" (medians of {runs} runs; ratio of p99s)",
            idle,
            bare_idle,
            spreads["idle"].get("median"),
        ),
        row(
            f"... under {load}; bare: its request at that load",
            busy,
            bare_busy,
            spreads["steady"].get("median"),
        ),
        {
            "figure": f"... under a saturating load ({(saturated_load.get('rps') or 0):.0f}"
            f" posts/s of {SIZE}, wrk, 16 connections): median / p99 (ms)",
            "healer": f"{flooded.get('median')} / {flooded.get('p99')}",
            "bare": "-",
            "ratio": None,
        },
    ]
    targets = [
        Target(
            "dispatch p99 idle / the bare endpoint's request p99 idle",
            spreads["idle"].get("median"),
            "<=",
            1.5,
            spread=spreads["idle"],
        ),
        Target(
            f"dispatch p99 under {load} / the bare endpoint's request p99 at that load",
            spreads["steady"].get("median"),
            "<=",
            2,
            spread=spreads["steady"],
        ),
    ]
    return Result(
        NAME,
        figures,
        targets,
        table,
        runs=runs,
        params={
            "runs": runs,
            "idle_probes": ctx.pick(300, 30),
            "load_seconds": ctx.pick(20, 4),
            "steady_rate": RATE,
            "alerts_per_post": SIZE,
            "probe_interval_under_load": 0.05,
        },
    )
