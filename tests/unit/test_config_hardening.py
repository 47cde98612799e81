"""A careless or hostile config file: every bad value is an error naming its path, never
a traceback, a hang or a silent reinterpretation (issue 12, Low 16 and 17)."""

from __future__ import annotations

import subprocess
import sys
import types
import typing
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic import BaseModel

from healer.cli import main
from healer.config import HealerConfig, load_config, parse_config
from healer.errors import ConfigError

# A list or dict of models gets one valid item, so that its fields can be reached.
_ITEMS: dict[str, Any] = {
    "notify": {"kind": "webhook", "url_env": "HOOK"},
    "rules": {"name": "r", "match": 'alertname="X"', "handler": "exec"},
    "databases": {"dsn": "host=/run/postgresql"},
    "engines": {"base_url": "unix:///run/docker.sock"},
}


def _models(annotation: Any) -> list[type[BaseModel]]:
    return [
        a
        for a in (*typing.get_args(annotation), annotation)
        if isinstance(a, type) and issubclass(a, BaseModel)
    ]


def _is_number(annotation: Any) -> bool:
    union = isinstance(annotation, types.UnionType) or typing.get_origin(annotation) is typing.Union
    args = {
        typing.get_args(a)[0] if typing.get_origin(a) is typing.Annotated else a
        for a in (typing.get_args(annotation) if union else (annotation,))
    }
    return bool(args & {int, float}) and bool not in args


def numeric_fields(
    model: type[BaseModel] = HealerConfig, path: tuple[Any, ...] = ()
) -> Iterator[tuple[tuple[Any, ...], dict[str, Any]]]:
    """Every number or duration field reachable from ``model``, as (path, a config that
    sets it to a placeholder): derived from the models, so a new field is covered."""
    for name, info in model.model_fields.items():
        ann = info.annotation
        origin = typing.get_origin(ann)
        if origin in (list, dict) and _models(typing.get_args(ann)[-1]):
            sub = _models(typing.get_args(ann)[-1])[0]
            key: Any = 0 if origin is list else "x"
            for subpath, _ in numeric_fields(sub, ()):
                yield (*path, name, key, *subpath), {}
        elif _models(ann):
            for subpath, _ in numeric_fields(_models(ann)[0], ()):
                yield (*path, name, *subpath), {}
        elif _is_number(ann):
            yield (*path, name), {}


def config_with(path: tuple[Any, ...], value: Any) -> dict[str, Any]:
    """A config that is valid except for ``value`` at ``path``."""
    data: dict[str, Any] = {}
    node: Any = data
    parts = list(path)
    while len(parts) > 1:
        part = parts.pop(0)
        if part in _ITEMS:  # a list or dict of models: one valid item, then into it
            key = parts.pop(0)
            item = dict(_ITEMS[part])
            node[part] = [item] if isinstance(key, int) else {key: item}
            node = item
        else:
            node = node.setdefault(part, {})
    node[parts[0]] = value
    return data


def dotted(path: tuple[Any, ...]) -> str:
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


FIELDS = sorted({p for p, _ in numeric_fields()}, key=str)
BAD = [float("nan"), float("inf"), float("-inf"), -1, 1e300, True, "x", "yes"]


def test_the_field_list_is_derived_from_the_models() -> None:
    """The walk finds numbers and durations at every depth (guards the walk itself)."""
    names = {dotted(p) for p in FIELDS}
    assert {
        "verify.timeout",
        "max_concurrent_heals",
        "safety.budget.max_actions",
        "rules[0].budget.window",
        "databases.x.pool_size",
        "notify[0].retries",
        "webhook.max_body",
        "prometheus.timeout",
        "rules[0].verify.timeout",
        "rules[0].min_firing",
        "prometheus.evaluation_interval",
    } <= names


@pytest.mark.parametrize("path", FIELDS, ids=dotted)
def test_every_numeric_field_refuses_nan_inf_negative_huge_bool_and_text(
    path: tuple[Any, ...], tmp_path: Path
) -> None:
    """For every number/duration field of the config models, each of ``.nan``, ``.inf``,
    ``-.inf``, -1, 1e300, ``true``, ``"x"`` and ``yes`` in the YAML file is an error
    naming that field's path (and only that path): no traceback, no silent default."""
    file = tmp_path / "healer.yml"
    for value in BAD:
        file.write_text(yaml.safe_dump(config_with(path, value)))
        with pytest.raises(ConfigError) as info:
            load_config(file)
        assert [where for where, _ in info.value.errors] == [dotted(path)], (
            value,
            info.value.errors,
        )


@pytest.mark.parametrize(
    "listen",
    [
        "127.0.0.1:0",
        "127.0.0.1:99999",
        "127.0.0.1:65536",
        "127.0.0.1:00000000000000000000080000",
        "$$$:80",
        "a..b:80",
        "-x:80",
        "[zz]:80",
        "127.0.0.1:",
        ":80",
        "host name:80",
        "x" * 300 + ":80",
    ],
)
def test_listen_needs_a_host_and_a_port_in_range(listen: str) -> None:
    """``listen`` must be a host name or IP address and a port 1-65535."""
    with pytest.raises(ConfigError) as info:
        parse_config({"listen": listen})
    assert [w for w, _ in info.value.errors] == ["listen"]


@pytest.mark.parametrize(
    "listen", ["127.0.0.1:9095", "[::1]:1", "localhost:65535", "0.0.0.0:80", "healer.internal:9095"]
)
def test_good_listen_values_pass(listen: str) -> None:
    """Host names, IPv4 and bracketed IPv6 with a port in range are accepted."""
    assert parse_config({"listen": listen}).listen == listen


@pytest.mark.parametrize(
    "data",
    [
        {"journal": ""},
        {"journal": "  "},
        {"webhook": {"token_file": ""}},
        {"admin": {"token_file": ""}},
        {"rules": [{"name": "", "match": 'a="b"', "handler": "x"}]},
        {"rules": [{"name": "r", "match": 'a="b"', "handler": ""}]},
        {"databases": {"d": {"dsn": ""}}},
        {"docker": {"base_url": ""}},
        {
            "verify": {},
            "rules": [{"name": "r", "match": 'a="b"', "handler": "x", "verify": {"query": ""}}],
        },
        {"prometheus": {"url": "http://"}},
    ],
)
def test_empty_strings_where_a_name_or_path_is_expected_are_errors(data: dict[str, Any]) -> None:
    """An empty name, handler, path, DSN or URL is an error (``""`` as a path would be
    the current directory)."""
    with pytest.raises(ConfigError) as info:
        parse_config(data)
    assert info.value.errors and all(where for where, _ in info.value.errors)


# --- the file itself --------------------------------------------------------------------

ALIAS_BOMB = """\
a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]
b: &b [*a,*a,*a,*a,*a,*a,*a,*a,*a]
c: &c [*b,*b,*b,*b,*b,*b,*b,*b,*b]
d: &d [*c,*c,*c,*c,*c,*c,*c,*c,*c]
e: &e [*d,*d,*d,*d,*d,*d,*d,*d,*d]
f: &f [*e,*e,*e,*e,*e,*e,*e,*e,*e]
g: &g [*f,*f,*f,*f,*f,*f,*f,*f,*f]
h: &h [*g,*g,*g,*g,*g,*g,*g,*g,*g]
i: &i [*h,*h,*h,*h,*h,*h,*h,*h,*h]
"""


@pytest.mark.parametrize(
    "text",
    [
        ALIAS_BOMB,
        "safety: &s {cooldown: 1m}\nrules: []\nx: *s\n",
        "base: &b {kind: docker}\nallow:\n  - <<: *b\n    name: web\n",
        "allow:\n  - &only {kind: docker}\n",
        "allow: !!binary aGVsbG8=\n" + "k: &k [1]\n",
    ],
)
def test_anchors_and_aliases_are_refused_with_their_line(
    text: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Any anchor or alias (the alias bomb, merge keys, a lone anchor) makes check-config
    fail at once with a line number, before anything is expanded."""
    file = tmp_path / "healer.yml"
    file.write_text(text)
    assert main(["check-config", str(file)]) == 1
    err = capsys.readouterr().err
    assert "anchors and aliases" in err and "line " in err and "Traceback" not in err


@pytest.mark.parametrize(
    ("text", "line"),
    [
        ("allow:\n  - {kind: docker}\nallow:\n  - {kind: exec}\n", 3),
        ("safety:\n  cooldown: 1m\n  cooldown: 0s\n", 3),
        (
            "rules:\n  - name: a\n    match: 'x=\"y\"'\n    handler: exec\n"
            "    params: {argv: [/bin/true], argv: [/bin/false]}\n",
            5,
        ),
        ("databases:\n  d: {dsn: x}\n  d: {dsn: y}\n", 3),
        ("1: a\n1: b\n", 2),
    ],
)
def test_duplicate_keys_at_any_level_are_errors(
    text: str, line: int, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A key given twice in one mapping, at any depth, is an error at the second one's
    line (PyYAML alone lets the last silently win)."""
    file = tmp_path / "healer.yml"
    file.write_text(text)
    assert main(["check-config", str(file)]) == 1
    err = capsys.readouterr().err
    assert f"line {line}," in err and "duplicate key" in err and "Traceback" not in err


@pytest.mark.parametrize(
    "raw",
    [
        b"listen: '127.0.0.1:9095'\njournal: /var/lib/h\xe9aler.db\n",
        "listen: '127.0.0.1:9095'\n".encode("utf-16"),
        "listen: '127.0.0.1:9095'\n".encode("utf-32"),
        b"\xff\xfe\xfd",
        b"listen: '127.0.0.1:9095'\n\xc0\xaf\n",
    ],
)
def test_a_file_that_is_not_utf8_is_one_error_naming_it(
    raw: bytes, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Latin-1, UTF-16/32 and overlong sequences: one error naming the file, no traceback."""
    file = tmp_path / "healer.yml"
    file.write_bytes(raw)
    assert main(["check-config", str(file)]) == 1
    err = capsys.readouterr().err
    assert "is not UTF-8" in err and str(file) in err and "Traceback" not in err


def test_serve_refuses_a_bad_file_with_the_same_lines(tmp_path: Path) -> None:
    """``healer serve`` (a real process) reads the file as check-config does: a non-UTF-8
    file, an alias and a duplicate key each exit 1 with one line, no traceback."""
    for raw in (
        b"journal: /var/lib/h\xe9aler.db\n",
        b"a: &x 1\nb: *x\n",
        b"listen: '127.0.0.1:1'\nlisten: '127.0.0.1:2'\n",
    ):
        file = tmp_path / "healer.yml"
        file.write_bytes(raw)
        proc = subprocess.run(
            [sys.executable, "-m", "healer", "serve", "--config", str(file)],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert proc.returncode == 1, proc.stderr
        assert str(file) in proc.stderr and "Traceback" not in proc.stderr


def test_a_deeply_nested_file_is_an_error(tmp_path: Path) -> None:
    """Tens of thousands of nested brackets are an error, not a RecursionError."""
    file = tmp_path / "healer.yml"
    file.write_text("x: " + "[" * 50000 + "]" * 50000 + "\n")
    with pytest.raises(ConfigError):
        load_config(file)
