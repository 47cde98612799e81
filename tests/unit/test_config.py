"""The YAML configuration, secrets, the exposure check and ``healer check-config``."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

import healer
from healer.cli import main
from healer.config import (
    Secrets,
    check_exposure,
    parse_config,
    resolve_secrets,
)
from healer.errors import ConfigError
from healer.plugins import HandlerRegistry
from healer.units import parse_duration, parse_size


def rule(name: str, handler: str = "docker.restart", **extra: Any) -> dict[str, Any]:
    out: dict[str, Any] = {
        "name": name,
        "match": [f'alertname="{name}"'],
        "handler": handler,
        "params": {"containers": ["{{ labels.container }}"]},
    }
    out.update(extra)
    return out


def errors_of(data: Any, handlers: HandlerRegistry | None = None) -> list[tuple[str, str]]:
    with pytest.raises(ConfigError) as info:
        parse_config(data, handlers)
    return info.value.errors


# --- durations and sizes --------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("30s", 30.0),
        ("10m", 600.0),
        ("1h30m", 5400.0),
        ("250ms", 0.25),
        ("1d", 86400.0),
        ("1.5s", 1.5),
        ("1m30s500ms", 90.5),
        (" 5s ", 5.0),
        (0, 0.0),
        (12, 12.0),
        (0.5, 0.5),
    ],
)
def test_durations_parse_prometheus_style(text: Any, seconds: float) -> None:
    """Prometheus-style duration strings (units may be combined) and plain numbers of
    seconds give seconds as a float."""
    assert parse_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize(
    "text",
    [
        "",
        "   ",
        "10",
        "s",
        "abc",
        "10x",
        "-5s",
        "1h 30m",
        "5s!",
        "1.5.s",
        "ms",
        True,
        -1,
        None,
        [],
        "10 s",
    ],
)
def test_bad_durations_are_rejected(text: Any) -> None:
    """Anything that is not a whole duration (bare number strings, unknown units, spaces
    inside, negatives, booleans) raises ValueError instead of being half-read."""
    with pytest.raises(ValueError):
        parse_duration(text)


def test_a_bad_duration_in_the_config_is_reported_with_its_path() -> None:
    """A bad duration is a config error located at its key, with the allowed forms."""
    errors = errors_of({"verify": {"timeout": "5 minutes"}})
    assert len(errors) == 1
    path, message = errors[0]
    assert path == "verify.timeout"
    assert "'5 minutes' is not a duration" in message


@pytest.mark.parametrize(
    ("text", "size"),
    [
        ("1KiB", 1024),
        ("512KiB", 512 * 1024),
        ("1MiB", 2**20),
        ("2MB", 2_000_000),
        ("1GiB", 2**30),
        ("100B", 100),
        ("4096", 4096),
        ("1 KiB", 1024),
        (1048576, 1048576),
    ],
)
def test_sizes_parse_to_bytes(text: Any, size: int) -> None:
    """Sizes take decimal and binary units or a plain byte count."""
    assert parse_size(text) == size


@pytest.mark.parametrize("text", ["0", "-1", "1TB", "1 kib", "abc", "", 0, -5, True, 1.5])
def test_bad_sizes_are_rejected(text: Any) -> None:
    """Zero, negatives, unknown units, floats and booleans are not sizes."""
    with pytest.raises(ValueError):
        parse_size(text)


def test_max_body_accepts_a_size_string() -> None:
    """webhook.max_body reads a size string into bytes."""
    config = parse_config({"webhook": {"max_body": "1KiB"}})
    assert config.webhook.max_body == 1024


# --- errors with paths -----------------------------------------------------------------


def test_unknown_handler_is_reported_at_its_rule_path(handlers: HandlerRegistry) -> None:
    """A typo in a rule's handler names the exact rule and lists the known handlers."""
    data = {"rules": [rule("a"), rule("b"), rule("c", handler="docker.restrat")]}
    errors = errors_of(data, handlers)
    assert len(errors) == 1
    path, message = errors[0]
    assert path == "rules[2].handler"
    assert message.startswith("unknown handler 'docker.restrat' (known: ")
    assert "docker.restart" in message and "test.noop" in message


def test_every_rule_error_is_reported_at_once(handlers: HandlerRegistry) -> None:
    """Several rule problems (unknown handler, duplicate name, bad params) come back
    together, each with its own path, not one per run."""
    data = {
        "rules": [
            rule("a"),
            rule("b", handler="docker.restrat"),
            rule("a"),
            rule("d", params={"containers": ["; rm -rf /"]}),
        ]
    }
    errors = dict(errors_of(data, handlers))
    assert set(errors) == {"rules[1].handler", "rules[2].name", "rules[3].params.containers[0]"}
    assert "unknown handler 'docker.restrat'" in errors["rules[1].handler"]
    assert errors["rules[2].name"] == "duplicate rule name 'a'"
    assert "should match pattern" in errors["rules[3].params.containers[0]"]


def test_every_schema_error_is_reported_at_once() -> None:
    """Schema problems in different sections are all listed, each with its path."""
    data = {
        "listen": "nowhere",
        "max_concurrent_heals": 0,
        "prometheus": {"url": "ftp://prom", "timeout": "soon"},
        "rules": [{"name": "r", "match": 'alertname="X"'}],
    }
    paths = {path for path, _ in errors_of(data)}
    assert paths == {
        "listen",
        "max_concurrent_heals",
        "prometheus.url",
        "prometheus.timeout",
        "rules[0].handler",
    }


def test_unknown_keys_are_errors_at_every_level() -> None:
    """A misspelt key is never silently ignored, at the top level or nested."""
    data = {
        "listen_addr": "127.0.0.1:1",
        "webhook": {"maxbody": "1KiB"},
        "rules": [{"name": "r", "match": 'alertname="X"', "handler": "h", "parms": {}}],
    }
    assert sorted(errors_of(data)) == [
        ("listen_addr", "unknown key"),
        ("rules[0].parms", "unknown key"),
        ("webhook.maxbody", "unknown key"),
    ]


def test_top_level_must_be_a_mapping() -> None:
    """A YAML list (or scalar) at the top is one clear error, not a crash."""
    assert errors_of(["rules"]) == [("", "the configuration must be a mapping at the top level")]


def test_an_empty_file_gives_the_defaults() -> None:
    """An empty YAML document (None) is a valid config: loopback, no rules."""
    config = parse_config(None)
    assert config.rules == [] and config.host == "127.0.0.1"


@pytest.mark.parametrize("match", ["foo=bar baz", 'severity=~"("', "job=", "{", ["x", 5]])
def test_a_bad_matcher_is_reported_at_the_rule_match(match: Any) -> None:
    """A rule matcher that does not parse is an error at ``rules[i].match``."""
    errors = errors_of(
        {"rules": [rule("ok"), {"name": "bad", "match": match, "handler": "docker.restart"}]}
    )
    assert [path for path, _ in errors] == ["rules[1].match"]


def test_matcher_syntax_is_alertmanagers() -> None:
    """Rules accept Alertmanager matchers as one string or a list and match with them."""
    config = parse_config(
        {
            "rules": [
                {"name": "a", "match": '{alertname="X", severity=~"P0|P1"}', "handler": "h"},
                {"name": "b", "match": ['alertname="X"', 'team!="db"'], "handler": "h"},
            ]
        }
    )
    assert config.rules[0].match.matches({"alertname": "X", "severity": "P1"})
    assert not config.rules[0].match.matches({"alertname": "X", "severity": "P2"})
    assert not config.rules[1].match.matches({"alertname": "X", "team": "db"})


def test_allowlist_entries_need_a_kind() -> None:
    """An allowlist entry without ``kind`` is refused with its index."""
    errors = errors_of({"allow": [{"kind": "docker", "name": "web-*"}, {"name": "db"}]})
    assert [path for path, _ in errors] == ["allow[1]"]


# --- params against the handler's model ------------------------------------------------


def test_params_with_label_templates_are_accepted(handlers: HandlerRegistry) -> None:
    """Templates like ``{{ labels.container }}`` and embedded ones pass the config check;
    the rendered value is validated later, per alert."""
    config = parse_config(
        {
            "rules": [
                rule("a"),
                rule("b", params={"containers": ["odoo-{{ labels.instance }}"], "stop_timeout": 5}),
                rule("c", handler="test.noop", params={"target": "{{annotations.host}}"}),
            ]
        },
        handlers,
    )
    assert config.rules[1].params == {
        "containers": ["odoo-{{ labels.instance }}"],
        "stop_timeout": 5,
    }


def test_params_are_validated_against_the_handler_model(handlers: HandlerRegistry) -> None:
    """Params that the handler's Params model refuses are config errors under
    ``rules[i].params``: unknown keys, wrong types, a missing selector."""
    errors = errors_of(
        {
            "rules": [
                rule("a", params={"containers": ["web"], "stop_timout": 5}),
                rule("b", params={"containers": ["web"], "stop_timeout": "soon"}),
                rule("c", params={}),
            ]
        },
        handlers,
    )
    paths = dict(errors)
    assert paths["rules[0].params.stop_timout"] == "unknown key"
    assert "rules[1].params.stop_timeout" in paths
    assert "give 'containers' (names) or 'service'" in paths["rules[2].params"]


def test_without_handlers_params_are_not_checked() -> None:
    """parse_config without a registry validates the schema only (no handler lookup)."""
    config = parse_config({"rules": [rule("a", handler="not.loaded", params={"x": 1})]})
    assert config.rules[0].handler == "not.loaded"


def test_config_is_frozen() -> None:
    """The engine sees a frozen view: nothing can change the config after validation."""
    config = parse_config({"dry_run": True})
    with pytest.raises(ValueError):
        config.dry_run = False  # type: ignore[misc]


# --- secrets ----------------------------------------------------------------------------


def secret_file(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def test_secrets_are_read_from_files_and_stripped(tmp_path: Path) -> None:
    """``*_file`` keys give the tokens, trailing newlines removed."""
    config = parse_config(
        {
            "webhook": {
                "token_file": str(secret_file(tmp_path, "wh", "wh-token\n")),
                "basic_auth": {
                    "username": "am",
                    "password_file": str(secret_file(tmp_path, "pw", "pw\n")),
                },
            },
            "admin": {"token_file": str(secret_file(tmp_path, "admin", "adm-token\n"))},
        }
    )
    secrets = resolve_secrets(config, {})
    assert secrets.webhook_token == "wh-token"
    assert secrets.webhook_basic == ("am", "pw")
    assert secrets.admin_token == "adm-token"


def test_env_vars_override_secret_files(tmp_path: Path) -> None:
    """HEALER_WEBHOOK_TOKEN / HEALER_ADMIN_TOKEN win over the ``*_file`` keys."""
    config = parse_config(
        {
            "webhook": {"token_file": str(secret_file(tmp_path, "wh", "from-file"))},
            "admin": {"token_file": str(secret_file(tmp_path, "admin", "from-file"))},
        }
    )
    secrets = resolve_secrets(
        config, {"HEALER_WEBHOOK_TOKEN": "wh-env", "HEALER_ADMIN_TOKEN": "admin-env"}
    )
    assert (secrets.webhook_token, secrets.admin_token) == ("wh-env", "admin-env")


def test_env_var_supplies_a_token_without_any_file() -> None:
    """One config serves many instances: the env var alone is enough."""
    secrets = resolve_secrets(parse_config({}), {"HEALER_WEBHOOK_TOKEN": "t"})
    assert secrets.webhook_token == "t" and secrets.webhook_auth


def test_an_empty_secret_file_is_an_error(tmp_path: Path) -> None:
    """A token file holding only whitespace is refused rather than read as no token."""
    config = parse_config({"webhook": {"token_file": str(secret_file(tmp_path, "wh", "\n  \n"))}})
    with pytest.raises(ConfigError) as info:
        resolve_secrets(config, {})
    [(path, message)] = info.value.errors
    assert path == "webhook.token_file"
    assert message.endswith("is empty")


def test_a_missing_secret_file_is_an_error(tmp_path: Path) -> None:
    """A token file that cannot be read is an error naming its key."""
    config = parse_config({"admin": {"token_file": str(tmp_path / "nope")}})
    with pytest.raises(ConfigError) as info:
        resolve_secrets(config, {})
    assert info.value.errors[0][0] == "admin.token_file"


def test_basic_auth_needs_a_password() -> None:
    """basic_auth without password_file or HEALER_WEBHOOK_PASSWORD is refused."""
    config = parse_config({"webhook": {"basic_auth": {"username": "am"}}})
    with pytest.raises(ConfigError) as info:
        resolve_secrets(config, {})
    assert info.value.errors[0][0] == "webhook.basic_auth"
    assert resolve_secrets(config, {"HEALER_WEBHOOK_PASSWORD": "pw"}).webhook_basic == ("am", "pw")


def test_secrets_repr_hides_the_tokens() -> None:
    """Logging a Secrets object never shows a token or password."""
    secrets = Secrets(
        webhook_token="s3cr3t-wh", webhook_basic=("am", "s3cr3t-pw"), admin_token="s3cr3t-admin"
    )
    text = repr(secrets) + str(secrets)
    assert "s3cr3t" not in text
    assert "***" in text


# --- exposure -------------------------------------------------------------------------


def test_listening_beyond_loopback_without_auth_is_refused() -> None:
    """0.0.0.0 with no webhook auth stops start-up with an error at ``listen``."""
    config = parse_config({"listen": "0.0.0.0:9095"})
    with pytest.raises(ConfigError) as info:
        check_exposure(config, Secrets())
    [(path, message)] = info.value.errors
    assert path == "listen"
    assert "beyond loopback" in message and "allow_insecure" in message


def test_listening_beyond_loopback_with_a_token_is_allowed() -> None:
    """A webhook token (or basic auth) makes a public listen address acceptable."""
    config = parse_config({"listen": "0.0.0.0:9095"})
    check_exposure(config, Secrets(webhook_token="t"))
    check_exposure(config, Secrets(webhook_basic=("am", "pw")))


def test_allow_insecure_permits_an_open_listener() -> None:
    """``allow_insecure: true`` is the explicit opt-out."""
    check_exposure(parse_config({"listen": "0.0.0.0:9095", "allow_insecure": True}), Secrets())


@pytest.mark.parametrize(
    "listen", ["127.0.0.1:9095", "localhost:9095", "[::1]:9095", "127.0.0.2:80"]
)
def test_loopback_needs_no_auth(listen: str) -> None:
    """Loopback addresses (v4, v6, localhost) need no webhook auth."""
    check_exposure(parse_config({"listen": listen}), Secrets())


# --- the command line -----------------------------------------------------------------


def write_config(tmp_path: Path, data: dict[str, Any]) -> Path:
    path = tmp_path / "healer.yml"
    path.write_text(yaml.safe_dump(data), encoding="utf-8")
    return path


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for var in (
        "HEALER_WEBHOOK_TOKEN",
        "HEALER_ADMIN_TOKEN",
        "HEALER_WEBHOOK_PASSWORD",
        "HEALER_CONFIG",
    ):
        monkeypatch.delenv(var, raising=False)


@pytest.mark.usefixtures("clean_env")
def test_check_config_accepts_a_valid_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """``healer check-config FILE`` exits 0 and says ok for a valid config."""
    path = write_config(
        tmp_path, {"allow": [{"kind": "docker", "name": "odoo-*"}], "rules": [rule("a"), rule("b")]}
    )
    assert main(["check-config", str(path)]) == 0
    out = capsys.readouterr().out
    assert f"{path}: ok (2 rules" in out
    assert "docker.restart" in out


@pytest.mark.usefixtures("clean_env")
def test_check_config_prints_every_error_with_its_path(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """An invalid file exits 1 and prints each error on its own line with its path."""
    path = write_config(
        tmp_path, {"rules": [rule("a"), rule("a"), rule("c", handler="docker.restrat")]}
    )
    assert main(["check-config", str(path)]) == 1
    err = capsys.readouterr().err
    assert f"{path}: 2 error(s)" in err
    assert "  rules[1].name: duplicate rule name 'a'" in err
    assert "  rules[2].handler: unknown handler 'docker.restrat' (known: docker.restart" in err


@pytest.mark.usefixtures("clean_env")
def test_check_config_refuses_an_open_listener(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """check-config applies the exposure check too (declared secrets only)."""
    path = write_config(tmp_path, {"listen": "0.0.0.0:9095"})
    assert main(["check-config", str(path)]) == 1
    assert "  listen: 0.0.0.0:9095 is beyond loopback" in capsys.readouterr().err


@pytest.mark.usefixtures("clean_env")
def test_check_config_accepts_a_declared_token_file_it_cannot_read(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Secret files live on the deployment host: check-config only needs them declared."""
    path = write_config(
        tmp_path, {"listen": "0.0.0.0:9095", "webhook": {"token_file": "/run/secrets/absent"}}
    )
    assert main(["check-config", str(path)]) == 0


@pytest.mark.usefixtures("clean_env")
def test_check_config_reports_invalid_yaml_with_a_position(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A YAML syntax error is reported with its line and column."""
    path = tmp_path / "bad.yml"
    path.write_text("rules:\n  - name: [unclosed\n", encoding="utf-8")
    assert main(["check-config", str(path)]) == 1
    assert "line 3, column 1: not valid YAML" in capsys.readouterr().err


@pytest.mark.usefixtures("clean_env")
def test_check_config_reports_a_missing_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A file that does not exist is an error, not a traceback."""
    assert main(["check-config", str(tmp_path / "absent.yml")]) == 1
    assert "cannot read" in capsys.readouterr().err


def test_version_prints_the_package_version(capsys: pytest.CaptureFixture[str]) -> None:
    """``healer --version`` prints ``healer <version>`` and exits 0."""
    with pytest.raises(SystemExit) as info:
        main(["--version"])
    assert info.value.code == 0
    assert capsys.readouterr().out == f"healer {healer.__version__}\n"


def test_postgres_rule_must_name_a_configured_database() -> None:
    """A rule for a PostgreSQL handler naming a database missing from ``databases:`` is a
    config error at start-up, not a refused heal at 3 a.m."""

    data = {
        "databases": {"odoo": {"dsn_env": "ODOO_DSN"}},
        "rules": [
            {
                "name": "ok",
                "match": 'alertname="A"',
                "handler": "postgres.terminate_idle",
                "params": {"database": "odoo"},
            },
            {
                "name": "typo",
                "match": 'alertname="B"',
                "handler": "postgres.terminate_idle",
                "params": {"database": "odo"},
            },
        ],
    }
    with pytest.raises(ConfigError) as err:
        parse_config(data, HandlerRegistry.from_entry_points())
    assert err.value.errors == [
        ("rules[1].params.database", "database 'odo' is not in databases: (odoo)")
    ]
