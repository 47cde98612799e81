"""compose.yml, the example stack: it parses, everything it mounts, builds from or
uses as a secret is in the repository, healer reaches Docker only through the
proxy, and each service's config is valid in the file layout the container sees."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml

from tests.support.env import require_service
from tests.support.inprocess.stack import (
    REPO,
    load_compose,
    load_yaml,
    materialize,
    mounts,
    secret_names,
    secret_targets,
)

SECRETS_DIR = REPO / "examples" / "odoo" / "secrets"
HEALER_CONFIG_TARGET = "/etc/healer/healer.yml"


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return load_compose()


def service_config(compose: dict[str, Any], service: str, target: str) -> Path:
    """The repository file mounted at ``target`` in ``service``."""
    for mount in mounts(compose, service):
        if mount.target == target and mount.repo_path is not None:
            return mount.repo_path
    raise AssertionError(f"{service} mounts nothing from the repository at {target}")


def healer_config(compose: dict[str, Any]) -> dict[str, Any]:
    data = load_yaml(service_config(compose, "healer", HEALER_CONFIG_TARGET))
    assert isinstance(data, dict)
    return data


def binary(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        require_service(name, "not on PATH")
    return path


# --- shape ---------------------------------------------------------------------------


def test_compose_parses_and_has_the_whole_stack(compose: dict[str, Any]) -> None:
    """compose.yml is YAML (PyYAML, merge keys included) with the services an Odoo
    operator needs beside healer, under the project name the healer allowlist uses."""
    assert compose["name"] == "odoo"
    expected = {
        "db",
        "odoo-init",
        "odoo-core",
        "odoo-accounting",
        "odoo-marketing",
        "odoo-longpoll",
        "nginx",
        "prometheus",
        "alertmanager",
        "postgres-exporter",
        "cadvisor",
        "node-exporter",
        "blackbox",
        "docker-proxy",
        "healer",
    }
    assert expected <= set(compose["services"])
    for name in ("odoo-core", "odoo-accounting", "odoo-marketing", "odoo-longpoll"):
        odoo = compose["services"][name]
        assert odoo["image"] == "odoo:17"
        assert odoo["mem_limit"], f"{name}: OdooMemoryLeak needs a memory limit"
        assert odoo["healthcheck"]["test"], name


def test_every_image_is_pinned(compose: dict[str, Any]) -> None:
    """Every image names a version: `latest` (or no tag) changes under the operator."""
    for name, service in compose["services"].items():
        if "build" in service:
            continue
        image = service["image"]
        tag = image.rsplit("/", 1)[-1].partition(":")[2]
        assert tag and tag != "latest", f"{name}: {image}"


def test_every_repository_path_compose_uses_exists(compose: dict[str, Any]) -> None:
    """Bind mounts from the repository, the build context and its Dockerfile exist."""
    checked = 0
    for name in compose["services"]:
        for mount in mounts(compose, name):
            if mount.repo_path is not None:
                assert mount.repo_path.exists(), f"{name}: {mount.source} is missing"
                assert mount.read_only or mount.target.startswith("/var/"), (
                    f"{name}: configuration mounts are read-only ({mount.source})"
                )
                checked += 1
        build = compose["services"][name].get("build")
        if build is not None:
            context = REPO / (build if isinstance(build, str) else build.get("context", "."))
            dockerfile = (
                build.get("dockerfile", "Dockerfile") if isinstance(build, dict) else "Dockerfile"
            )
            assert (context / dockerfile).is_file(), f"{name}: no {dockerfile} in {context}"
    assert checked >= 8


def test_every_secret_file_exists_or_is_generated(compose: dict[str, Any], tmp_path: Path) -> None:
    """Secrets are files under examples/odoo/secrets: each one is either there or
    created by generate.sh (which never enters git), with a *.example showing its
    format; the DSN generate.sh writes uses the healer role's generated password."""
    done = subprocess.run(
        ["sh", str(SECRETS_DIR / "generate.sh"), str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert done.returncode == 0, done.stderr
    for name, spec in compose["secrets"].items():
        path = (REPO / spec["file"]).resolve()
        assert path.parent == SECRETS_DIR, f"secret {name} outside examples/odoo/secrets"
        assert path.exists() or (tmp_path / path.name).is_file(), f"nothing makes {path}"
        assert path.with_name(path.name + ".example").is_file(), f"no {path.name}.example"
        assert (tmp_path / path.name).read_text().strip(), name
    password = (tmp_path / "healer_db_password").read_text().strip()
    dsn = urlsplit((tmp_path / "odoo_dsn").read_text().strip())
    assert (dsn.username, dsn.password, dsn.hostname, dsn.path) == (
        "healer",
        password,
        "db",
        "/odoo",
    )
    used = {s for svc in compose["services"] for s in secret_names(compose, svc)}
    assert used == set(compose["secrets"])


def test_generated_secrets_are_not_committed() -> None:
    """examples/odoo/secrets/.gitignore keeps the real secrets out of git."""
    ignore = (SECRETS_DIR / ".gitignore").read_text()
    assert "*" in ignore.split() and "!*.example" in ignore.split()


# --- healer and Docker -------------------------------------------------------------


def test_healer_never_gets_the_docker_socket(compose: dict[str, Any]) -> None:
    """No healer mount exposes the Docker socket (nor /var/run or /), and no
    DOCKER_HOST points at one: healer's Docker access is the proxy's."""
    healer = compose["services"]["healer"]
    for mount in mounts(compose, "healer"):
        assert "docker.sock" not in mount.source, mount
        assert mount.source.rstrip("/") not in {"", "/var/run", "/run"}, mount
    env = healer.get("environment") or {}
    assert "unix://" not in str(env.get("DOCKER_HOST", "") if isinstance(env, dict) else env)
    assert not healer.get("privileged")
    assert healer.get("user", "") not in {"root", "0", "0:0"}


def test_healer_talks_to_the_proxy_on_a_network_of_their_own(compose: dict[str, Any]) -> None:
    """healer's docker.base_url is the proxy service, the proxy holds the socket, and
    the network between them is internal and shared by nobody else."""
    url = urlsplit(healer_config(compose)["docker"]["base_url"])
    assert url.scheme == "tcp" and url.hostname == "docker-proxy"
    proxy = compose["services"]["docker-proxy"]
    assert any(m.source == "/var/run/docker.sock" for m in mounts(compose, "docker-proxy"))
    assert "ports" not in proxy
    (network,) = proxy["networks"]
    assert compose["networks"][network]["internal"] is True
    members = {n for n, s in compose["services"].items() if network in (s.get("networks") or [])}
    assert members == {"docker-proxy", "healer"}
    cfg = service_config(compose, "docker-proxy", "/usr/local/etc/haproxy/haproxy.cfg")
    assert f"bind :{url.port}" in cfg.read_text()


def test_the_proxy_allows_only_list_inspect_stats_restart() -> None:
    """The haproxy config allows GET handshake/list/inspect/stats and POST restart,
    then denies everything else (the behaviour itself: tests/integration)."""
    text = (REPO / "examples/odoo/docker-proxy/haproxy.cfg").read_text()
    allows = re.findall(r"^\s*http-request allow if (.+)$", text, re.M)
    assert allows == ["read handshake", "read list", "read inspect", "write restart"]
    assert re.search(r"^\s*http-request deny deny_status 403$", text, re.M)
    for word in ("exec", "create", "start", "kill", "images", "volumes"):
        assert not re.search(rf"acl \w+ .*\b{word}\b", text), word


def test_healer_service_runs_the_mounted_config_with_its_secrets(compose: dict[str, Any]) -> None:
    """healer serves the config compose mounts; every *_file it reads is a secret the
    service gets; Alertmanager's bearer token is the same secret as healer's."""
    healer = compose["services"]["healer"]
    assert healer["command"] == ["serve", "--config", HEALER_CONFIG_TARGET]
    config = healer_config(compose)
    files = [
        config["webhook"]["token_file"],
        config["admin"]["token_file"],
        *(db["dsn_file"] for db in config["databases"].values()),
    ]
    targets = secret_targets(compose, "healer")
    for path in files:
        assert path in targets, f"healer reads {path}, which compose does not provide"
    am = load_yaml(service_config(compose, "alertmanager", "/etc/alertmanager/alertmanager.yml"))
    (hook,) = next(r for r in am["receivers"] if r["name"] == "healer")["webhook_configs"]
    credentials = hook["http_config"]["authorization"]["credentials_file"]
    assert (
        secret_targets(compose, "alertmanager")[credentials]
        == (targets[config["webhook"]["token_file"]])
    )
    listen_port = int(config["listen"].rsplit(":", 1)[1])
    hook_url = urlsplit(hook["url"])
    assert (hook_url.hostname, hook_url.port) == ("healer", listen_port)
    assert urlsplit(config["prometheus"]["url"]).hostname == "prometheus"


def test_healer_config_passes_check_config(compose: dict[str, Any]) -> None:
    """`healer check-config` accepts the config compose mounts (with every handler its
    rules name installed)."""
    path = service_config(compose, "healer", HEALER_CONFIG_TARGET)
    done = subprocess.run(
        [sys.executable, "-m", "healer", "check-config", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stdout + done.stderr


def test_dockerfile_runs_healer_unprivileged_with_a_healthcheck() -> None:
    """The image: python:3.11-slim, pip install ., a non-root user, HEALTHCHECK on
    /health, and `healer serve --config /etc/healer/healer.yml` by default."""
    text = (REPO / "Dockerfile").read_text()
    assert re.search(r"^FROM python:3\.11-slim\b", text, re.M)
    assert re.search(r"^RUN pip install \.", text, re.M)
    users = re.findall(r"^USER (\S+)", text, re.M)
    assert users and users[-1] not in {"root", "0"}
    assert re.search(r"^HEALTHCHECK .*\n?.*/health\b", text, re.M)
    assert "/health/ready" not in re.search(r"HEALTHCHECK[^\n]*\n[^\n]*", text).group(0)
    assert 'ENTRYPOINT ["healer"]' in text
    assert f'CMD ["serve", "--config", "{HEALER_CONFIG_TARGET}"]' in text


# --- the monitoring side, as the containers see it ------------------------------------


def test_scrape_and_probe_targets_are_compose_services(compose: dict[str, Any]) -> None:
    """Every Prometheus target and blackbox probe names a service of the stack, and every
    target says which compose service it is (the labels healer's rules act on)."""
    prom = load_yaml(service_config(compose, "prometheus", "/etc/prometheus/prometheus.yml"))
    services = set(compose["services"])
    jobs = {}
    for job in prom["scrape_configs"]:
        jobs[job["job_name"]] = job
        for static in job["static_configs"]:
            assert static["labels"]["compose_project"] == compose["name"]
            assert static["labels"]["compose_service"] in services
            for target in static["targets"]:
                host = urlsplit(target).hostname if "://" in target else target.split(":")[0]
                assert host in services | {"localhost"}, f"{job['job_name']}: {target}"
    assert {
        "healer",
        "postgres-exporter",
        "cadvisor",
        "node-exporter",
        "odoo-longpoll",
        "odoo-health",
    } <= set(jobs)
    assert jobs["odoo-longpoll"]["params"]["module"] == ["http_longpoll"]
    (am,) = prom["alerting"]["alertmanagers"][0]["static_configs"][0]["targets"]
    assert am.split(":")[0] == "alertmanager"


@pytest.mark.prometheus
def test_prometheus_config_is_valid_where_compose_mounts_it(
    compose: dict[str, Any], tmp_path: Path
) -> None:
    """`promtool check config` passes on prometheus.yml with alerts/ where compose
    mounts them: the rule_files paths resolve inside the container."""
    root = materialize(compose, "prometheus", tmp_path)
    done = subprocess.run(
        [binary("promtool"), "check", "config", str(root / "etc/prometheus/prometheus.yml")],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "3 rule files found" in done.stdout


@pytest.mark.prometheus
def test_alertmanager_config_is_valid_where_compose_mounts_it(
    compose: dict[str, Any], tmp_path: Path
) -> None:
    """`amtool check-config` passes on the file compose mounts for Alertmanager."""
    root = materialize(compose, "alertmanager", tmp_path)
    done = subprocess.run(
        [binary("amtool"), "check-config", str(root / "etc/alertmanager/alertmanager.yml")],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stdout + done.stderr


@pytest.mark.prometheus
def test_blackbox_config_is_valid(compose: dict[str, Any]) -> None:
    """The blackbox exporter accepts its config (--config.check) and has the modules
    prometheus.yml asks for."""
    path = service_config(compose, "blackbox", "/etc/blackbox_exporter/config.yml")
    exe = shutil.which("prometheus-blackbox-exporter") or binary("blackbox_exporter")
    done = subprocess.run(
        [exe, f"--config.file={path}", "--config.check"], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stdout + done.stderr
    modules = set(yaml.safe_load(path.read_text())["modules"])
    prom = load_yaml(service_config(compose, "prometheus", "/etc/prometheus/prometheus.yml"))
    wanted = {m for job in prom["scrape_configs"] for m in job.get("params", {}).get("module", [])}
    assert wanted <= modules


def test_postgres_exporter_reads_the_queries_from_the_odoo_database(
    compose: dict[str, Any],
) -> None:
    """postgres_exporter gets alerts/postgres_exporter/queries.yml through
    PG_EXPORTER_EXTEND_QUERY_PATH, connects to the odoo database (odoo_cron reads its
    ir_cron) as its own role, with the password from a secret."""
    exporter = compose["services"]["postgres-exporter"]
    env = exporter["environment"]
    path = service_config(compose, "postgres-exporter", env["PG_EXPORTER_EXTEND_QUERY_PATH"])
    assert path == REPO / "alerts" / "postgres_exporter" / "queries.yml"
    assert env["DATA_SOURCE_URI"].split("?")[0] == "db:5432/odoo"
    assert env["DATA_SOURCE_USER"] == "postgres_exporter"
    assert env["DATA_SOURCE_PASS_FILE"] in secret_targets(compose, "postgres-exporter")


# --- compose.replicas.yml: a second replica on the stack's PostgreSQL --------------------


def test_replicas_override_runs_two_replicas_on_one_postgresql_journal(
    compose: dict[str, Any], tmp_path: Path
) -> None:
    """compose.replicas.yml: both replicas serve the same mounted config with distinct
    replica ids and one PostgreSQL journal from a secret generate.sh writes (the healer
    role's password, the stack's db, the healer_journal database the roles script
    creates owned by healer); healer-2 keeps healer's hardening, never gets the Docker
    socket, and answers to the name Alertmanager posts to."""
    override = load_yaml(REPO / "compose.replicas.yml")
    base = compose["services"]["healer"]
    replicas = {
        "healer": {**base, **override["services"]["healer"]},
        "healer-2": override["services"]["healer-2"],
    }
    merged = {
        **compose,
        "services": {**compose["services"], **replicas},
        "secrets": {**compose["secrets"], **override["secrets"]},
    }
    ids = set()
    for name, service in replicas.items():
        command = service["command"]
        assert command[:3] == ["serve", "--config", HEALER_CONFIG_TARGET], name
        dsn_file = command[command.index("--journal-dsn-file") + 1]
        assert secret_targets(merged, name)[dsn_file] == "healer_journal_dsn", name
        ids.add(command[command.index("--replica-id") + 1])
        assert set(base["secrets"]) <= set(secret_names(merged, name)), name
        for key in ("read_only", "cap_drop", "security_opt", "tmpfs"):
            assert service.get(key, base[key]) == base[key], (name, key)
        assert not any("docker.sock" in str(v) for v in service.get("volumes", [])), name
    assert len(ids) == 2
    assert service_config(merged, "healer-2", HEALER_CONFIG_TARGET) == service_config(
        compose, "healer", HEALER_CONFIG_TARGET
    )
    assert "healer" in replicas["healer-2"]["networks"]["default"]["aliases"]

    done = subprocess.run(
        ["sh", str(SECRETS_DIR / "generate.sh"), str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert done.returncode == 0, done.stderr
    password = (tmp_path / "healer_db_password").read_text().strip()
    dsn = urlsplit((tmp_path / "healer_journal_dsn").read_text().strip())
    assert (dsn.username, dsn.password, dsn.hostname, dsn.path) == (
        "healer",
        password,
        "db",
        "/healer_journal",
    )
    assert (SECRETS_DIR / "healer_journal_dsn.example").is_file()
    roles = (REPO / "examples" / "odoo" / "postgres" / "initdb.d" / "10-roles.sh").read_text()
    assert "CREATE DATABASE healer_journal OWNER healer" in roles


# --- Grafana: healer's dashboard on the stack's Prometheus ------------------------------


def test_grafana_is_provisioned_with_the_stack_s_prometheus_and_healer_s_dashboard(
    compose: dict[str, Any],
) -> None:
    """The grafana service: a datasource pointing at the prometheus service (whose
    scrape jobs include healer), a dashboard provider whose path holds the mounted
    examples/grafana/healer.json, both mounted read-only where Grafana reads
    provisioning; the dashboard's datasource variable picks that (default) Prometheus."""
    datasources = load_yaml(
        service_config(compose, "grafana", "/etc/grafana/provisioning/datasources")
        / "prometheus.yml"
    )
    (source,) = datasources["datasources"]
    url = urlsplit(source["url"])
    assert source["type"] == "prometheus" and source["isDefault"] is True
    assert url.hostname == "prometheus" and url.hostname in compose["services"]
    published = compose["services"]["prometheus"]["ports"][0]
    assert published.rsplit(":", 1)[1] == str(url.port)
    prom = load_yaml(service_config(compose, "prometheus", "/etc/prometheus/prometheus.yml"))
    assert "healer" in {job["job_name"] for job in prom["scrape_configs"]}

    providers = load_yaml(
        service_config(compose, "grafana", "/etc/grafana/provisioning/dashboards") / "healer.yml"
    )
    (provider,) = providers["providers"]
    assert provider["type"] == "file"
    path = provider["options"]["path"].rstrip("/")
    dashboard = service_config(compose, "grafana", f"{path}/healer.json")
    assert dashboard == REPO / "examples" / "grafana" / "healer.json"
    variable = next(
        v
        for v in json.loads(dashboard.read_text())["templating"]["list"]
        if v["type"] == "datasource"
    )
    assert variable["query"] == source["type"]
    for mount in mounts(compose, "grafana"):
        if mount.repo_path is not None:
            assert mount.read_only, mount


def test_grafana_asks_for_a_login_with_the_generated_admin_password(
    compose: dict[str, Any],
) -> None:
    """Grafana is published on 127.0.0.1 only, like every service but nginx; anonymous
    access and sign-up are off; the admin password is read from a secret file
    (generate.sh writes it), never written in compose.yml."""
    grafana = compose["services"]["grafana"]
    env = grafana["environment"]
    assert env["GF_AUTH_ANONYMOUS_ENABLED"] == "false"
    assert env["GF_USERS_ALLOW_SIGN_UP"] == "false"
    assert "GF_SECURITY_ADMIN_PASSWORD" not in env
    password_file = env["GF_SECURITY_ADMIN_PASSWORD__FILE"]
    assert secret_targets(compose, "grafana")[password_file] == "grafana_admin_password"
    for name, service in compose["services"].items():
        for port in service.get("ports", []):
            assert name == "nginx" or port.startswith("127.0.0.1:"), (name, port)
    generate = (SECRETS_DIR / "generate.sh").read_text()
    assert re.search(r"^put grafana_admin_password ", generate, re.M)
