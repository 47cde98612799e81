"""The YAML configuration, validated at start-up into frozen, typed objects.

Usage::

    config = load_config(Path("healer.yml"), handlers=registry)   # raises ConfigError
    secrets = resolve_secrets(config, os.environ)

``ConfigError.errors`` lists *every* problem as ``(path, message)``, e.g.
``("rules[2].handler", "unknown handler 'docker.restrat'")``; ``healer
check-config`` prints them one per line.
"""

from __future__ import annotations

import contextlib
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from ipaddress import ip_address
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal

import yaml
from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    model_validator,
)

from healer.errors import ConfigError, MatcherSyntaxError
from healer.matching import LabelSelector
from healer.redact import redact_dsn

if TYPE_CHECKING:
    from healer.plugins import HandlerRegistry

_DURATION = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d)")
_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
_SIZE = re.compile(r"(\d+)\s*(B|KB|KiB|MB|MiB|GB|GiB)?")
_SIZE_UNITS = {None: 1, "B": 1, "KB": 10**3, "KiB": 2**10, "MB": 10**6, "MiB": 2**20,
               "GB": 10**9, "GiB": 2**30}


def parse_duration(value: Any) -> float:
    """``"1h30m"``, ``"30s"``, ``"250ms"`` (Prometheus style) or a number of seconds."""
    if isinstance(value, bool):
        raise ValueError("expected a duration like '30s' or '10m'")
    if isinstance(value, int | float):
        if value < 0:
            raise ValueError("a duration cannot be negative")
        return float(value)
    if not isinstance(value, str) or not value.strip():
        raise ValueError("expected a duration like '30s' or '10m'")
    text = value.strip()
    pos, total = 0, 0.0
    for m in _DURATION.finditer(text):
        if m.start() != pos:
            break
        total += float(m.group(1)) * _UNITS[m.group(2)]
        pos = m.end()
    if pos != len(text) or pos == 0:
        raise ValueError(f"{value!r} is not a duration (use e.g. 30s, 10m, 1h30m, 250ms)")
    return total


def parse_size(value: Any) -> int:
    """``"1MiB"``, ``"512KiB"``, ``"2MB"`` or a number of bytes."""
    if isinstance(value, int) and not isinstance(value, bool) and value > 0:
        return value
    m = _SIZE.fullmatch(value.strip()) if isinstance(value, str) else None
    if not m or int(m.group(1)) <= 0:
        raise ValueError(f"{value!r} is not a size (use e.g. 1MiB, 512KiB, 1048576)")
    return int(m.group(1)) * _SIZE_UNITS[m.group(2)]


def _selector(value: Any) -> LabelSelector:
    if isinstance(value, LabelSelector):
        return value
    if not (isinstance(value, str) or
            (isinstance(value, list) and all(isinstance(v, str) for v in value))):
        raise ValueError('expected a matcher string or a list of them, e.g. alertname="X"')
    try:
        return LabelSelector.from_config(value)
    except MatcherSyntaxError as exc:
        raise ValueError(exc.reason) from None


Seconds = Annotated[float, BeforeValidator(parse_duration)]
ByteSize = Annotated[int, BeforeValidator(parse_size)]
Selector = Annotated[LabelSelector, BeforeValidator(_selector)]


class _Frozen(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, arbitrary_types_allowed=True)


class BasicAuth(_Frozen):
    username: str = Field(min_length=1)
    password_file: Path | None = None


class WebhookConfig(_Frozen):
    max_body: ByteSize = 2**20
    token_file: Path | None = None
    basic_auth: BasicAuth | None = None


class AdminConfig(_Frozen):
    token_file: Path | None = None


class PrometheusConfig(_Frozen):
    url: str = Field(default="http://127.0.0.1:9090", pattern=r"^https?://")
    timeout: Seconds = 5.0
    # Overrides the interval read from Prometheus' own config (global.evaluation_interval).
    evaluation_interval: Seconds | None = None


class DockerConfig(_Frozen):
    base_url: str | None = None


class ProtectConfig(_Frozen):
    users: list[str] = Field(default_factory=list)
    application_names: list[str] = Field(default_factory=list)


class DatabaseConfig(_Frozen):
    """A PostgreSQL database handlers may act on, by name (``databases.odoo``).

    The DSN comes from exactly one of ``dsn_file``, ``dsn_env`` or ``dsn`` (the
    last only for DSNs without a password, e.g. a Unix socket with peer auth)."""

    dsn: str | None = None
    dsn_file: Path | None = None
    dsn_env: str | None = Field(default=None, pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")
    statement_timeout: Seconds = 5.0
    connect_timeout: Seconds = 5.0
    pool_size: int = Field(default=2, ge=1, le=32)
    allow_superusers: bool = False
    max_terminations: int = Field(default=5, ge=1, le=1000)
    protect: ProtectConfig = ProtectConfig()

    @model_validator(mode="after")
    def _one_dsn_source(self) -> DatabaseConfig:
        given = [k for k in ("dsn", "dsn_file", "dsn_env") if getattr(self, k) is not None]
        if len(given) != 1:
            raise ValueError("give exactly one of dsn_file, dsn_env or dsn")
        if self.dsn is not None and _has_password(self.dsn):
            raise ValueError("dsn must not carry a password: use dsn_file or dsn_env")
        return self


def _has_password(dsn: str) -> bool:
    return redact_dsn(dsn) != dsn


class VerifySpec(_Frozen):
    """How a rule's recovery is verified. Unset fields take the top-level defaults."""

    query: str | None = None
    stable_for: Seconds | None = None
    timeout: Seconds | None = None
    interval: Seconds | None = None


class VerifyDefaults(_Frozen):
    stable_for: Seconds = 30.0
    timeout: Seconds = 300.0


_DAY = 86400.0


class BudgetConfig(_Frozen):
    """At most ``max_actions`` actions per rule and target within ``window``."""

    max_actions: int = Field(default=3, ge=1, le=1000)
    window: Annotated[Seconds, Field(gt=0, le=30 * _DAY)] = 3600.0


class BudgetOverride(_Frozen):
    """A rule's budget; unset fields take ``safety.budget``'s."""

    max_actions: int | None = Field(default=None, ge=1, le=1000)
    window: Annotated[Seconds, Field(gt=0, le=30 * _DAY)] | None = None


class SafetyConfig(_Frozen):
    """Defaults of the safety gates (healer/gates.py); rules may override the first three."""

    cooldown: Annotated[Seconds, Field(le=7 * _DAY)] = 300.0
    budget: BudgetConfig = BudgetConfig()
    min_firing: Annotated[Seconds, Field(le=_DAY)] = 0.0
    # An open circuit closes by itself after this long without a new alert for it.
    circuit_quiet: Annotated[Seconds, Field(gt=0, le=30 * _DAY)] = 3600.0
    # The longest pause POST /api/v1/pause accepts.
    max_pause: Annotated[Seconds, Field(gt=0, le=30 * _DAY)] = _DAY


class NotifierConfig(_Frozen):
    """Where escalations go. The URL is a secret: from ``url_file`` or ``url_env``."""

    kind: Literal["mattermost", "slack", "webhook"]
    name: str | None = Field(default=None, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.:-]*$",
                             max_length=64)
    url_file: Path | None = None
    url_env: str | None = Field(default=None, pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")
    timeout: Annotated[Seconds, Field(gt=0, le=120)] = 5.0
    retries: int = Field(default=2, ge=0, le=10)
    # Wait before retry n (1, 2, ...): backoff * 2**(n-1).
    backoff: Annotated[Seconds, Field(le=60)] = 1.0

    @model_validator(mode="after")
    def _one_url_source(self) -> NotifierConfig:
        if (self.url_file is None) == (self.url_env is None):
            raise ValueError("give exactly one of url_file or url_env")
        return self


class RuleConfig(_Frozen):
    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.:-]*$", max_length=128)
    match: Selector
    handler: str
    params: dict[str, Any] = Field(default_factory=dict)
    dry_run: bool = False
    verify: VerifySpec = VerifySpec()
    # Unset: the ``safety:`` defaults.
    cooldown: Annotated[Seconds, Field(le=7 * _DAY)] | None = None
    budget: BudgetOverride | None = None
    min_firing: Annotated[Seconds, Field(le=_DAY)] | None = None


# --- server: per-connection limits of the HTTP listener (healer/connections.py) ---
class ServerConfig(_Frozen):
    """How long a client may take, and how many connections may be open at once."""

    # From connect (or a kept-alive connection's next first byte) to the end of the
    # request headers: idle and trickling clients are closed after this.
    header_timeout: Annotated[Seconds, Field(gt=0, le=300)] = 10.0
    # From the end of the headers to the end of the body (a Content-Length never met).
    body_timeout: Annotated[Seconds, Field(gt=0, le=600)] = 30.0
    # A kept-alive connection with no new request is closed after this.
    keep_alive: Annotated[Seconds, Field(gt=0, le=600)] = 5.0
    # Open connections at most (also kept below the open-file limit, see healer/server.py).
    max_connections: int = Field(default=4096, ge=8, le=1_000_000)
# --- end server ---


class HealerConfig(_Frozen):
    listen: str = Field(default="127.0.0.1:9095", pattern=r"^(\[[0-9a-fA-F:]+\]|[^:\s]+):\d+$")
    journal: Path = Path("healer-journal.db")
    # Listening beyond loopback without webhook auth is refused unless this is set.
    allow_insecure: bool = False
    dry_run: bool = False
    max_concurrent_heals: int = Field(default=16, ge=1, le=1024)
    # How long a stopping healer lets running heals finish before journaling them interrupted.
    shutdown_grace: Seconds = 10.0
    server: ServerConfig = ServerConfig()
    prometheus: PrometheusConfig = PrometheusConfig()
    webhook: WebhookConfig = WebhookConfig()
    admin: AdminConfig = AdminConfig()
    docker: DockerConfig = DockerConfig()
    databases: dict[Annotated[str, Field(pattern=r"^[A-Za-z0-9_.-]+$")], DatabaseConfig] = Field(
        default_factory=dict)
    verify: VerifyDefaults = VerifyDefaults()
    # Targets handlers may act on: each entry's keys are glob patterns over a
    # target's fields (kind, name, compose_project, compose_service, ...).
    allow: list[dict[str, str]] = Field(default_factory=list)
    safety: SafetyConfig = SafetyConfig()
    notify: list[NotifierConfig] = Field(default_factory=list, max_length=16)
    rules: list[RuleConfig] = Field(default_factory=list)

    @property
    def host(self) -> str:
        return self.listen.rsplit(":", 1)[0].strip("[]")

    @property
    def port(self) -> int:
        return int(self.listen.rsplit(":", 1)[1])

    def rule(self, name: str) -> RuleConfig | None:
        return next((r for r in self.rules if r.name == name), None)


def format_loc(loc: tuple[int | str, ...]) -> str:
    """``('rules', 2, 'handler')`` -> ``rules[2].handler``."""
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def validation_errors(exc: ValidationError, prefix: tuple[int | str, ...] = ()) -> list[
        tuple[str, str]]:
    out = []
    for err in exc.errors():
        msg = err["msg"].removeprefix("Value error, ")
        if err["type"] == "extra_forbidden":
            msg = "unknown key"
        out.append((format_loc(prefix + tuple(err["loc"])), msg))
    return out


def parse_config(data: Any, handlers: HandlerRegistry | None = None) -> HealerConfig:
    """Validate already-loaded YAML data. With ``handlers``, rules are checked against them."""
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError([("", "the configuration must be a mapping at the top level")])
    errors: list[tuple[str, str]] = []
    config: HealerConfig | None = None
    try:
        config = HealerConfig.model_validate(data)
    except ValidationError as exc:
        errors.extend(validation_errors(exc))
    # Rules are also checked one by one, so that a schema error elsewhere does not hide an
    # unknown handler or bad params: check-config must print every error at once.
    raw_rules = data.get("rules")
    rules: list[tuple[int, RuleConfig]] = []
    if config is not None:
        rules = list(enumerate(config.rules))
    elif isinstance(raw_rules, list):
        for i, raw in enumerate(raw_rules):
            with contextlib.suppress(ValidationError):  # its errors are reported above
                rules.append((i, RuleConfig.model_validate(raw)))
    seen: set[str] = set()
    for i, rule in rules:
        if rule.name in seen:
            errors.append((f"rules[{i}].name", f"duplicate rule name {rule.name!r}"))
        seen.add(rule.name)
        if handlers is not None:
            errors.extend(handlers.validate_rule_params(rule, f"rules[{i}]"))
            if config is not None:
                errors.extend(_unknown_database(config, rule, i, handlers))
    for i, entry in enumerate(config.allow if config is not None else []):
        if "kind" not in entry:
            errors.append((f"allow[{i}]", "each allowlist entry needs a 'kind' (e.g. docker)"))
    if errors or config is None:
        raise ConfigError(sorted(errors, key=_path_key))
    return config


def _unknown_database(config: HealerConfig, rule: RuleConfig, i: int,
                      handlers: HandlerRegistry) -> list[tuple[str, str]]:
    """A PostgreSQL rule must name a database from ``databases:`` (unless templated)."""
    handler = handlers.get(rule.handler)
    db = rule.params.get("database")
    if handler is None or "postgres" not in handler.requires or not isinstance(db, str):
        return []
    if "{{" in db or db in config.databases:
        return []
    known = ", ".join(sorted(config.databases)) or "none configured"
    return [(f"rules[{i}].params.database", f"database {db!r} is not in databases: ({known})")]


def _path_key(error: tuple[str, str]) -> list[tuple[int, int | str]]:
    """Sort ``rules[10]`` after ``rules[2]``: numbers compare as numbers."""
    return [(0, int(t)) if t.isdigit() else (1, t) for t in re.split(r"(\d+)", error[0])]


def load_config(path: Path, handlers: HandlerRegistry | None = None,
                overrides: Mapping[str, Any] | None = None) -> HealerConfig:
    """Read and validate ``path``; ``overrides`` (from CLI flags) replace top-level keys."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError([("", f"cannot read {path}: {exc.strerror}")]) from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        where = getattr(exc, "problem_mark", None)
        loc = f"line {where.line + 1}, column {where.column + 1}" if where else ""
        raise ConfigError([(loc, f"not valid YAML: {getattr(exc, 'problem', exc)}")]) from None
    if overrides and isinstance(data, dict | None):
        data = {**(data or {}), **overrides}
    return parse_config(data, handlers)


@dataclass(frozen=True, repr=False)
class Secrets:
    """Tokens resolved from env vars or ``*_file`` keys. ``repr`` never shows them."""

    webhook_token: str | None = None
    webhook_basic: tuple[str, str] | None = None
    admin_token: str | None = None
    databases: Mapping[str, str] = field(default_factory=dict)  # name -> DSN
    notify_urls: tuple[str, ...] = ()  # one per ``notify:`` entry, in order

    def __repr__(self) -> str:
        return (f"Secrets(webhook_token={'***' if self.webhook_token else None}, "
                f"webhook_basic={'***' if self.webhook_basic else None}, "
                f"admin_token={'***' if self.admin_token else None}, "
                f"databases={sorted(self.databases)}, notify_urls={len(self.notify_urls)})")

    @property
    def webhook_auth(self) -> bool:
        return bool(self.webhook_token or self.webhook_basic)


def _read_secret(path: Path, where: str) -> str:
    try:
        value = path.read_text(encoding="utf-8").strip()
    except OSError as exc:
        raise ConfigError([(where, f"cannot read {path}: {exc.strerror}")]) from None
    if not value:
        raise ConfigError([(where, f"{path} is empty")])
    return value


def resolve_secrets(config: HealerConfig, env: Mapping[str, str] | None = None) -> Secrets:
    """Env vars (``HEALER_WEBHOOK_TOKEN``, ``HEALER_ADMIN_TOKEN``) win over ``*_file`` keys."""
    env = os.environ if env is None else env
    webhook = env.get("HEALER_WEBHOOK_TOKEN") or (
        _read_secret(config.webhook.token_file, "webhook.token_file")
        if config.webhook.token_file else None)
    admin = env.get("HEALER_ADMIN_TOKEN") or (
        _read_secret(config.admin.token_file, "admin.token_file")
        if config.admin.token_file else None)
    basic = None
    if config.webhook.basic_auth is not None:
        ba = config.webhook.basic_auth
        password = env.get("HEALER_WEBHOOK_PASSWORD") or (
            _read_secret(ba.password_file, "webhook.basic_auth.password_file")
            if ba.password_file else None)
        if not password:
            raise ConfigError([("webhook.basic_auth", "needs password_file or "
                                "HEALER_WEBHOOK_PASSWORD")])
        basic = (ba.username, password)
    return Secrets(webhook_token=webhook, webhook_basic=basic, admin_token=admin,
                   databases=resolve_dsns(config, env),
                   notify_urls=resolve_notify_urls(config, env))


def resolve_notify_urls(config: HealerConfig, env: Mapping[str, str]) -> tuple[str, ...]:
    """Notifier URLs carry their credential (a Mattermost/Slack hook key): errors name the
    file or variable, never the value."""
    urls: list[str] = []
    for i, notifier in enumerate(config.notify):
        where = f"notify[{i}]"
        if notifier.url_file is not None:
            url = _read_secret(notifier.url_file, f"{where}.url_file")
        else:
            assert notifier.url_env is not None
            url = env.get(notifier.url_env, "").strip()
            if not url:
                raise ConfigError([(f"{where}.url_env", f"${notifier.url_env} is not set")])
        if not re.match(r"^https?://[^\s/]+", url) or any(c.isspace() for c in url):
            raise ConfigError([(where, "the notifier URL is not an http(s) URL (value hidden)")])
        urls.append(url)
    return tuple(urls)


def resolve_dsns(config: HealerConfig, env: Mapping[str, str]) -> dict[str, str]:
    dsns: dict[str, str] = {}
    for name, db in config.databases.items():
        where = f"databases.{name}"
        if db.dsn is not None:
            dsns[name] = db.dsn
        elif db.dsn_file is not None:
            dsns[name] = _read_secret(db.dsn_file, f"{where}.dsn_file")
        elif db.dsn_env is not None:
            value = env.get(db.dsn_env)
            if not value:
                raise ConfigError([(f"{where}.dsn_env", f"${db.dsn_env} is not set")])
            dsns[name] = value
    return dsns


def declared_secrets(config: HealerConfig, env: Mapping[str, str] | None = None) -> Secrets:
    """Which secrets *would* be set, without reading files (for check-config on another host)."""
    env = os.environ if env is None else env
    marker = "<set>"
    webhook = env.get("HEALER_WEBHOOK_TOKEN") or (marker if config.webhook.token_file else None)
    admin = env.get("HEALER_ADMIN_TOKEN") or (marker if config.admin.token_file else None)
    basic = ((config.webhook.basic_auth.username, marker)
             if config.webhook.basic_auth is not None else None)
    return Secrets(webhook_token=webhook, webhook_basic=basic, admin_token=admin)


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ip_address(host).is_loopback
    except ValueError:
        return False


def check_exposure(config: HealerConfig, secrets: Secrets) -> None:
    """Refuse to listen beyond loopback without webhook auth unless explicitly allowed."""
    if not is_loopback(config.host) and not secrets.webhook_auth and not config.allow_insecure:
        raise ConfigError([("listen", f"{config.listen} is beyond loopback and the webhook has "
                            "no auth: set HEALER_WEBHOOK_TOKEN / webhook.token_file, or "
                            "allow_insecure: true")])
