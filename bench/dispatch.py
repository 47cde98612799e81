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
(5,000 alerts/s, none matching a rule; tests/support/scenarios/loadgen.py), and once more while wrk
floods healer as in the ingest benchmark (16 connections, as fast as it answers): there
the probes queue behind the flood, which is reported but not held to the target.
Targets: p99 <= 5 ms idle, <= 50 ms under the steady load.
"""

from __future__ import annotations

import contextlib
import json
import threading
import time
from collections.abc import Iterator
from typing import Any

import httpx

from bench.common import Context, Result, Target, summary
from bench.noop import noop_config, noop_rule
from bench.procs import ADMIN_TOKEN, TOKEN, healer, steady_load, wrk
from tests.support.inprocess.payloads import alert, payload

NAME = "dispatch"
DESCRIPTION = "request arrival -> handler check, idle and under ingest load"
CONFIG = noop_config([noop_rule("dispatch", "BenchDispatch", "{{ labels.fp }}", dry_run=True)])


def _probe_body(tag: str, n: int) -> dict[str, Any]:
    fp = f"{tag}p{n}"
    return payload(alert("BenchDispatch", {"fp": fp}, fingerprint=fp), group_key=fp)


def _probe(
    client: httpx.Client, tag: str, count: int, pause: float, stop: threading.Event | None = None
) -> list[str]:
    """Post ``count`` single-alert probes, ``pause`` s apart; their heal ids."""
    heal_ids = []
    for n in range(count):
        if stop is not None and stop.is_set():
            break
        resp = client.post(
            "/api/v1/alerts", json=_probe_body(tag, n), headers={"Authorization": f"Bearer {TOKEN}"}
        )
        resp.raise_for_status()
        heal_ids += [s["heal_id"] for s in resp.json()["started"]]
        time.sleep(pause)
    return heal_ids


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


def _under_load(
    client: httpx.Client, seconds: float, start_load: Any
) -> tuple[list[float], dict[str, Any]]:
    """Probe every 50 ms while ``start_load()`` (a context manager yielding a
    summary dict, filled once the load has ended) keeps healer busy."""
    with start_load() as load:
        time.sleep(1)  # let the load reach its pace
        ids = _probe(client, f"b{time.time_ns()}", int((seconds - 1.5) / 0.05), 0.05)
    return _latencies(client, ids), load


def run(ctx: Context) -> Result:
    probes = ctx.pick(300, 30)
    seconds = ctx.pick(20, 4)
    rate, size = 100, 50
    with healer(ctx.workdir, CONFIG) as h, httpx.Client(base_url=h.url, timeout=10) as client:
        _probe(client, "warm", 10, 0.01)  # imports, first connections, first pages
        idle = summary(_latencies(client, _probe(client, "idle", probes, 0.02)), scale=1000)

        @contextlib.contextmanager
        def steady() -> Iterator[dict[str, Any]]:
            out: dict[str, Any] = {}
            path = ctx.workdir / "steady.json"
            with steady_load(h.url, seconds=seconds, rate=rate, alerts=size, out=path):
                yield out
            out.update(json.loads(path.read_text()))

        @contextlib.contextmanager
        def saturating() -> Iterator[dict[str, Any]]:
            out: dict[str, Any] = {}
            thread = threading.Thread(
                target=lambda: out.update(
                    wrk(
                        h.url,
                        seconds=seconds,
                        connections=16,
                        alerts=size,
                        tag=f"ds{time.time_ns()}",
                        token=TOKEN,
                    )
                )
            )
            thread.start()
            try:
                yield out
            finally:
                thread.join(seconds + 90)

        steady_ms, steady_load_figures = _under_load(client, seconds, steady)
        saturated_ms, saturated_load = _under_load(client, seconds, saturating)
    busy = summary(steady_ms, scale=1000)
    flooded = summary(saturated_ms, scale=1000)
    figures = {
        "idle_ms": idle,
        "steady_load_ms": busy,
        "saturating_load_ms": flooded,
        "steady_load": {
            k: steady_load_figures.get(k)
            for k in ("requests_per_second", "alerts_per_second", "statuses", "latency_p99_ms")
        },
        "saturating_load": {
            k: saturated_load.get(k) for k in ("rps", "alerts_per_s", "non_2xx", "p99_us")
        },
    }

    def row(figure: str, s: dict[str, Any], target: float) -> dict[str, Any]:
        return {
            "figure": figure,
            "healer": f"{s.get('median')} / {s.get('p99')}",
            "bare": f"target p99 {target:g}",
            "ratio": None if s.get("p99") is None else round(s["p99"] / target, 3),
        }

    table = [
        row("arrival -> check, idle: median / p99 (ms)", idle, 5),
        row(f"... under {rate} posts/s of {size} alerts: median / p99 (ms)", busy, 50),
        row(
            f"... under a saturating load ({(saturated_load.get('rps') or 0):.0f} posts/s "
            f"of {size}, wrk, 16 connections): median / p99 (ms)",
            flooded,
            50,
        ),
    ]
    targets = [
        Target("dispatch p99 idle", idle.get("p99"), "<=", 5, " ms"),
        Target(f"dispatch p99 under {rate * size:,} alerts/s", busy.get("p99"), "<=", 50, " ms"),
    ]
    return Result(
        NAME,
        figures,
        targets,
        table,
        params={
            "idle_probes": probes,
            "load_seconds": seconds,
            "steady_rate": rate,
            "alerts_per_post": size,
            "probe_interval_under_load": 0.05,
        },
    )
