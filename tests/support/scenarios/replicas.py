"""Several `healer serve` replicas on one PostgreSQL store, on real processes, for the
replica end-to-end tests (tests/e2e/test_replicas.py)::

    with replica_fleet(tmp_path, rules=[...], service=containers.run_service()) as fleet:
        fleet.healers[i]            # replica r<i+1>: `healer serve --replica-id r<i+1>`
        fleet.alertmanagers[i]      # peer i of a 3-node cluster, posting to replica i
        fleet.heals(); fleet.heal(heal_id)       # from any running replica's API
        fleet.sigstop(i); fleet.sigcont(i); fleet.sigkill(i)
        fleet.server.stop(); fleet.server.start()   # PostgreSQL down and back
        fleet.rows("SELECT ...")    # the store itself, read-only

A private PostgreSQL server (tests/support/servers/pgserver.py) holds the journal; every replica
has its own port and the same config (leases: ``lease_ttl`` 2 s, ``renew_every`` 0.5 s);
the ``bench.noop`` handler is on their path. Prometheus alerts every Alertmanager peer and
scrapes the demo service when one is given. On exit, even after a failure, stopped
replicas are continued before everything is stopped, then the server is removed.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import signal
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import asyncpg
import httpx

from bench.procs import ADMIN_TOKEN, TOKEN, healer_env
from tests.support.env import free_port, wait_until
from tests.support.inprocess.healer_api import HealerApi, write_config
from tests.support.inprocess.payloads import alert, iso, payload
from tests.support.scenarios.faults import cluster_args
from tests.support.scenarios.loop import DEMO_RULES
from tests.support.servers.pgserver import PrivatePostgres, private_postgres
from tests.support.servers.processes import (
    AlertmanagerFactory,
    AMInstance,
    HealerFactory,
    HealerProc,
    PrometheusFactory,
    PromInstance,
)
from tests.support.servers.service import DemoService

LEASE = {"lease_ttl": "2s", "renew_every": "0.5s"}
T = TypeVar("T")


@dataclass
class Fleet:
    server: PrivatePostgres
    healers: list[HealerProc]
    alertmanagers: list[AMInstance]
    prometheus: PromInstance
    service: DemoService | None = None
    stopped: set[int] = field(default_factory=set)  # replicas SIGSTOPped, by index

    # -- the replicas' API -------------------------------------------------------------
    def replica_id(self, index: int) -> str:
        return f"r{index + 1}"

    def index(self, replica_id: str) -> int:
        return int(replica_id.removeprefix("r")) - 1

    def _live(self) -> list[HealerProc]:
        return [h for i, h in enumerate(self.healers) if h.running and i not in self.stopped]

    def _any(self, read: Callable[[HealerApi], T]) -> T:
        """``read`` from the first running replica that answers (any one reads the store)."""
        error: Exception | None = None
        for healer in self._live():
            try:
                return read(HealerApi(healer=healer, admin_token=ADMIN_TOKEN))
            except httpx.HTTPError as exc:
                error = exc
        raise error or httpx.ConnectError("no replica running")

    def heals(self, **filters: Any) -> list[dict[str, Any]]:
        return self._any(lambda api: api.heals(**filters))

    def heal(self, heal_id: str) -> dict[str, Any]:
        return self._any(lambda api: api.heal(heal_id))

    def post(self, index: int, alerts: list[dict[str, Any]]) -> httpx.Response:
        """A webhook POST straight to replica ``index``, as Alertmanager sends it."""
        body = payload(*alerts)
        with httpx.Client(timeout=10.0) as client:
            return client.post(
                f"{self.healers[index].url}/api/v1/alerts",
                json=body,
                headers={"Authorization": f"Bearer {TOKEN}"},
            )

    def ready(self, index: int) -> httpx.Response:
        with httpx.Client(timeout=10.0) as client:
            return client.get(f"{self.healers[index].url}/health/ready")

    def wait_done(self, heal_id: str, timeout: float = 90.0) -> dict[str, Any]:
        """The heal, with its timeline, once its phase is ``done`` (bounded)."""
        return wait_until(
            lambda: (h := self.heal(heal_id))["phase"] == "done" and h,
            timeout=timeout,
            interval=0.25,
            what=f"heal {heal_id} done",
            ignore=(httpx.HTTPError,),
        )

    # -- signals -------------------------------------------------------------------------
    def _signal(self, index: int, sig: signal.Signals) -> None:
        pid = self.healers[index].pid
        assert pid is not None and self.healers[index].running
        os.kill(pid, sig)

    def sigkill(self, index: int) -> None:
        """kill -9: the replica dies with its leases held."""
        self.sigcont(index)
        self.healers[index].kill()

    def sigstop(self, index: int) -> None:
        """Freeze the replica (a long GC pause, a frozen VM): it renews nothing."""
        self._signal(index, signal.SIGSTOP)
        self.stopped.add(index)

    def sigcont(self, index: int) -> None:
        if index in self.stopped:
            self._signal(index, signal.SIGCONT)
            self.stopped.discard(index)

    # -- the store ----------------------------------------------------------------------
    def rows(self, sql: str, *args: Any) -> list[dict[str, Any]]:
        """``sql`` on the store in a read-only transaction."""

        async def run() -> list[dict[str, Any]]:
            conn = await asyncpg.connect(
                self.server.dsn, timeout=10, server_settings={"default_transaction_read_only": "on"}
            )
            try:
                return [dict(r) for r in await conn.fetch(sql, *args)]
            finally:
                await conn.close()

        return asyncio.run(run())


def noop_alert(alertname: str, instance: str, starts_at: float) -> dict[str, Any]:
    """One firing alert as Alertmanager's webhook carries it (its fingerprint derived
    from alertname and instance, hex as Alertmanager's)."""
    return alert(
        alertname,
        {"instance": instance},
        starts_at=iso(starts_at),
        fingerprint=hashlib.sha256(f"{alertname}\0{instance}".encode()).hexdigest()[:16],
    )


@contextlib.contextmanager
def replica_fleet(
    workdir: Path,
    *,
    rules: list[dict[str, Any]],
    replicas: int = 3,
    service: DemoService | None = None,
    stable_for: str = "2s",
    timeout: str = "60s",
    overrides: dict[str, Any] | None = None,
    env: dict[str, str] | None = None,
) -> Iterator[Fleet]:
    """``replicas`` healers on one private PostgreSQL, an Alertmanager cluster of as many
    peers (peer i posts to replica i), a Prometheus alerting every peer (and, given a
    ``service``, scraping it with the demo rules). Everything is removed on exit."""
    prometheus = PrometheusFactory(workdir / "prom")
    alertmanager = AlertmanagerFactory(workdir / "am")
    healer = HealerFactory(workdir / "healers")
    fleet: Fleet | None = None
    with private_postgres(max_connections=100) as server:
        try:
            ports = [free_port() for _ in range(replicas)]
            ams = [
                alertmanager.start(
                    f"http://127.0.0.1:{port}/api/v1/alerts", bearer_token=TOKEN, extra_args=args
                )
                for port, args in zip(ports, cluster_args(replicas), strict=True)
            ]
            if service is not None:
                prom = prometheus.start(
                    [service.target],
                    rule_files=[DEMO_RULES],
                    alertmanager_url=[am.url for am in ams],
                    target_labels={"container": service.name},
                )
            else:
                prom = prometheus.start([], alertmanager_url=[am.url for am in ams])
            allow: list[dict[str, Any]] = [{"kind": "bench"}]
            if service is not None:
                allow.append({"kind": "docker", "name": service.name})
            config: dict[str, Any] = {
                "journal": server.dsn,
                "prometheus": {"url": prom.url},
                "verify": {"stable_for": stable_for, "timeout": timeout},
                "allow": allow,
                "replica": LEASE,
                "shutdown_grace": "1s",
                "rules": rules,
                **(overrides or {}),
            }
            config_path = write_config(workdir, config)
            full_env = {**healer_env(workdir), **(env or {})}
            healers = [
                healer.start(
                    config_path, port=port, env=full_env, args=["--replica-id", f"r{i + 1}"]
                )
                for i, port in enumerate(ports)
            ]
            fleet = Fleet(
                server=server, healers=healers, alertmanagers=ams, prometheus=prom, service=service
            )
            if service is not None:
                prom.wait_for_targets_up()
            yield fleet
        finally:
            if fleet is not None:
                for index in list(fleet.stopped):
                    fleet.sigcont(index)
            healer.stop_all()
            alertmanager.stop_all()
            prometheus.stop_all()
