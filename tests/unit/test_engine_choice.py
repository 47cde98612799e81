"""Named Docker engines without any engine answering: the ``docker:`` config, target keys,
which engine a heal acts on, allowlist ``engine`` globs, per-engine locks and
``max_concurrent_actions``. The no-op handler names ``docker`` targets here and never
calls an engine (its adapters stay unconnected); tests/integration/test_docker_engines.py
runs the same on real dockerds."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, ClassVar

import pytest

from healer.api import Target
from healer.config import Secrets, load_config, parse_config, resolve_secrets
from healer.docker_engines import engine_for
from healer.errors import ConfigError, InvalidParams
from healer.plugins import HandlerRegistry
from tests.support.inprocess.gates import until
from tests.support.inprocess.inproc import ADMIN, InProcessHealer, running_healer
from tests.support.inprocess.noop import NAME, NoopForTests
from tests.support.inprocess.payloads import alert
from tests.support.inprocess.stack import REPO

NOWHERE = "unix:///nonexistent/docker.sock"


def _errors(data: dict[str, Any]) -> dict[str, str]:
    with pytest.raises(ConfigError) as caught:
        parse_config(data)
    return dict(caught.value.errors)


@pytest.mark.parametrize(
    ("docker", "where", "says"),
    [
        ({"engines": {"-db": {"base_url": NOWHERE}}}, "docker.engines.-db.[key]", "pattern"),
        ({"engines": {"a/b": {"base_url": NOWHERE}}}, "docker.engines.a/b.[key]", "pattern"),
        (
            {"engines": {"db": {"base_url": "http://db:2375"}}},
            "docker.engines.db",
            "unix://, tcp:// or ssh://",
        ),
        (
            {"engines": {"db": {"base_url": "tcp://10.0.0.5:2375"}}},
            "docker.engines.db",
            "plain tcp:// to '10.0.0.5'",
        ),
        (
            {"engines": {"db": {"base_url": "tcp://db:2376", "cert_file": "/c", "key_file": "/k"}}},
            "docker.engines.db",
            "all three of ca_file",
        ),
        (
            {
                "engines": {
                    "db": {
                        "base_url": NOWHERE,
                        "ca_file": "/a",
                        "cert_file": "/c",
                        "key_file": "/k",
                    }
                }
            },
            "docker.engines.db",
            "go with a tcp:// base_url",
        ),
        (
            {"base_url": NOWHERE, "engines": {"default": {"base_url": NOWHERE}}},
            "docker",
            "not both",
        ),
    ],
)
def test_engine_config_errors(docker: dict[str, Any], where: str, says: str) -> None:
    """Each wrong ``docker:`` is an error at its path: names outside the pattern, a
    scheme healer does not speak, plain TCP beyond loopback, TLS half given or on a
    socket, ``default`` given twice."""
    errors = _errors({"docker": docker})
    assert where in errors, errors
    assert says in errors[where], errors


def test_plain_tcp_is_allowed_on_loopback_or_when_said_so() -> None:
    """Plain ``tcp://`` passes on loopback, or with ``allow_plain_tcp: true`` (a socket
    proxy on a private network); TLS passes anywhere. ``docker.base_url`` keeps taking
    plain tcp:// (as before), with a start-up warning."""
    config = parse_config(
        {
            "docker": {
                "base_url": "tcp://docker-proxy:2375",
                "engines": {
                    "local": {"base_url": "tcp://127.0.0.1:2375"},
                    "proxy": {"base_url": "tcp://10.0.0.5:2375", "allow_plain_tcp": True},
                    "db": {
                        "base_url": "tcp://db.internal:2376",
                        "ca_file": "/etc/healer/ca.pem",
                        "cert_file": "/etc/healer/cert.pem",
                        "key_file": "/etc/healer/key.pem",
                    },
                },
            }
        }
    )
    assert list(config.docker.all_engines()) == ["default", "local", "proxy", "db"]
    [warning] = config.docker.plain_tcp_warnings()
    assert "docker-proxy" in warning


def test_which_engines_exist() -> None:
    """No ``docker:``: one engine, ``default``, the environment's. ``engines:`` alone:
    only those (no hidden local engine beside three remote ones). ``base_url``: it is
    ``default``, beside the named ones."""
    assert parse_config({}).docker.all_engines() == {"default": None}
    named = parse_config({"docker": {"engines": {"a": {"base_url": NOWHERE}}}})
    assert list(named.docker.all_engines()) == ["a"]
    both = parse_config({"docker": {"base_url": NOWHERE, "engines": {"a": {"base_url": NOWHERE}}}})
    assert list(both.docker.all_engines()) == ["default", "a"]


def test_a_rule_naming_an_unknown_engine_is_a_config_error() -> None:
    """A rule's literal ``engine`` must be configured; one quoting alert data is checked
    per heal (it cannot be known before)."""
    rule = {"name": "r", "match": 'alertname="X"', "handler": "exec"}
    data = {
        "docker": {"engines": {"a": {"base_url": NOWHERE}}},
        "rules": [{**rule, "engine": "b"}, {**rule, "name": "s", "engine": "{{ labels.host }}"}],
    }
    errors = _errors(data)
    assert errors == {"rules[0].engine": "unknown engine 'b' (known: a)"}


@pytest.mark.parametrize(
    ("content", "says"), [(None, "cannot read"), (b"not a certificate\n", "is not a PEM file")]
)
def test_tls_files_are_checked_at_start(tmp_path: Path, content: bytes | None, says: str) -> None:
    """A missing or non-PEM TLS file stops start-up (``resolve_secrets``, as for every
    other ``*_file``) with its config path and file name."""
    pem = b"-----BEGIN CERTIFICATE-----\nx\n-----END CERTIFICATE-----\n"
    for name in ("ca.pem", "cert.pem"):
        (tmp_path / name).write_bytes(pem)
    if content is not None:
        (tmp_path / "key.pem").write_bytes(content)
    engine = {
        "base_url": "tcp://db:2376",
        "ca_file": str(tmp_path / "ca.pem"),
        "cert_file": str(tmp_path / "cert.pem"),
        "key_file": str(tmp_path / "key.pem"),
    }
    config = parse_config({"docker": {"engines": {"db": engine}}})
    with pytest.raises(ConfigError) as caught:
        resolve_secrets(config, {})
    [(where, message)] = caught.value.errors
    assert where == "docker.engines.db.key_file"
    assert says in message and str(tmp_path / "key.pem") in message


def test_target_keys_and_fields_name_the_engine() -> None:
    """``docker:<c>`` is ``docker:default/<c>``: a target on ``default`` (or not yet on
    an engine) keeps its old key; on any other engine the key names it. The allowlist
    sees ``engine`` as a field once set."""
    assert Target("docker", "web-1").key == "docker:web-1"
    assert Target("docker", "web-1", engine="default").key == "docker:web-1"
    assert Target("docker", "web-1", engine="db1").key == "docker:db1/web-1"
    assert Target("docker", "web-1", engine="db1").fields()["engine"] == "db1"
    assert "engine" not in Target("docker", "web-1").fields()


def test_engine_for_substitutes_alert_data_then_checks_the_name() -> None:
    """No engine: ``default``. A template takes the label; what comes out must be an
    engine name, and a label the alert lacks is an error, never an empty name."""
    assert engine_for(None, {}, {}) == "default"
    assert engine_for("{{ labels.host }}", {"host": "db1"}, {}) == "db1"
    assert engine_for("h-{{ labels.n }}", {"n": "2"}, {}) == "h-2"
    for labels in ({"host": "../etc"}, {"host": ""}, {"host": "a b"}, {}):
        with pytest.raises(InvalidParams):
            engine_for("{{ labels.host }}", labels, {})


def _config(tmp_path: Path, **engine: Any) -> dict[str, Any]:
    """``Poke`` -> the no-op handler (naming ``docker:<labels.target>``) on engine
    ``labels.host``; engines ``a`` and ``b`` (never connected); only ``web-*`` on
    engine ``a`` allowed."""
    return {
        "journal": str(tmp_path / "journal.db"),
        "prometheus": {"url": "http://127.0.0.1:9", "timeout": "0.2s"},
        "verify": {"stable_for": "0s", "timeout": "0.2s"},
        "docker": {"engines": {"a": {"base_url": NOWHERE, **engine}, "b": {"base_url": NOWHERE}}},
        "allow": [{"kind": "docker", "engine": "a", "name": "web-*"}],
        "rules": [
            {
                "name": "poke",
                "match": 'alertname="Poke"',
                "handler": NAME,
                "engine": "{{ labels.host }}",
                "params": {"target": "{{ labels.target }}"},
            }
        ],
    }


class DockerNoop(NoopForTests):
    """``test.noop`` as a Docker handler: names ``docker:<target>``, requires docker (so
    its rules may name an engine), and never calls an engine."""

    kind: ClassVar[str] = "docker"
    requires: ClassVar[frozenset[str]] = frozenset({"docker"})


@asynccontextmanager
async def _healer(tmp_path: Path, **engine: Any) -> AsyncIterator[InProcessHealer]:
    noop = DockerNoop(record=True)
    handlers = HandlerRegistry.from_entry_points((NAME, noop))
    config = _config(tmp_path, **engine)
    async with running_healer(config, handlers=handlers, secrets=Secrets(admin_token=ADMIN)) as h:
        try:
            yield h
        finally:
            if noop.gate is not None:
                noop.gate.set()
            await h.idle()


async def _poke(h: InProcessHealer, host: str, target: str) -> str:
    [heal_id] = await h.fire(alert("Poke", {"host": host, "target": target}))
    return heal_id


async def test_allowlist_engine_globs_and_per_engine_targets(tmp_path: Path) -> None:
    """The heal's engine is on its targets: ``web-1`` on engine ``a`` is allowed and
    keyed ``docker:a/web-1``; the same name on ``b`` is outside the allowlist
    (``engine: a``) and refused; an engine nobody configured is refused naming it."""
    async with _healer(tmp_path) as h:
        on_a = await h.wait_for_outcome(await _poke(h, "a", "web-1"))
        on_b = await h.wait_for_outcome(await _poke(h, "b", "web-1"))
        on_c = await h.wait_for_outcome(await _poke(h, "c", "web-1"))
    assert on_a["outcome"] == "unverified", on_a["reason"]
    assert on_a["targets"] == ["docker:a/web-1"]
    assert on_b["outcome"] == "refused"
    assert on_b["reason"] == "docker:b/web-1 is outside the allowlist"
    assert on_c["outcome"] == "refused"
    assert on_c["reason"] == "docker engine 'c' is not configured (docker.engines: a, b)"


async def test_one_container_name_on_two_engines_is_two_targets(tmp_path: Path) -> None:
    """``web-1`` on ``a`` and ``web-1`` on ``b`` are different targets: while a heal acts
    on the first, a heal of the second is not suppressed as in flight (it is refused by
    the allowlist, after the check, like any target outside it)."""
    async with _healer(tmp_path) as h:
        h.noop.gate = asyncio.Event()
        first = await _poke(h, "a", "web-1")
        await until(lambda: len(h.noop.acts) == 1, what="the first act")
        second = await h.wait_for_outcome(await _poke(h, "b", "web-1"))
        h.noop.gate.set()
        done = await h.wait_for_outcome(first)
    assert second["outcome"] == "refused", second["reason"]
    assert done["outcome"] == "unverified"


async def test_max_concurrent_actions_per_engine(tmp_path: Path) -> None:
    """Engine ``a`` with ``max_concurrent_actions: 1``: of two heals on two of its
    containers, the second reaches ``acting`` but does not act until the first's
    action ends; then it acts too."""
    async with _healer(tmp_path, max_concurrent_actions=1) as h:
        h.noop.gate = asyncio.Event()
        first = await _poke(h, "a", "web-1")
        await until(lambda: len(h.noop.acts) == 1, what="the first act")
        second = await _poke(h, "a", "web-2")

        async def acting() -> bool:
            heal = await h.journal.get_heal(second)
            return heal is not None and heal["phase"] == "acting"

        await until(acting, what="the second heal acting")
        assert [p.target for p in h.noop.acts] == ["web-1"]
        h.noop.gate.set()
        outcomes = [(await h.wait_for_outcome(i))["outcome"] for i in (first, second)]
    assert sorted(p.target for p in h.noop.acts) == ["web-1", "web-2"]
    assert outcomes == ["unverified", "unverified"]


async def test_a_manual_heal_names_its_engine(tmp_path: Path) -> None:
    """``POST /api/v1/heals`` with a handler takes ``engine`` (journaled with the heal):
    an engine nobody configured ends it refused; ``engine`` with a rule is a 422 (the
    rule brings its own)."""
    async with _healer(tmp_path) as h:
        body = {"handler": NAME, "params": {"target": "web-1"}, "engine": "zz"}
        resp = await h.client.post("/api/v1/heals", json=body, headers=h.admin_headers)
        assert resp.status_code == 202, resp.text
        heal = await h.wait_for_outcome(resp.json()["heal_id"])
        on_a = {**body, "engine": "a"}
        resp = await h.client.post("/api/v1/heals", json=on_a, headers=h.admin_headers)
        ok = await h.wait_for_outcome(resp.json()["heal_id"])
        rule = {"rule": "poke", "labels": {"alertname": "Poke"}, "engine": "a"}
        refused = await h.client.post("/api/v1/heals", json=rule, headers=h.admin_headers)
    assert heal["outcome"] == "refused"
    assert "'zz' is not configured" in heal["reason"]
    assert ok["targets"] == ["docker:a/web-1"]
    assert refused.status_code == 422


def test_the_three_host_example_is_valid() -> None:
    """examples/hosts/healer.yml validates with the real handlers: three TLS engines
    (the files where make-certs.sh puts them), rules that name their engine."""
    config = load_config(
        REPO / "examples" / "hosts" / "healer.yml", HandlerRegistry.from_entry_points()
    )
    engines = config.docker.all_engines()
    assert list(engines) == ["app1", "app2", "db1"]
    for engine in engines.values():
        assert engine is not None and engine.tls
        assert str(engine.cert_file).endswith("/healer/cert.pem")
    assert [r.engine for r in config.rules] == ["{{ labels.host }}", "db1"]


def test_rules_and_engines_must_fit_their_handler() -> None:
    """With the real handlers: ``engine`` on a rule whose handler uses no Docker is an
    error, and so is a Docker rule without ``engine`` when no engine ``default`` exists
    (it could never act)."""
    engines = {"engines": {"a": {"base_url": NOWHERE}}}
    restart = {"name": "r", "match": 'alertname="X"', "handler": "docker.restart"}
    run = {"name": "e", "match": 'alertname="Y"', "handler": "exec", "engine": "a"}
    run["params"] = {"argv": ["/usr/local/bin/fix"]}
    restart["params"] = {"containers": ["web-1"]}
    with pytest.raises(ConfigError) as caught:
        parse_config(
            {"docker": engines, "rules": [restart, run]}, HandlerRegistry.from_entry_points()
        )
    errors = dict(caught.value.errors)
    assert "there is no engine 'default'" in errors["rules[0].engine"], errors
    assert errors["rules[1].engine"] == "handler 'exec' does not use docker"
    fine = parse_config(
        {"docker": engines, "rules": [{**restart, "engine": "a"}]},
        HandlerRegistry.from_entry_points(),
    )
    assert fine.rules[0].engine == "a"
