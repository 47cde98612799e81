"""Real exporters on 127.0.0.1 for tests: what Prometheus scrapes in an Odoo stack.

    pg = postgres_exporter.start(db_dsn, queries=REPO / "alerts/postgres_exporter/queries.yml")
    bb = blackbox_exporter.start()                     # module http_2xx
    cadv = cadvisor.start(labels={"com.docker.compose.project": project})
    prom = prometheus.start([], scrape_configs=[pg.scrape_config("postgres"),
                                                cadv.scrape_config("cadvisor"),
                                                bb.probe_config("odoo-longpoll", [url])])

``PostgresExporterFactory`` runs Debian's ``prometheus-postgres-exporter``,
``BlackboxExporterFactory`` Debian's ``prometheus-blackbox-exporter``, and
``CadvisorFactory`` the cAdvisor stand-in (``cadvisor_standin.py``: cAdvisor
needs a registry we cannot reach). Each factory stops what it started at
teardown (see tests/conftest.py).
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import yaml

from tests.support.env import require_service
from tests.support.servers.processes import ManagedProcess, _Factory, find_binary

POSTGRES_EXPORTER_BIN = Path("/usr/bin/prometheus-postgres-exporter")
BLACKBOX_EXPORTER_BIN = Path("/usr/bin/prometheus-blackbox-exporter")
CADVISOR_STANDIN = Path(__file__).with_name("cadvisor_standin.py")


class ExporterProc(ManagedProcess):
    def scrape_config(
        self, job: str, labels: Mapping[str, str] | None = None, interval: str = "1s"
    ) -> dict[str, Any]:
        """A Prometheus scrape job for this exporter's ``/metrics``."""
        return {
            "job_name": job,
            "scrape_interval": interval,
            "scrape_timeout": interval,
            "static_configs": [{"targets": [self.address], "labels": dict(labels or {})}],
        }


class PostgresExporterProc(ExporterProc):
    dsn: str
    queries: Path | None


class BlackboxProc(ExporterProc):
    config_path: Path

    def probe_config(
        self,
        job: str,
        targets: Sequence[str],
        *,
        module: str = "http_2xx",
        labels: Mapping[str, str] | None = None,
        interval: str = "1s",
    ) -> dict[str, Any]:
        """The usual blackbox scrape job: each target becomes ``?target=`` and ``instance``.

        Prometheus sends its scrape timeout (``interval``) and the exporter gives the
        probe that minus ``--timeout-offset`` (0.5 s), so at 1 s a probe of an endpoint
        that hangs fails after ~0.5 s with ``probe_success 0``.
        """
        return {
            "job_name": job,
            "metrics_path": "/probe",
            "params": {"module": [module]},
            "scrape_interval": interval,
            "scrape_timeout": interval,
            "static_configs": [{"targets": list(targets), "labels": dict(labels or {})}],
            "relabel_configs": [
                {"source_labels": ["__address__"], "target_label": "__param_target"},
                {"source_labels": ["__param_target"], "target_label": "instance"},
                {"target_label": "__address__", "replacement": self.address},
            ],
        }


def no_ssl(dsn: str) -> str:
    """``dsn`` with ``sslmode=disable`` (lib/pq, inside the exporter, defaults to require)."""
    parts = urlsplit(dsn)
    if "sslmode=" in parts.query:
        return dsn
    query = f"{parts.query}&sslmode=disable" if parts.query else "sslmode=disable"
    return urlunsplit(parts._replace(query=query))


class PostgresExporterFactory(_Factory):
    kind = "postgres-exporter"

    def start(
        self, dsn: str, *, queries: Path | None = None, extra_args: Sequence[str] = ()
    ) -> PostgresExporterProc:
        """Run ``prometheus-postgres-exporter`` on 127.0.0.1:<free> against ``dsn``.

        ``queries`` is a custom-queries file (``--extend.query-path``: deprecated
        upstream in favour of the sql_exporter, still honoured by 0.11). Custom
        queries run in the DSN's database only, so point ``dsn`` at the database
        the queries read (Odoo's, for ``ir_cron``).
        """
        binary = find_binary(
            POSTGRES_EXPORTER_BIN, "prometheus-postgres-exporter", "postgres_exporter"
        )
        if binary is None:
            require_service(
                "postgres_exporter",
                f"{POSTGRES_EXPORTER_BIN} not found (apt-get install prometheus-postgres-exporter)",
            )
        workdir = self._workdir()
        env = {**os.environ, "DATA_SOURCE_NAME": no_ssl(dsn)}

        def argv(port: int) -> list[str]:
            args = [str(binary), f"--web.listen-address=127.0.0.1:{port}"]
            if queries is not None:
                args.append(f"--extend.query-path={Path(queries).resolve()}")
            return [*args, *extra_args]

        instance = PostgresExporterProc(
            "postgres_exporter", argv, workdir=workdir, ready_path="/", env=env
        )
        instance.dsn = dsn
        instance.queries = queries
        return self._launch(instance, 30.0)

    __call__ = start


class BlackboxExporterFactory(_Factory):
    kind = "blackbox-exporter"

    def start(self, modules: Mapping[str, Any] | None = None) -> BlackboxProc:
        """Run ``prometheus-blackbox-exporter`` on 127.0.0.1:<free>.

        ``modules`` defaults to ``http_2xx``: GET over IPv4, any 2xx is success.
        """
        binary = find_binary(
            BLACKBOX_EXPORTER_BIN, "prometheus-blackbox-exporter", "blackbox_exporter"
        )
        if binary is None:
            require_service(
                "blackbox_exporter",
                f"{BLACKBOX_EXPORTER_BIN} not found (apt-get install prometheus-blackbox-exporter)",
            )
        workdir = self._workdir()
        config = {
            "modules": dict(
                modules
                or {
                    "http_2xx": {
                        "prober": "http",
                        "timeout": "5s",
                        "http": {"preferred_ip_protocol": "ip4"},
                    }
                }
            )
        }
        config_path = workdir / "blackbox.yml"
        config_path.write_text(yaml.safe_dump(config, sort_keys=False))

        def argv(port: int) -> list[str]:
            return [
                str(binary),
                f"--config.file={config_path}",
                f"--web.listen-address=127.0.0.1:{port}",
            ]

        instance = BlackboxProc("blackbox_exporter", argv, workdir=workdir, ready_path="/-/healthy")
        instance.config_path = config_path
        return self._launch(instance, 30.0)

    __call__ = start


class CadvisorFactory(_Factory):
    kind = "cadvisor"

    def start(self, labels: Mapping[str, str]) -> ExporterProc:
        """Run the cAdvisor stand-in for containers carrying all of ``labels``."""
        workdir = self._workdir()
        selectors = [arg for key, value in labels.items() for arg in ("--label", f"{key}={value}")]

        def argv(port: int) -> list[str]:
            return [
                sys.executable,
                str(CADVISOR_STANDIN),
                f"--listen=127.0.0.1:{port}",
                "--max-lifetime=1800",
                *selectors,
            ]

        instance = ExporterProc(
            "cadvisor",
            argv,
            workdir=workdir,
            ready_path="/metrics",
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
        return self._launch(instance, 30.0)

    __call__ = start
