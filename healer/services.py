"""Everything one running healer owns, built by the app factory and reached by
routes through ``request.app.state.services``. There is no other shared state."""

from __future__ import annotations

from dataclasses import dataclass

import httpx
from fastapi import Request

from healer.config import HealerConfig, Secrets
from healer.console.session import ConsoleSessions
from healer.docker_engines import DockerEngines
from healer.executor import Executor
from healer.followup import FollowUps
from healer.gates import SafetyGates
from healer.metrics import Metrics
from healer.notices import HealNotices
from healer.plugins import HandlerRegistry
from healer.postgres_adapter import PostgresAdapter
from healer.rules import RuleSet
from healer.store import Store


@dataclass(frozen=True, slots=True)
class Services:
    config: HealerConfig
    secrets: Secrets
    handlers: HandlerRegistry
    rules: RuleSet
    metrics: Metrics
    journal: Store
    http: httpx.AsyncClient
    docker: DockerEngines  # engine name -> adapter
    postgres: PostgresAdapter
    executor: Executor
    gates: SafetyGates
    followups: FollowUps
    notices: HealNotices
    sessions: ConsoleSessions  # the web console's logins


def services(request: Request) -> Services:
    svc: Services = request.app.state.services
    return svc
