"""The app factory: the one place that builds, owns and closes every client.

Usage::

    app = create_app(config, secrets)                       # handlers from entry points
    uvicorn.run(app, host=config.host, port=config.port)

    # tests: extra handlers, a fresh metrics registry
    app = create_app(config, secrets, handlers=HandlerRegistry.from_entry_points(("t.noop", Noop)))
    async with app.router.lifespan_context(app): ...
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import httpx
import structlog
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from prometheus_client import CollectorRegistry

import healer
from healer.config import HealerConfig, Secrets
from healer.console import routes as console
from healer.console.session import ConsoleSessions
from healer.docker_engines import DockerEngines
from healer.errors import ConfigError, JournalUnavailable
from healer.executor import Executor
from healer.followup import FollowUps
from healer.gates import SafetyGates
from healer.http import approvals, controls, heals, health, integrations, receiver
from healer.http.validation import validation_error
from healer.metrics import Metrics
from healer.notices import HealNotices
from healer.notify import Notifiers
from healer.outcomes import Outcome
from healer.plugins import HandlerRegistry
from healer.postgres_adapter import PostgresAdapter
from healer.retention import Pruner
from healer.rules import RuleSet
from healer.services import Services
from healer.store.factory import describe, journal_target, open_store
from healer.targets import Allowlist
from healer.verify import Verifier


def create_app(
    config: HealerConfig,
    secrets: Secrets,
    *,
    handlers: HandlerRegistry | None = None,
    registry: CollectorRegistry | None = None,
) -> FastAPI:
    """Build the ASGI app. Plugins are loaded and validated here, before serving."""
    handlers = handlers if handlers is not None else HandlerRegistry.from_entry_points()
    metrics = Metrics(registry if registry is not None else CollectorRegistry())
    metrics.start_series(((r.name, r.handler) for r in config.rules), (str(o) for o in Outcome))
    log = structlog.get_logger("healer")
    if len(secrets.notify_urls) != len(config.notify):
        raise ConfigError(
            [
                (
                    "notify",
                    f"{len(config.notify)} notifiers configured but "
                    f"{len(secrets.notify_urls)} URLs resolved",
                )
            ]
        )

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        target = journal_target(config, secrets)
        journal = await open_store(target, config.replica.replica())
        http = httpx.AsyncClient(headers={"User-Agent": f"healer/{healer.__version__}"})
        docker = DockerEngines.from_config(config.docker)
        for warning in config.docker.plain_tcp_warnings():
            log.warning("plain tcp to a docker engine", problem=warning)
        postgres = PostgresAdapter(config.databases, secrets.databases)
        verifier = Verifier(
            http,
            config.prometheus.url,
            timeout=config.prometheus.timeout,
            evaluation_interval=config.prometheus.evaluation_interval,
        )
        notifiers = Notifiers.from_config(config.notify, secrets.notify_urls, http)
        notifiers.open()
        gates = SafetyGates(journal=journal, config=config, notifiers=notifiers, metrics=metrics)
        rules = RuleSet(config)
        followups = FollowUps(
            journal=journal, config=config, rules=rules, notifiers=notifiers, metrics=metrics
        )
        notices = HealNotices(config, notifiers, journal=journal, metrics=metrics)
        executor = Executor(
            journal=journal,
            handlers=handlers,
            metrics=metrics,
            verifier=verifier,
            docker=docker,
            postgres=postgres,
            allowlist=Allowlist(config.allow),
            max_concurrent=config.max_concurrent_heals,
            gates=gates,
            on_not_recovered=followups.note_not_recovered,
            renew_every=config.replica.renew_every,
            notices=notices,
        )
        pruner = Pruner(journal, config.retention, metrics)
        app.state.services = Services(
            config=config,
            secrets=secrets,
            handlers=handlers,
            rules=rules,
            metrics=metrics,
            journal=journal,
            http=http,
            docker=docker,
            postgres=postgres,
            executor=executor,
            gates=gates,
            followups=followups,
            notices=notices,
            sessions=ConsoleSessions(config.console.session_ttl),
        )
        try:
            await gates.start()
            await followups.start(submit=executor.submit)
            resumed = await executor.resume()
            executor.start_leases()
            await pruner.start()
            log.info(
                "healer started",
                listen=config.listen,
                journal=describe(target),
                replica=journal.replica.id,
                rules=len(config.rules),
                handlers=list(handlers),
                resumed=resumed,
                dry_run=config.dry_run,
                docker_engines=list(docker),
            )
            yield
        finally:
            log.info("healer stopping", running_heals=executor.running)
            await pruner.stop()
            await gates.stop()  # min_firing waits end at once; those heals stay pending
            await followups.stop()
            await executor.close(config.shutdown_grace)
            await notices.aclose()  # what heals told is delivered (bounded) before closing
            notifiers.close()
            await http.aclose()
            await docker.aclose()
            await postgres.aclose()
            await journal.close()

    app = FastAPI(
        title="healer",
        version=healer.__version__,
        lifespan=lifespan,
        description="Auto-healing for services monitored by Prometheus.",
    )
    app.add_exception_handler(JournalUnavailable, _journal_unavailable)
    app.add_exception_handler(RequestValidationError, validation_error)
    receiver.mount(app)
    app.include_router(heals.router)
    app.include_router(approvals.router)
    app.include_router(controls.router)
    app.include_router(health.router)
    app.include_router(integrations.router)
    app.include_router(console.router)
    return app


async def _journal_unavailable(request: Request, exc: Exception) -> JSONResponse:
    """Any endpoint whose journal read or write fails (corrupt, deleted, disk full)
    answers 503 with the reason, never a 500."""
    return JSONResponse({"error": f"journal unavailable: {exc}"[:500]}, status_code=503)
