"""Tokens never reach a terminal or a log, and a token that could not travel in an HTTP
header as it is (whitespace, control or non-ASCII characters inside) is refused where it
is loaded, naming its file or variable but never its value (issue 12, Low 9)."""

from __future__ import annotations

from pathlib import Path

import pytest

from healer.cli import main
from healer.config import parse_config, resolve_secrets
from healer.errors import ConfigError

SECRET_HEAD, SECRET_TAIL = "s3cretHEAD", "s3cretTAIL"
# Every kind of character that breaks a header or hides in one.
INSIDE = [
    "\n",
    "\r",
    "\r\n",
    "\t",
    " ",
    "\x00",
    "\x07",
    "\x0b",
    "\x0c",
    "\x1b",
    "\x7f",
    "\x85",
    "\u00a0",
    "\u2028",
    "\u200b",
    "\ufeff",
    "é",
    "\U0001f600",
]
CONFIG = parse_config(
    {
        "webhook": {
            "token_file": "/nonexistent/w",
            "basic_auth": {"username": "am", "password_file": "/nonexistent/p"},
        },
        "admin": {"token_file": "/nonexistent/a"},
    }
)


def _assert_hidden(text: str) -> None:
    assert SECRET_HEAD not in text and SECRET_TAIL not in text


@pytest.mark.parametrize("inside", INSIDE, ids=repr)
@pytest.mark.parametrize(
    ("key", "var"), [("webhook", "HEALER_WEBHOOK_TOKEN"), ("admin", "HEALER_ADMIN_TOKEN")]
)
def test_a_token_with_anything_but_visible_ascii_inside_is_refused_at_load(
    key: str, var: str, inside: str, tmp_path: Path
) -> None:
    """From a file or from the environment, webhook or admin: the error names the file or
    variable and shows no part of the token."""
    token = SECRET_HEAD + inside + SECRET_TAIL
    file = tmp_path / "token"
    file.write_text(token + "\n")
    config = parse_config({key: {"token_file": str(file)}})
    for env, where in (({}, str(file)), ({var: token}, f"${var}")):
        with pytest.raises(ConfigError) as info:
            resolve_secrets(config, env)
        text = str(info.value) + repr(info.value.errors)
        assert where in text and "value hidden" in text
        _assert_hidden(text)


@pytest.mark.parametrize(
    "inside",
    [
        i
        for i in INSIDE
        if i not in (" ", "\u00a0", "é", "\U0001f600", "\u200b", "\ufeff", "\u2028", "\x85")
    ],
    ids=repr,
)
def test_a_basic_auth_password_with_a_control_character_is_refused(inside: str) -> None:
    """A password may hold spaces, never a control character; the error hides it."""
    with pytest.raises(ConfigError) as info:
        resolve_secrets(
            CONFIG,
            {
                "HEALER_WEBHOOK_TOKEN": "ok",
                "HEALER_ADMIN_TOKEN": "ok",
                "HEALER_WEBHOOK_PASSWORD": SECRET_HEAD + inside + SECRET_TAIL,
            },
        )
    assert "$HEALER_WEBHOOK_PASSWORD" in str(info.value)
    _assert_hidden(str(info.value))


@pytest.mark.parametrize("text", ["tok\n", "tok\r\n", "  tok  \n\n", "\ttok"])
def test_surrounding_whitespace_in_a_token_file_is_fine(text: str, tmp_path: Path) -> None:
    """A trailing newline (or any whitespace around the token) is dropped, not refused."""
    file = tmp_path / "token"
    file.write_text(text)
    secrets = resolve_secrets(parse_config({"admin": {"token_file": str(file)}}), {})
    assert secrets.admin_token == "tok"


def test_a_token_file_that_is_not_utf8_is_an_error_without_the_value(tmp_path: Path) -> None:
    """Bytes that are not UTF-8 are a ConfigError naming the file, not a traceback."""
    file = tmp_path / "token"
    file.write_bytes(SECRET_HEAD.encode() + b"\xff" + SECRET_TAIL.encode())
    with pytest.raises(ConfigError) as info:
        resolve_secrets(parse_config({"admin": {"token_file": str(file)}}), {})
    assert str(file) in str(info.value)
    _assert_hidden(str(info.value))


@pytest.mark.parametrize("inside", INSIDE, ids=repr)
@pytest.mark.parametrize("command", [["circuits"], ["resume"], ["pause", "--for", "1m"]])
def test_the_admin_cli_never_prints_a_token_it_cannot_send(
    command: list[str],
    inside: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """``healer pause|resume|circuits`` with such a token (file or env var) exits 2 with a
    line naming where the token came from, and no part of it, before any request."""
    token = SECRET_HEAD + inside + SECRET_TAIL
    file = tmp_path / "token"
    file.write_text(token + "\n")
    url = ["--url", "http://127.0.0.1:9"]  # nothing listens there; never reached anyway
    assert main([*command, "--token-file", str(file), *url]) == 2
    out = capsys.readouterr()
    assert str(file) in out.err
    _assert_hidden(out.out + out.err)
    if "\x00" in token:
        return  # no environment can hold a NUL
    monkeypatch.setenv("HEALER_ADMIN_TOKEN", token)
    assert main([*command, *url]) == 2
    out = capsys.readouterr()
    assert "$HEALER_ADMIN_TOKEN" in out.err
    _assert_hidden(out.out + out.err)


def test_a_connection_error_does_not_print_the_token(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """A valid token and an unreachable daemon: exit 2, and the token is not in the line."""
    monkeypatch.setenv("HEALER_ADMIN_TOKEN", SECRET_HEAD + SECRET_TAIL)
    assert main(["circuits", "--url", "http://127.0.0.1:9"]) == 2
    out = capsys.readouterr()
    assert "cannot reach healer" in out.err
    _assert_hidden(out.out + out.err)


def test_check_config_checks_a_token_variable_it_can_see(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """check-config refuses a token variable with a newline inside, hiding the value."""
    monkeypatch.setenv("HEALER_WEBHOOK_TOKEN", SECRET_HEAD + "\n" + SECRET_TAIL)
    config = tmp_path / "healer.yml"
    config.write_text("listen: '127.0.0.1:9095'\n")
    assert main(["check-config", str(config)]) == 1
    out = capsys.readouterr()
    assert "$HEALER_WEBHOOK_TOKEN" in out.err
    _assert_hidden(out.out + out.err)
