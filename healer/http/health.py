"""Liveness, readiness and the metrics exposition."""

from __future__ import annotations

import asyncio
from typing import Any

from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from healer.docker_config import DEFAULT_ENGINE
from healer.redact import redact_dsn
from healer.services import Services, services

router = APIRouter(tags=["health"])

_PROBE_TIMEOUT = 3.0


@router.get("/health")
async def health() -> dict[str, str]:
    """Liveness: the process answers."""
    return {"status": "ok"}


async def _probe(name: str, coro: Any) -> tuple[str, dict[str, str]]:
    try:
        await asyncio.wait_for(coro, _PROBE_TIMEOUT)
    except Exception as exc:
        error = redact_dsn(f"{type(exc).__name__}: {exc}")
        return name, {"status": "down", "error": error[:300]}
    return name, {"status": "up"}


async def _prometheus_ready(svc: Services) -> None:
    resp = await svc.http.get(
        f"{svc.config.prometheus.url.rstrip('/')}/-/ready", timeout=_PROBE_TIMEOUT
    )
    resp.raise_for_status()


def _needs(svc: Services) -> set[str]:
    needed: set[str] = set()
    for rule in svc.config.rules:
        handler = svc.handlers.get(rule.handler)
        if handler is not None:
            needed |= handler.requires
    return needed


def _engine_check(name: str) -> str:
    """``docker`` for the engine ``default`` (as before engines were named), else
    ``docker:<engine>``."""
    return "docker" if name == DEFAULT_ENGINE else f"docker:{name}"


@router.get("/health/ready", responses={503: {"description": "a dependency is down"}})
async def ready(request: Request) -> JSONResponse:
    """Readiness: 200 when the journal, Prometheus and every dependency the rules' handlers
    need (PostgreSQL databases, and at least one Docker engine) answer; 503 otherwise.
    Each one's state is named: every Docker engine (``docker`` is the engine ``default``,
    ``docker:<engine>`` the others), down ones included."""
    svc = services(request)
    probes = [_probe("journal", svc.journal.ping()), _probe("prometheus", _prometheus_ready(svc))]
    if "docker" in _needs(svc):
        probes += [_probe(_engine_check(name), a.ping()) for name, a in svc.docker.items()]
    if "postgres" in _needs(svc):
        probes += [_probe(f"postgres:{db}", svc.postgres.ping(db)) for db in svc.postgres.names]
    checks = dict(await asyncio.gather(*probes))
    engines = [c["status"] for name, c in checks.items() if name.split(":")[0] == "docker"]
    # One engine down fails only its own heals: healer is ready while any engine answers
    # (with a single engine, that one), and names the ones that do not.
    ok = all(
        c["status"] == "up" for name, c in checks.items() if name.split(":")[0] != "docker"
    ) and (not engines or "up" in engines)
    return JSONResponse(
        {
            "status": "ready" if ok else "not ready",
            "checks": checks,
            "replica": svc.config.replica.replica().id,
        },
        status_code=200 if ok else 503,
    )


@router.get("/metrics", include_in_schema=False)
async def metrics(request: Request) -> Response:
    return Response(
        generate_latest(services(request).metrics.registry), media_type=CONTENT_TYPE_LATEST
    )
