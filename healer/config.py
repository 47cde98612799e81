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
import hashlib
import os
import re
from collections.abc import Hashable, Mapping
from dataclasses import dataclass, field
from functools import cached_property
from ipaddress import ip_address
from pathlib import Path
from types import MappingProxyType
from typing import Annotated, Any, Literal, Protocol

import yaml
from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Discriminator,
    Field,
    Tag,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from healer.docker_config import DockerConfig, check_tls_files
from healer.errors import ConfigError, MatcherSyntaxError
from healer.hosts import is_loopback
from healer.matching import LabelSelector
from healer.redact import redact_dsn
from healer.replica import Replica, check_replica_id, default_replica_id
from healer.units import MAX_DURATION, ByteSize, Duration

_DAY = 86400.0


def _selector(value: Any) -> LabelSelector:
    if isinstance(value, LabelSelector):
        return value
    if not (
        isinstance(value, str)
        or (isinstance(value, list) and all(isinstance(v, str) for v in value))
    ):
        raise ValueError('expected a matcher string or a list of them, e.g. alertname="X"')
    try:
        return LabelSelector.from_config(value)
    except MatcherSyntaxError as exc:
        raise ValueError(exc.reason) from None


def _path(value: Any) -> Any:
    """A path in the config: a non-empty string without NUL (``""`` would be ``.``)."""
    if isinstance(value, str) and (not value.strip() or "\x00" in value):
        raise ValueError(
            "expected a file path, got an empty string"
            if not value.strip()
            else "a path cannot contain a NUL byte"
        )
    return value


Selector = Annotated[LabelSelector, BeforeValidator(_selector)]
FilePath = Annotated[Path, BeforeValidator(_path)]


class _Frozen(BaseModel):
    """Every config model: unknown keys are errors, floats must be finite, and a YAML
    boolean (``yes``, ``true``) is never read as the number 1."""

    model_config = ConfigDict(
        extra="forbid", frozen=True, arbitrary_types_allowed=True, allow_inf_nan=False
    )

    @field_validator("*", mode="before")
    @classmethod
    def _no_bool_for_numbers(cls, value: Any, info: ValidationInfo) -> Any:
        if isinstance(value, bool) and info.field_name is not None:
            annotation = cls.model_fields[info.field_name].annotation
            if annotation is not bool and bool not in getattr(annotation, "__args__", ()):
                raise ValueError(f"expected {_kind(annotation)}, got the boolean {value}")
        return value


def _kind(annotation: Any) -> str:
    args = set(getattr(annotation, "__args__", ())) | {annotation}
    return "a number" if args & {int, float} else "a value of another type"


class BasicAuth(_Frozen):
    username: str = Field(min_length=1)
    password_file: FilePath | None = None


class WebhookConfig(_Frozen):
    max_body: Annotated[ByteSize, Field(le=2**30)] = 2**20
    token_file: FilePath | None = None
    basic_auth: BasicAuth | None = None


class AdminConfig(_Frozen):
    token_file: FilePath | None = None


class ConsoleConfig(_Frozen):
    """The web console at /ui (healer/console/): its login sessions."""

    # A login lasts this long (then log in again).
    session_ttl: Annotated[Duration, Field(ge=60, le=7 * _DAY)] = 8 * 3600.0
    # Mark the session cookie Secure on every request, not only https ones: behind a TLS
    # proxy that talks plain http to healer without X-Forwarded-Proto.
    secure_cookie: bool = False


class PrometheusConfig(_Frozen):
    url: str = Field(default="http://127.0.0.1:9090", pattern=r"^https?://[^/\s]+", max_length=2048)
    timeout: Annotated[Duration, Field(gt=0, le=300)] = 5.0
    # Overrides the interval read from Prometheus' own config (global.evaluation_interval).
    evaluation_interval: Annotated[Duration, Field(gt=0, le=_DAY)] | None = None


class ProtectConfig(_Frozen):
    users: list[str] = Field(default_factory=list)
    application_names: list[str] = Field(default_factory=list)


class DsnSource(_Frozen):
    """Where a PostgreSQL DSN comes from: exactly one of ``dsn_file``, ``dsn_env`` or
    ``dsn`` (the last only for DSNs without a password, e.g. a Unix socket with peer
    auth): the password never lives in the YAML."""

    dsn: str | None = Field(default=None, min_length=1)
    dsn_file: FilePath | None = None
    dsn_env: str | None = Field(default=None, pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")

    @model_validator(mode="after")
    def _one_dsn_source(self) -> DsnSource:
        given = [k for k in ("dsn", "dsn_file", "dsn_env") if getattr(self, k) is not None]
        if len(given) != 1:
            raise ValueError("give exactly one of dsn_file, dsn_env or dsn")
        if self.dsn is not None and _has_password(self.dsn):
            raise ValueError("dsn must not carry a password: use dsn_file or dsn_env")
        return self

    def resolve(self, where: str, env: Mapping[str, str]) -> str:
        """The DSN itself (read from its file or variable now)."""
        if self.dsn is not None:
            return self.dsn
        if self.dsn_file is not None:
            return _read_secret(self.dsn_file, f"{where}.dsn_file")
        value = env.get(self.dsn_env or "")
        if not value:
            raise ConfigError([(f"{where}.dsn_env", f"${self.dsn_env} is not set")])
        return value


class DatabaseConfig(DsnSource):
    """A PostgreSQL database handlers may act on, by name (``databases.odoo``)."""

    statement_timeout: Annotated[Duration, Field(gt=0, le=_DAY)] = 5.0
    connect_timeout: Annotated[Duration, Field(gt=0, le=300)] = 5.0
    pool_size: int = Field(default=2, ge=1, le=32)
    allow_superusers: bool = False
    max_terminations: int = Field(default=5, ge=1, le=1000)
    protect: ProtectConfig = ProtectConfig()


class PostgresJournal(DsnSource):
    """``journal:`` on PostgreSQL (the store several replicas share): its DSN source and
    the store's pool limits."""

    pool_size: int = Field(default=4, ge=1, le=64)
    connect_timeout: Annotated[Duration, Field(gt=0, le=300)] = 5.0
    statement_timeout: Annotated[Duration, Field(gt=0, le=3600)] = 30.0


_PG_URL = re.compile(r"^postgres(ql)?://", re.I)


def _journal(value: Any) -> Any:
    """``journal:``: a SQLite file path, a ``postgresql://`` URL (no password), or a
    mapping with the DSN's source (``dsn_file`` / ``dsn_env`` / ``dsn``)."""
    if isinstance(value, str) and _PG_URL.match(value):
        return {"dsn": value}
    return _path(value)


def _journal_kind(value: Any) -> str:
    return _POSTGRES_TAG if isinstance(value, dict | PostgresJournal) else _SQLITE_TAG


# The journal's two forms, told apart before validation; the tags never show in errors.
_SQLITE_TAG, _POSTGRES_TAG = "<sqlite>", "<postgresql>"
Journal = Annotated[
    Annotated[FilePath, Tag(_SQLITE_TAG)] | Annotated[PostgresJournal, Tag(_POSTGRES_TAG)],
    Discriminator(_journal_kind),
    BeforeValidator(_journal),
]


def _has_password(dsn: str) -> bool:
    return redact_dsn(dsn) != dsn


class VerifySpec(_Frozen):
    """How a rule's recovery is verified. Unset fields take the top-level defaults."""

    query: str | None = Field(default=None, min_length=1, max_length=65536)
    stable_for: Annotated[Duration, Field(le=_DAY)] | None = None
    timeout: Annotated[Duration, Field(gt=0, le=7 * _DAY)] | None = None
    interval: Annotated[Duration, Field(gt=0, le=3600)] | None = None


class VerifyDefaults(_Frozen):
    stable_for: Annotated[Duration, Field(le=_DAY)] = 30.0
    timeout: Annotated[Duration, Field(gt=0, le=7 * _DAY)] = 300.0


class BudgetConfig(_Frozen):
    """At most ``max_actions`` actions per rule and target within ``window``."""

    max_actions: int = Field(default=3, ge=1, le=1000)
    window: Annotated[Duration, Field(gt=0, le=30 * _DAY)] = 3600.0


class BudgetOverride(_Frozen):
    """A rule's budget; unset fields take ``safety.budget``'s."""

    max_actions: int | None = Field(default=None, ge=1, le=1000)
    window: Annotated[Duration, Field(gt=0, le=30 * _DAY)] | None = None


# What follows a heal that ended not_recovered while its alert still fires
# (healer/followup.py): tell the notifiers once, or heal again after the cooldown.
OnNotRecovered = Literal["escalate", "retry"]


class SafetyConfig(_Frozen):
    """Defaults of the safety gates (healer/gates.py); rules may override the first three
    and ``on_not_recovered``."""

    cooldown: Annotated[Duration, Field(le=7 * _DAY)] = 300.0
    budget: BudgetConfig = BudgetConfig()
    min_firing: Annotated[Duration, Field(le=_DAY)] = 0.0
    # An open circuit closes by itself after this long without a new alert for it.
    circuit_quiet: Annotated[Duration, Field(gt=0, le=30 * _DAY)] = 3600.0
    # The longest pause POST /api/v1/pause accepts.
    max_pause: Annotated[Duration, Field(gt=0, le=30 * _DAY)] = _DAY
    on_not_recovered: OnNotRecovered = "escalate"


class NotifierConfig(_Frozen):
    """Where escalations go. The URL is a secret: from ``url_file`` or ``url_env``."""

    kind: Literal["mattermost", "slack", "webhook"]
    name: str | None = Field(default=None, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.:-]*$", max_length=64)
    url_file: FilePath | None = None
    url_env: str | None = Field(default=None, pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")
    timeout: Annotated[Duration, Field(gt=0, le=120)] = 5.0
    retries: int = Field(default=2, ge=0, le=10)
    # Wait before retry n (1, 2, ...): backoff * 2**(n-1).
    backoff: Annotated[Duration, Field(le=60)] = 1.0

    @model_validator(mode="after")
    def _one_url_source(self) -> NotifierConfig:
        if (self.url_file is None) == (self.url_env is None):
            raise ValueError("give exactly one of url_file or url_env")
        return self


NotifyOn = Literal[
    "started", "acted", "recovered", "not_recovered", "failed", "refused", "escalated", "suggested"
]


class ApprovalConfig(_Frozen):
    """``mode: approve``: how long a heal waits for a human before it ends ``expired``."""

    timeout: Annotated[Duration, Field(gt=0, le=7 * _DAY)] = 900.0


class NotificationGroupConfig(_Frozen):
    """A storm is not a flood: past ``after`` notices for one rule within ``window``, the
    rest of that rule's notices are summed up, one summary per ``interval``."""

    after: int = Field(default=5, ge=1, le=10_000)
    window: Annotated[Duration, Field(gt=0, le=_DAY)] = 60.0
    interval: Annotated[Duration, Field(gt=0, le=_DAY)] = 60.0


class NotificationsConfig(_Frozen):
    """Which heal events are told through ``notify:`` (healer/notices.py)."""

    notify_on: list[NotifyOn] = Field(default_factory=list)
    group: NotificationGroupConfig = NotificationGroupConfig()


class SlackIntegration(_Frozen):
    """Slack interactive messages: the signing secret verifies each callback
    (``POST /api/v1/integrations/slack``, healer/http/integrations.py). The secret is
    read from ``signing_secret_file`` or ``$signing_secret_env`` (default
    ``HEALER_SLACK_SIGNING_SECRET``)."""

    signing_secret_file: FilePath | None = None
    signing_secret_env: str | None = Field(default=None, pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")
    # After a decision healer replaces the clicked message (no more buttons, who decided)
    # through the click's ``response_url``, only when it starts with one of these.
    response_urls: list[
        Annotated[str, Field(pattern=r"^https?://[^/\s]+/\S*$", max_length=2048)]
    ] = Field(default_factory=lambda: ["https://hooks.slack.com/"], max_length=16)

    @model_validator(mode="after")
    def _one_secret_source(self) -> SlackIntegration:
        if self.signing_secret_file is not None and self.signing_secret_env is not None:
            raise ValueError("give at most one of signing_secret_file or signing_secret_env")
        return self


class IntegrationsConfig(_Frozen):
    slack: SlackIntegration | None = None


class RuleConfig(_Frozen):
    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.:-]*$", max_length=128)
    match: Selector
    handler: str = Field(min_length=1, max_length=128)
    params: dict[str, Any] = Field(default_factory=dict)
    dry_run: bool = False
    verify: VerifySpec = VerifySpec()
    # Unset: the ``safety:`` defaults.
    cooldown: Annotated[Duration, Field(le=7 * _DAY)] | None = None
    budget: BudgetOverride | None = None
    min_firing: Annotated[Duration, Field(le=_DAY)] | None = None
    on_not_recovered: OnNotRecovered | None = None
    # auto: act (today); suggest: check, tell, never act (outcome suggested); approve:
    # check, ask, wait in awaiting_approval for a human (healer/approvals.py)
    mode: Literal["auto", "suggest", "approve"] = "auto"
    # Unset: the top-level ``notifications.notify_on``.
    notify_on: list[NotifyOn] | None = None
    # Unset: the top-level ``approval:``.
    approval: ApprovalConfig | None = None
    # The Docker engine (docker.engines) its handler acts on; may quote alert data
    # ("{{ labels.host }}"), checked against the engine names once substituted.
    # Unset: the engine ``default``.
    engine: str | None = Field(default=None, min_length=1, max_length=256)


# --- server: per-connection limits of the HTTP listener (healer/connections.py) ---
class ServerConfig(_Frozen):
    """How long a client may take, and how many connections may be open at once."""

    # From connect (or a kept-alive connection's next first byte) to the end of the
    # request headers: idle and trickling clients are closed after this.
    header_timeout: Annotated[Duration, Field(gt=0, le=300)] = 10.0
    # From the end of the headers to the end of the body (a Content-Length never met).
    body_timeout: Annotated[Duration, Field(gt=0, le=600)] = 30.0
    # A kept-alive connection with no new request is closed after this.
    keep_alive: Annotated[Duration, Field(gt=0, le=600)] = 5.0
    # Open connections at most (also kept below the open-file limit, see healer/server.py).
    max_connections: int = Field(default=4096, ge=8, le=1_000_000)


# --- end server ---

LogLevel = Literal["debug", "info", "warning", "error"]


class LogConfig(_Frozen):
    """What healer logs: ``level`` (``serve --log-level`` overrides it) and the level of
    the one line per accepted webhook request (by default ``debug``: it keeps a busy
    Alertmanager's re-sends out of an info log, and in a profile writing it took about a
    quarter of the webhook receiver's time; the count is healer_webhook_requests_total)."""

    level: LogLevel = "info"
    requests: Literal["debug", "info"] = "debug"


class ReplicaConfig(_Frozen):
    """This healer as one replica of a fleet sharing one store: its id (on every timeline
    entry; default ``<host name>:<pid>``) and the leases on the heals it runs."""

    id: str | None = Field(default=None, min_length=1, max_length=100)
    # A heal whose runner has not renewed its lease for this long is taken over.
    lease_ttl: Annotated[Duration, Field(ge=1, le=600)] = 15.0
    # How often leases are renewed and expired ones looked for (< lease_ttl / 2).
    renew_every: Annotated[Duration, Field(ge=0.1, le=300)] = 5.0

    @field_validator("id")
    @classmethod
    def _printable(cls, value: str | None) -> str | None:
        return None if value is None else check_replica_id(value)

    @model_validator(mode="after")
    def _renew_often(self) -> ReplicaConfig:
        if self.renew_every >= self.lease_ttl / 2:
            raise ValueError(
                f"renew_every ({self.renew_every:g}s) must be less than half"
                f" of lease_ttl ({self.lease_ttl:g}s)"
            )
        return self

    def replica(self) -> Replica:
        return Replica(id=self.id or default_replica_id(), lease_ttl=self.lease_ttl)


class RetentionConfig(_Frozen):
    """How long the journal keeps history (docs/configuration.md#retention): done heals
    with their timelines ``heals``, alert rows and webhook bodies ``alerts`` after they
    were last seen (0: forever); a prune every ``every``, ``batch`` rows per short
    transaction. What open heals and the safety gates need is never pruned."""

    enabled: bool = True
    heals: Annotated[Duration, Field(le=MAX_DURATION)] = 90 * _DAY
    alerts: Annotated[Duration, Field(le=MAX_DURATION)] = 30 * _DAY
    every: Annotated[Duration, Field(ge=0.1, le=_DAY)] = 600.0
    batch: int = Field(default=1000, ge=1, le=100_000)


class HealerConfig(_Frozen):
    listen: str = Field(
        default="127.0.0.1:9095", pattern=r"^(\[[0-9a-fA-F:]+\]|[^:\s]+):\d+$", max_length=300
    )
    journal: Journal = Path("healer-journal.db")
    # Listening beyond loopback without webhook auth is refused unless this is set.
    allow_insecure: bool = False
    dry_run: bool = False
    max_concurrent_heals: int = Field(default=16, ge=1, le=1024)
    # How long a stopping healer lets running heals finish before journaling them interrupted.
    shutdown_grace: Annotated[Duration, Field(le=3600)] = 10.0
    server: ServerConfig = ServerConfig()
    log: LogConfig = LogConfig()
    prometheus: PrometheusConfig = PrometheusConfig()
    webhook: WebhookConfig = WebhookConfig()
    admin: AdminConfig = AdminConfig()
    console: ConsoleConfig = ConsoleConfig()
    docker: DockerConfig = DockerConfig()
    databases: dict[Annotated[str, Field(pattern=r"^[A-Za-z0-9_.-]+$")], DatabaseConfig] = Field(
        default_factory=dict
    )
    verify: VerifyDefaults = VerifyDefaults()
    # Targets handlers may act on: each entry's keys are glob patterns over a
    # target's fields (kind, name, compose_project, compose_service, ...).
    allow: list[dict[str, str]] = Field(default_factory=list)
    safety: SafetyConfig = SafetyConfig()
    notify: list[NotifierConfig] = Field(default_factory=list, max_length=16)
    notifications: NotificationsConfig = NotificationsConfig()
    approval: ApprovalConfig = ApprovalConfig()
    integrations: IntegrationsConfig = IntegrationsConfig()
    # Where people reach this healer (links in messages, Mattermost's button callbacks),
    # e.g. https://healer.example.org; unset: http://<listen>.
    public_url: str | None = Field(default=None, max_length=2048)
    rules: list[RuleConfig] = Field(default_factory=list)
    replica: ReplicaConfig = ReplicaConfig()
    retention: RetentionConfig = RetentionConfig()

    @field_validator("listen")
    @classmethod
    def _listen(cls, listen: str) -> str:
        host, port = listen.rsplit(":", 1)
        if not 1 <= int(port) <= 65535:
            raise ValueError(f"port {port[:12]} is out of range (1-65535)")
        if not (_is_ip(host.strip("[]")) or _HOSTNAME.fullmatch(host)):
            raise ValueError(f"{host[:64]!r} is neither an IP address nor a host name")
        return listen

    @property
    def host(self) -> str:
        return self.listen.rsplit(":", 1)[0].strip("[]")

    @property
    def port(self) -> int:
        return int(self.listen.rsplit(":", 1)[1])

    def with_replica_id(self, replica_id: str) -> HealerConfig:
        """This config as replica ``replica_id`` (``--replica-id``); ValueError if the id
        is not 1 to 100 printable characters."""
        replica = self.replica.model_copy(update={"id": check_replica_id(replica_id)})
        return self.model_copy(update={"replica": replica})

    def rule(self, name: str) -> RuleConfig | None:
        return next((r for r in self.rules if r.name == name), None)

    def on_not_recovered(self, rule: str | None) -> OnNotRecovered:
        """The rule's ``on_not_recovered``, else ``safety.on_not_recovered``."""
        conf = self.rule(rule) if rule is not None else None
        if conf is not None and conf.on_not_recovered is not None:
            return conf.on_not_recovered
        return self.safety.on_not_recovered


_HOSTNAME = re.compile(
    r"(?=.{1,253}$)[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
    r"(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*\.?"
)


def _is_ip(host: str) -> bool:
    try:
        ip_address(host)
    except ValueError:
        return False
    return True


def format_loc(loc: tuple[int | str, ...]) -> str:
    """``('rules', 2, 'handler')`` -> ``rules[2].handler``."""
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def validation_errors(
    exc: ValidationError, prefix: tuple[int | str, ...] = ()
) -> list[tuple[str, str]]:
    out = []
    for err in exc.errors():
        msg = err["msg"].removeprefix("Value error, ")
        if err["type"] == "extra_forbidden":
            msg = "unknown key"
        loc = tuple(p for p in err["loc"] if p not in (_SQLITE_TAG, _POSTGRES_TAG))
        out.append((format_loc(prefix + loc), msg))
    return out


class RuleCheck(Protocol):
    """Checks a rule against the handlers that exist (its handler, its params, the database
    it names): :class:`healer.plugins.HandlerRegistry` is one. The config itself knows no
    plugins; ``where`` is the rule's path (``rules[2]``), ``config`` is None when the rest of
    the file did not validate."""

    def check_rule(
        self, rule: RuleConfig, where: str, config: HealerConfig | None
    ) -> list[tuple[str, str]]: ...


def parse_config(data: Any, handlers: RuleCheck | None = None) -> HealerConfig:
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
            errors.extend(handlers.check_rule(rule, f"rules[{i}]", config))
    if config is not None:
        errors.extend(_rule_engines(config))
    for i, entry in enumerate(config.allow if config is not None else []):
        if "kind" not in entry:
            errors.append((f"allow[{i}]", "each allowlist entry needs a 'kind' (e.g. docker)"))
    if errors or config is None:
        raise ConfigError(sorted(errors, key=_path_key))
    return config


def _rule_engines(config: HealerConfig) -> list[tuple[str, str]]:
    """A rule's ``engine`` without alert data must name a configured engine (one that
    quotes alert data is checked per heal, once substituted)."""
    known = config.docker.all_engines()
    errors = []
    for i, rule in enumerate(config.rules):
        engine = rule.engine
        if engine is None or "{{" in engine:
            continue
        if engine not in known:
            names = ", ".join(sorted(known)) or "none"
            errors.append((f"rules[{i}].engine", f"unknown engine {engine!r} (known: {names})"))
    return errors


def _path_key(error: tuple[str, str]) -> list[tuple[int, int | str]]:
    """Sort ``rules[10]`` after ``rules[2]``: numbers compare as numbers."""
    return [(0, int(t)) if t.isdigit() else (1, t) for t in re.split(r"(\d+)", error[0])]


# --- reading the file: UTF-8, no aliases, no duplicate keys ----------------------------


class _StrictLoader(yaml.SafeLoader):
    """PyYAML's safe loader, minus what makes a config mean something else than it reads:
    anchors and aliases (an 800-byte alias bomb expands to gigabytes; ``<<`` merges need
    them too) and duplicate keys (YAML says they are an error; PyYAML lets the last win,
    so a second ``allow:`` would silently replace the first)."""

    def compose_node(self, parent: Any, index: Any) -> Any:
        event = self.peek_event()  # type: ignore[no-untyped-call]
        if isinstance(event, yaml.AliasEvent) or getattr(event, "anchor", None) is not None:
            raise yaml.composer.ComposerError(
                None,
                None,
                "anchors and aliases (&name, *name) are not allowed in the "
                "config: write the value out",
                event.start_mark,
            )
        return super().compose_node(parent, index)

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: dict[Any, yaml.Node] = {}
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=True)
            if not isinstance(key, Hashable):
                raise yaml.constructor.ConstructorError(
                    None, None, "a mapping key must be a plain value", key_node.start_mark
                )
            if key in seen:
                first = seen[key].start_mark.line + 1
                raise yaml.constructor.ConstructorError(
                    None,
                    None,
                    f"duplicate key {str(key)[:64]!r} (first at line {first})",
                    key_node.start_mark,
                )
            seen[key] = key_node
        return super().construct_mapping(node, deep=deep)


def read_yaml(path: Path) -> Any:
    """The YAML document at ``path``, read as the config is (UTF-8, no aliases, no
    duplicate keys); raises ConfigError naming the file and the line."""
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise ConfigError([("", f"cannot read {path}: {exc.strerror}")]) from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw.count(b"\n", 0, exc.start) + 1
        raise ConfigError(
            [
                (
                    f"line {line}",
                    f"{path} is not UTF-8 text (byte "
                    f"{exc.start}: {raw[exc.start : exc.start + 1]!r})",
                )
            ]
        ) from None
    try:
        return yaml.load(text, Loader=_StrictLoader)  # noqa: S506 (a SafeLoader)
    except yaml.YAMLError as exc:
        where = getattr(exc, "problem_mark", None)
        loc = f"line {where.line + 1}, column {where.column + 1}" if where else ""
        raise ConfigError([(loc, f"not valid YAML: {getattr(exc, 'problem', exc)}")]) from None
    except RecursionError:  # [[[[...]]]] thousands deep
        raise ConfigError([("", f"{path}: nested too deeply")]) from None


def load_config(
    path: Path, handlers: RuleCheck | None = None, overrides: Mapping[str, Any] | None = None
) -> HealerConfig:
    """Read and validate ``path``; ``overrides`` (from CLI flags) replace top-level keys."""
    data = read_yaml(path)
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
    journal_dsn: str | None = None  # the PostgreSQL journal's DSN (None: SQLite)
    # Verifies Slack's interactive callbacks (integrations.slack); None: Slack refused.
    slack_signing_secret: str | None = None

    def __repr__(self) -> str:
        return (
            f"Secrets(webhook_token={'***' if self.webhook_token else None}, "
            f"webhook_basic={'***' if self.webhook_basic else None}, "
            f"admin_token={'***' if self.admin_token else None}, "
            f"databases={sorted(self.databases)}, notify_urls={len(self.notify_urls)}, "
            f"slack_signing_secret={'***' if self.slack_signing_secret else None})"
        )

    @property
    def webhook_auth(self) -> bool:
        return bool(self.webhook_token or self.webhook_basic)

    @cached_property
    def digests(self) -> Mapping[str, bytes]:
        """SHA-256 of each configured credential, computed once instead of on every
        request (healer/http/auth.py compares digests in constant time): the keys
        ``webhook_token``, ``webhook_user``, ``webhook_password``, ``admin_token``,
        present only when that credential is set."""
        values = {
            "webhook_token": self.webhook_token,
            "webhook_user": self.webhook_basic[0] if self.webhook_basic else None,
            "webhook_password": self.webhook_basic[1] if self.webhook_basic else None,
            "admin_token": self.admin_token,
        }
        return MappingProxyType(
            {k: hashlib.sha256(v.encode()).digest() for k, v in values.items() if v is not None}
        )


def _read_secret(path: Path, where: str) -> str:
    try:
        value = path.read_text(encoding="utf-8").strip()
    except OSError as exc:
        raise ConfigError([(where, f"cannot read {path}: {exc.strerror}")]) from None
    except UnicodeDecodeError:
        raise ConfigError([(where, f"{path} is not UTF-8 text (value hidden)")]) from None
    if not value:
        raise ConfigError([(where, f"{path} is empty")])
    return value


# A bearer token travels in an HTTP header: visible ASCII only. Whitespace or a control
# character inside (a token file with an inner newline) would break the header, and the
# HTTP client's error then quotes the whole header, token included.
_TOKEN = re.compile(r"[\x21-\x7e]+")
# A basic-auth password may hold spaces, never control characters.
_PASSWORD = re.compile(r"[^\x00-\x1f\x7f]+")


def check_token(value: str, where: str, pattern: re.Pattern[str] = _TOKEN) -> str:
    """``value`` if it can be sent as it is, else ConfigError naming ``where`` (a file or
    a variable), never the value."""
    if not pattern.fullmatch(value):
        what = (
            "whitespace, a control character or non-ASCII"
            if pattern is _TOKEN
            else ("a control character")
        )
        raise ConfigError(
            [
                (
                    where,
                    f"the secret holds {what} inside (value hidden): write "
                    "it on one line, nothing else in the file",
                )
            ]
        )
    return value


def token_from(
    env: Mapping[str, str],
    var: str,
    path: Path | None,
    where: str,
    pattern: re.Pattern[str] = _TOKEN,
) -> str | None:
    """A secret from ``$var`` (wins) or the file at ``path``; surrounding whitespace (a
    trailing newline) is dropped, anything inside is checked by :func:`check_token`."""
    value = (env.get(var) or "").strip()
    if value:
        return check_token(value, f"${var}", pattern)
    if path is None:
        return None
    return check_token(_read_secret(path, where), f"{where} ({path})", pattern)


def resolve_secrets(config: HealerConfig, env: Mapping[str, str] | None = None) -> Secrets:
    """Env vars (``HEALER_WEBHOOK_TOKEN``, ``HEALER_ADMIN_TOKEN``) win over ``*_file`` keys.
    The Docker engines' TLS files are checked readable here too (read again when the
    engine is first used)."""
    env = os.environ if env is None else env
    if tls_errors := check_tls_files(config.docker):
        raise ConfigError(tls_errors)
    webhook = token_from(
        env, "HEALER_WEBHOOK_TOKEN", config.webhook.token_file, "webhook.token_file"
    )
    admin = token_from(env, "HEALER_ADMIN_TOKEN", config.admin.token_file, "admin.token_file")
    basic = None
    if config.webhook.basic_auth is not None:
        ba = config.webhook.basic_auth
        password = token_from(
            env,
            "HEALER_WEBHOOK_PASSWORD",
            ba.password_file,
            "webhook.basic_auth.password_file",
            _PASSWORD,
        )
        if not password:
            raise ConfigError(
                [("webhook.basic_auth", "needs password_file or HEALER_WEBHOOK_PASSWORD")]
            )
        basic = (ba.username, password)
    return Secrets(
        webhook_token=webhook,
        webhook_basic=basic,
        admin_token=admin,
        databases=resolve_dsns(config, env),
        journal_dsn=resolve_journal_dsn(config, env),
        notify_urls=resolve_notify_urls(config, env),
        slack_signing_secret=resolve_slack_signing_secret(config, env),
    )


SLACK_SIGNING_SECRET_ENV = "HEALER_SLACK_SIGNING_SECRET"  # noqa: S105 (a variable name)


def resolve_slack_signing_secret(config: HealerConfig, env: Mapping[str, str]) -> str | None:
    """The Slack app's signing secret when ``integrations.slack`` is configured: from
    ``$signing_secret_env`` (default ``HEALER_SLACK_SIGNING_SECRET``) or
    ``signing_secret_file``; a configured integration without one is a ConfigError (the
    callback would refuse every click)."""
    slack = config.integrations.slack
    if slack is None:
        return None
    var = slack.signing_secret_env or SLACK_SIGNING_SECRET_ENV
    where = "integrations.slack.signing_secret_file"
    secret = token_from(env, var, slack.signing_secret_file, where)
    if secret is None:
        raise ConfigError(
            [
                (
                    "integrations.slack",
                    f"needs signing_secret_file or ${var} (the app's signing secret)",
                )
            ]
        )
    return secret


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
    return {name: db.resolve(f"databases.{name}", env) for name, db in config.databases.items()}


def resolve_journal_dsn(config: HealerConfig, env: Mapping[str, str] | None = None) -> str | None:
    """The PostgreSQL journal's DSN (None: the journal is a SQLite file)."""
    if not isinstance(config.journal, PostgresJournal):
        return None
    return config.journal.resolve("journal", os.environ if env is None else env)


def declared_secrets(config: HealerConfig, env: Mapping[str, str] | None = None) -> Secrets:
    """Which secrets *would* be set, without reading files (for check-config on another host)."""
    env = os.environ if env is None else env
    marker = "<set>"
    # A variable set here is checked as serve would check it (files live on the host).
    webhook = token_from(env, "HEALER_WEBHOOK_TOKEN", None, "") or (
        marker if config.webhook.token_file else None
    )
    admin = token_from(env, "HEALER_ADMIN_TOKEN", None, "") or (
        marker if config.admin.token_file else None
    )
    basic = (
        (config.webhook.basic_auth.username, marker)
        if config.webhook.basic_auth is not None
        else None
    )
    return Secrets(webhook_token=webhook, webhook_basic=basic, admin_token=admin)


def check_exposure(config: HealerConfig, secrets: Secrets) -> None:
    """Refuse to listen beyond loopback without webhook auth unless explicitly allowed."""
    if not is_loopback(config.host) and not secrets.webhook_auth and not config.allow_insecure:
        raise ConfigError(
            [
                (
                    "listen",
                    f"{config.listen} is beyond loopback and the webhook has "
                    "no auth: set HEALER_WEBHOOK_TOKEN / webhook.token_file, or "
                    "allow_insecure: true",
                )
            ]
        )
