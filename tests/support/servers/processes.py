"""Real Prometheus, Alertmanager and healer processes on 127.0.0.1 for tests."""

from __future__ import annotations

import os
import resource
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlsplit

import httpx
import yaml

from tests.support.env import free_port, require_service, stop_process, wait_until

PROMETHEUS_BIN = Path("/usr/bin/prometheus")
ALERTMANAGER_BIN = Path("/usr/bin/prometheus-alertmanager")

_PORT_IN_USE = ("address already in use", "bind: address already in use")
_START_ATTEMPTS = 3


class ProcessStartError(RuntimeError):
    pass


def find_binary(preferred: Path, *names: str) -> Path | None:
    """``preferred`` if executable, else the first of ``names`` on PATH."""
    if preferred.is_file() and os.access(preferred, os.X_OK):
        return preferred
    for name in names:
        found = shutil.which(name)
        if found:
            return Path(found)
    return None


class ManagedProcess:
    """A child process listening on 127.0.0.1:<port>, logging to a file.

    ``start()`` retries on a fresh port if the one picked by ``free_port()`` was
    taken in the meantime, and waits (bounded) until ``ready_path`` answers 200.
    """

    def __init__(
        self,
        name: str,
        argv_for_port: Callable[[int], list[str]],
        *,
        workdir: Path,
        ready_path: str,
        env: Mapping[str, str] | None = None,
        port: int | None = None,
        open_files: tuple[int, int] | None = None,
    ) -> None:
        self.name = name
        self._open_files = open_files
        self._fixed_port = port
        self.workdir = workdir
        self.log_path = workdir / f"{name}.log"
        self.ready_path = ready_path
        self.port = 0
        self.argv: list[str] = []
        self._argv_for_port = argv_for_port
        self._env = dict(env) if env is not None else None
        self._proc: subprocess.Popen[bytes] | None = None
        self.startup_seconds: float | None = None

    # -- lifecycle -----------------------------------------------------------
    def start(self, ready_timeout: float = 30.0) -> None:
        began = time.monotonic()
        for attempt in range(1, _START_ATTEMPTS + 1):
            self.port = self._fixed_port or free_port()
            self.argv = self._argv_for_port(self.port)
            self._spawn()
            try:
                self._wait_ready(ready_timeout)
            except ProcessStartError:
                retry = attempt < _START_ATTEMPTS and any(
                    marker in self.log_tail(20).lower() for marker in _PORT_IN_USE
                )
                self.kill()
                if retry:
                    continue
                raise
            self.startup_seconds = time.monotonic() - began
            return

    def restart(self, ready_timeout: float = 30.0) -> None:
        """Start again after :meth:`stop` or :meth:`kill`: same argv, port and environment
        (a peer such as Alertmanager keeps posting to the same address)."""
        if self.running:
            raise RuntimeError(f"{self.name} is still running")
        began = time.monotonic()
        self._spawn()
        try:
            self._wait_ready(ready_timeout)
        except ProcessStartError:
            self.kill()
            raise
        self.startup_seconds = time.monotonic() - began

    def _spawn(self) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("ab") as log:
            log.write(f"=== {' '.join(self.argv)}\n".encode())
            log.flush()
            self._proc = subprocess.Popen(
                self.argv,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=self.workdir,
                env=self._env,
                preexec_fn=self._limit_open_files if self._open_files else None,
            )

    def _limit_open_files(self) -> None:
        """In the child before exec: its RLIMIT_NOFILE (soft, hard), as a host would set it."""
        assert self._open_files is not None
        resource.setrlimit(resource.RLIMIT_NOFILE, self._open_files)

    def _wait_ready(self, timeout: float) -> None:
        proc = self._proc
        assert proc is not None
        deadline = time.monotonic() + timeout
        interval = 0.1
        last: object = None
        with httpx.Client(timeout=2.0) as client:
            for _ in range(int(timeout / interval) + 2):
                if proc.poll() is not None:
                    raise ProcessStartError(
                        f"{self.name} exited with {proc.returncode} during start-up; "
                        f"log {self.log_path}:\n{self.log_tail()}"
                    )
                try:
                    response = client.get(self.url + self.ready_path)
                except httpx.HTTPError as exc:
                    last = exc
                else:
                    if response.status_code == 200:
                        return
                    last = response.status_code
                if time.monotonic() >= deadline:
                    break
                time.sleep(interval)
        raise ProcessStartError(
            f"{self.name} not ready on {self.url}{self.ready_path} after {timeout:g}s "
            f"(last: {last!r}); log {self.log_path}:\n{self.log_tail()}"
        )

    def stop(self, timeout: float = 10.0) -> int | None:
        """SIGTERM, wait up to ``timeout`` s, then SIGKILL. Returns the exit code."""
        return stop_process(self._proc, timeout) if self._proc is not None else None

    def kill(self) -> int | None:
        """SIGKILL now (simulates a crash). Returns the exit code."""
        proc = self._proc
        if proc is None:
            return None
        if proc.poll() is None:
            proc.kill()
        proc.wait(10)
        return proc.returncode

    # -- introspection -------------------------------------------------------
    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def address(self) -> str:
        """``127.0.0.1:<port>``, e.g. for a Prometheus scrape target."""
        return f"127.0.0.1:{self.port}"

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc else None

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    @property
    def returncode(self) -> int | None:
        return self._proc.poll() if self._proc else None

    def log_tail(self, lines: int = 40) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name} {self.url} pid={self.pid}>"


class PromInstance(ManagedProcess):
    config_path: Path
    scrape_targets: list[str]

    def query(self, expr: str) -> list[dict[str, Any]]:
        """Instant query; the ``data.result`` list (raises on HTTP or API errors)."""
        with httpx.Client(timeout=5.0) as client:
            response = client.get(f"{self.url}/api/v1/query", params={"query": expr})
        response.raise_for_status()
        body = response.json()
        if body.get("status") != "success":
            raise RuntimeError(f"query {expr!r} failed: {body}")
        result: list[dict[str, Any]] = body["data"]["result"]
        return result

    def wait_for_targets_up(self, timeout: float = 20.0) -> None:
        """Wait until every scrape target has been scraped successfully (``up == 1``).

        Prometheus 2.42 hands static targets to the scrape manager only on its
        5 s discovery tick, so the first scrape comes ~5 s after ``/-/ready``.
        """
        want = set(self.scrape_targets)

        def probe() -> bool:
            samples = self.query('up{job="service"} == 1')
            return {sample["metric"].get("instance") for sample in samples} >= want

        wait_until(
            probe,
            timeout=timeout,
            interval=0.2,
            what=f"targets {sorted(want)} up in {self.name}",
            ignore=(httpx.HTTPError,),
        )

    def reload(self) -> None:
        """Re-read the config file (``--web.enable-lifecycle`` is on)."""
        with httpx.Client(timeout=10.0) as client:
            client.post(f"{self.url}/-/reload").raise_for_status()


class AMInstance(ManagedProcess):
    config_path: Path

    def alerts(self) -> list[dict[str, Any]]:
        """``GET /api/v2/alerts``."""
        with httpx.Client(timeout=5.0) as client:
            response = client.get(f"{self.url}/api/v2/alerts")
        response.raise_for_status()
        alerts: list[dict[str, Any]] = response.json()
        return alerts

    def post_alerts(self, alerts: Sequence[Mapping[str, Any]]) -> None:
        """``POST /api/v2/alerts``: inject alerts directly, without Prometheus."""
        with httpx.Client(timeout=5.0) as client:
            client.post(f"{self.url}/api/v2/alerts", json=list(alerts)).raise_for_status()


class HealerProc(ManagedProcess):
    config_path: Path


P = TypeVar("P", bound=ManagedProcess)


class _Factory:
    """Keeps every instance it started so that teardown can stop them all."""

    kind = "process"

    def __init__(self, tmp_path: Path) -> None:
        self.tmp_path = tmp_path
        self.instances: list[ManagedProcess] = []

    def _workdir(self) -> Path:
        workdir = self.tmp_path / f"{self.kind}-{len(self.instances)}"
        workdir.mkdir(parents=True, exist_ok=True)
        return workdir

    def _launch(self, instance: P, ready_timeout: float) -> P:
        self.instances.append(instance)
        instance.start(ready_timeout)
        return instance

    def stop_all(self) -> None:
        while self.instances:
            self.instances.pop().stop()


class PrometheusFactory(_Factory):
    kind = "prometheus"

    def start(
        self,
        scrape_targets: Sequence[str],
        rule_files: Sequence[Path] | None = None,
        alertmanager_url: str | Sequence[str] | None = None,
        interval: str = "1s",
        target_labels: Mapping[str, str] | None = None,
        scrape_configs: Sequence[Mapping[str, Any]] = (),
    ) -> PromInstance:
        """Start a real Prometheus on 127.0.0.1:<free> scraping ``scrape_targets``.

        One scrape job ``service`` (path ``/metrics``); global scrape and
        evaluation intervals are ``interval``; alerts go to ``alertmanager_url`` (one URL,
        or a list: every Alertmanager of an HA pair gets every alert);
        ``target_labels`` are attached to every scraped series (and ``up``);
        ``scrape_configs`` are further jobs, as in prometheus.yml (exporters, probes).
        """
        binary = find_binary(PROMETHEUS_BIN, "prometheus")
        if binary is None:
            require_service(
                "prometheus", f"{PROMETHEUS_BIN} not found (apt-get install prometheus)"
            )
        workdir = self._workdir()
        config: dict[str, Any] = {
            "global": {"scrape_interval": interval, "evaluation_interval": interval},
            "scrape_configs": [
                {
                    "job_name": "service",
                    "static_configs": [
                        {"targets": list(scrape_targets), "labels": dict(target_labels or {})}
                    ],
                },
                *(dict(job) for job in scrape_configs),
            ],
            "rule_files": [str(Path(path).resolve()) for path in rule_files or ()],
        }
        if alertmanager_url:
            urls = [alertmanager_url] if isinstance(alertmanager_url, str) else alertmanager_url
            ams: list[dict[str, Any]] = []
            for url in urls:
                parts = urlsplit(url)
                am: dict[str, Any] = {
                    "scheme": parts.scheme or "http",
                    "static_configs": [{"targets": [parts.netloc]}],
                }
                if parts.path.strip("/"):
                    am["path_prefix"] = parts.path
                ams.append(am)
            config["alerting"] = {"alertmanagers": ams}
        config_path = workdir / "prometheus.yml"
        config_path.write_text(yaml.safe_dump(config, sort_keys=False))
        storage = workdir / "data"

        def argv(port: int) -> list[str]:
            return [
                str(binary),
                f"--config.file={config_path}",
                f"--storage.tsdb.path={storage}",
                f"--web.listen-address=127.0.0.1:{port}",
                "--web.enable-lifecycle",
            ]

        instance = PromInstance("prometheus", argv, workdir=workdir, ready_path="/-/ready")
        instance.config_path = config_path
        instance.scrape_targets = list(scrape_targets)
        return self._launch(instance, 30.0)

    __call__ = start


class AlertmanagerFactory(_Factory):
    kind = "alertmanager"

    def start(
        self,
        webhook_url: str,
        bearer_token: str | None = None,
        extra_args: Sequence[str] = (),
    ) -> AMInstance:
        """Start a real Alertmanager on 127.0.0.1:<free>, clustering off unless
        ``extra_args`` gives ``--cluster.listen-address``.

        Route: receiver ``healer``, group_by alertname, group_wait 0s,
        group_interval 1s, repeat_interval 1h; webhook with send_resolved.
        """
        binary = find_binary(ALERTMANAGER_BIN, "prometheus-alertmanager", "alertmanager")
        if binary is None:
            require_service(
                "alertmanager",
                f"{ALERTMANAGER_BIN} not found (apt-get install prometheus-alertmanager)",
            )
        workdir = self._workdir()
        webhook: dict[str, Any] = {"url": webhook_url, "send_resolved": True}
        if bearer_token is not None:
            webhook["http_config"] = {
                "authorization": {"type": "Bearer", "credentials": bearer_token}
            }
        config = {
            "route": {
                "receiver": "healer",
                "group_by": ["alertname"],
                "group_wait": "0s",
                "group_interval": "1s",
                "repeat_interval": "1h",
            },
            "receivers": [{"name": "healer", "webhook_configs": [webhook]}],
        }
        config_path = workdir / "alertmanager.yml"
        config_path.write_text(yaml.safe_dump(config, sort_keys=False))
        storage = workdir / "data"

        # Empty disables clustering (otherwise it binds 0.0.0.0:9094); kingpin refuses a
        # repeated flag, so a cluster address in extra_args replaces it.
        clustered = any(a.startswith("--cluster.listen-address") for a in extra_args)
        cluster = [] if clustered else ["--cluster.listen-address="]

        def argv(port: int) -> list[str]:
            return [
                str(binary),
                f"--config.file={config_path}",
                f"--storage.path={storage}",
                f"--web.listen-address=127.0.0.1:{port}",
                *cluster,
                *extra_args,
            ]

        instance = AMInstance("alertmanager", argv, workdir=workdir, ready_path="/-/ready")
        instance.config_path = config_path
        return self._launch(instance, 30.0)

    __call__ = start


class HealerFactory(_Factory):
    kind = "healer"

    def start(
        self,
        config_path: Path,
        *,
        env: Mapping[str, str] | None = None,
        port: int | None = None,
        host: str = "127.0.0.1",
        open_files: tuple[int, int] | None = None,
        args: Sequence[str] = (),
    ) -> HealerProc:
        """Run ``python -m healer serve --config <config_path> --listen <host>:<port>``
        followed by ``args`` (e.g. ``--replica-id r1``).

        ``port`` defaults to a free one; give it when a peer (Alertmanager) must know
        healer's URL before healer starts. ``host`` other than 127.0.0.1 (e.g.
        0.0.0.0, for the exposure rule) still serves loopback, where the readiness
        probe and tests connect. ``env`` is added to the current environment. Waits
        up to 30 s for ``GET /health`` == 200. The working directory is a fresh tmp dir.
        ``open_files`` is healer's RLIMIT_NOFILE (soft, hard), e.g. a host's usual 1024 soft.
        """
        config_path = Path(config_path).resolve()
        workdir = self._workdir()
        full_env = {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}

        def argv(port: int) -> list[str]:
            return [
                sys.executable,
                "-m",
                "healer",
                "serve",
                "--config",
                str(config_path),
                "--listen",
                f"{host}:{port}",
                *args,
            ]

        instance = HealerProc(
            "healer",
            argv,
            workdir=workdir,
            ready_path="/health",
            env=full_env,
            port=port,
            open_files=open_files,
        )
        instance.config_path = config_path
        return self._launch(instance, 30.0)

    __call__ = start
