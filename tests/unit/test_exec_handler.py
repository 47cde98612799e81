"""The ``exec`` handler on real processes: argv never reaches a shell, the script sees the
alert (and nothing of the daemon's environment), a timeout kills the whole process group,
failures carry the exit code and stderr tail, output is read concurrently and truncated.
"""

from __future__ import annotations

import asyncio
import os
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from handlers.exec import TAIL_BYTES, Exec, ExecParams, env_name
from healer.api import ActionFailed, InvalidParams
from healer.plugins import HandlerRegistry
from tests.support.env import wait_until
from tests.support.inprocess.healctx import heal_context
from tests.support.inprocess.inproc import running_healer
from tests.support.inprocess.payloads import alert_payload

EXEC = Exec()


def script(path: Path, body: str, *, shebang: str = "#!/bin/sh") -> Path:
    """An executable script at ``path`` (parents created)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(f"{shebang}\n{body}\n", encoding="utf-8")
    path.chmod(0o755)
    return path


def params(*argv: str | Path, **kw: Any) -> ExecParams:
    return ExecParams.model_validate({"argv": [str(a) for a in argv], **kw})


def env_of(stdout: str) -> dict[str, str]:
    return dict(line.split("=", 1) for line in stdout.splitlines() if "=" in line)


def gone(pid: int) -> bool:
    """True when ``pid`` no longer runs (absent, or a zombie nobody has reaped yet)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return True
    return stat.rsplit(")", 1)[1].split()[0] == "Z"


async def run(p: ExecParams, **ctx_kw: Any) -> tuple[dict[str, Any], Any]:
    """check + act like the engine does; returns (act details, recorder)."""
    ctx, recorder = heal_context(**ctx_kw)
    check = await EXEC.check(ctx, p)
    result = await EXEC.act(ctx, p, check)
    return result.details, recorder


# --- argv is data ---------------------------------------------------------------------


async def test_shell_metacharacters_stay_literal(tmp_path: Path) -> None:
    """``$(...)``, backticks, ``;``, ``|``, globs and spaces reach the script as they are,
    one argv item each: no shell ever runs them, so no file gets created."""
    pwned = [tmp_path / f"pwned{i}" for i in range(4)]
    hostile = [
        f"$(touch {pwned[0]})",
        f"; touch {pwned[1]}",
        f"`touch {pwned[2]}`",
        f"x || touch {pwned[3]} &",
        "a b  c",
        "*",
        "\n",
        "'\"",
        "-rf",
    ]
    echo = script(tmp_path / "echo.sh", 'for a in "$@"; do printf "[%s]" "$a"; done')
    details, _ = await run(params(echo, *hostile))
    assert details["stdout_tail"] == "".join(f"[{a}]" for a in hostile)
    assert not any(p.exists() for p in pwned)


@pytest.mark.parametrize(
    "argv, why",
    [
        ([], "at least 1 item"),
        (["relative/script.sh"], "absolute path"),
        (["/opt/runbooks/../../bin/sh"], "'..'"),
        (["/bin/echo", "a\x00b"], "NUL"),
        (["/bin/echo\x00"], "NUL"),
    ],
)
def test_params_refuse_unsafe_argv(argv: list[str], why: str) -> None:
    """argv must be non-empty, start with an absolute path without '..', and hold no NUL
    (a params error ends the heal ``refused`` before anything runs)."""
    with pytest.raises(ValidationError, match=why):
        ExecParams.model_validate({"argv": argv})


@pytest.mark.parametrize(
    "extra, why",
    [
        ({"cwd": "relative"}, "absolute path"),
        ({"env": {"HEALER_RULE": "spoofed"}}, "reserved"),
        ({"env": {"BAD KEY": "x"}}, "not a variable name"),
        ({"env": {"X": "a\x00b"}}, "NUL"),
        ({"timeout": "0s"}, "greater than 0"),
        ({"shell": True}, "Extra inputs are not permitted"),
    ],
)
def test_params_refuse_bad_options(extra: dict[str, Any], why: str) -> None:
    """cwd must be absolute, env keys plain names outside HEALER_*, no unknown keys."""
    with pytest.raises(ValidationError, match=why):
        ExecParams.model_validate({"argv": ["/bin/true"], **extra})


# --- check: what the allowlist judges -------------------------------------------------------


async def test_check_names_the_resolved_script_as_target(tmp_path: Path) -> None:
    """A symlinked argv[0] is resolved: the target is the file that would really run, with
    the resolved cwd as an attribute for the allowlist."""
    real = script(tmp_path / "real" / "fix.sh", "exit 0")
    (tmp_path / "runbooks").mkdir()
    link = tmp_path / "runbooks" / "fix.sh"
    link.symlink_to(real)
    ctx, _ = heal_context()
    check = await EXEC.check(ctx, params(link, "x", cwd=str(tmp_path / "runbooks")))
    [target] = check.targets
    assert (target.kind, target.name) == ("exec", str(real))
    assert target.attrs == {"cwd": str(tmp_path / "runbooks")}
    assert check.evidence["argv"] == [str(link), "x"]


@pytest.mark.parametrize("mode, why", [(0o644, "not executable"), (0o777, "world-writable")])
async def test_check_refuses_scripts_it_must_not_run(tmp_path: Path, mode: int, why: str) -> None:
    """A script that is not executable, or that anyone could rewrite (made so after the
    config was loaded), is refused at check."""
    path = script(tmp_path / "fix.sh", "exit 0")
    p = params(path)
    path.chmod(mode)
    ctx, _ = heal_context()
    with pytest.raises(InvalidParams, match=why):
        await EXEC.check(ctx, p)


async def test_check_refuses_missing_script_and_cwd(tmp_path: Path) -> None:
    """A missing argv[0], a directory as argv[0] or a missing cwd is refused at check."""
    ctx, _ = heal_context()
    with pytest.raises(InvalidParams, match="No such file"):
        await EXEC.check(ctx, params(tmp_path / "nope.sh"))
    with pytest.raises(InvalidParams, match="not a regular file"):
        await EXEC.check(ctx, params(tmp_path))
    ok = script(tmp_path / "ok.sh", "exit 0")
    with pytest.raises(InvalidParams, match="not an existing directory"):
        await EXEC.check(ctx, params(ok, cwd=str(tmp_path / "missing")))


# --- environment ------------------------------------------------------------------------


async def test_the_script_sees_the_alert_in_its_environment(tmp_path: Path) -> None:
    """Labels and annotations arrive as HEALER_LABEL_* / HEALER_ANNOTATION_* (upper-cased,
    other characters -> _), with heal id, rule, alertname, fingerprint and dry-run flag,
    plus the rule's static env."""
    labels = {"alertname": "DiskFull", "compose-service": "odoo web", "mountpoint": "/var"}
    details, _ = await run(
        params("/usr/bin/env", env={"ODOO_DB": "prod"}),
        labels=labels,
        annotations={"summary": "$(rm -rf /)"},
    )
    env = env_of(details["stdout_tail"])
    assert env["HEALER_LABEL_ALERTNAME"] == "DiskFull"
    assert env["HEALER_LABEL_COMPOSE_SERVICE"] == "odoo web"
    assert env["HEALER_LABEL_MOUNTPOINT"] == "/var"
    assert env["HEALER_ANNOTATION_SUMMARY"] == "$(rm -rf /)"
    assert env["HEALER_HEAL_ID"] == "00000000000000aa"
    assert env["HEALER_RULE"] == "test-rule"
    assert env["HEALER_ALERTNAME"] == "DiskFull"
    assert env["HEALER_FINGERPRINT"] == "fedcba9876543210"
    assert env["HEALER_DRY_RUN"] == "0"
    assert env["ODOO_DB"] == "prod"


def test_env_names_are_sanitised() -> None:
    """Label names map to variable names: upper case, anything outside [A-Z0-9_] -> _."""
    assert env_name("HEALER_LABEL_", "compose.project-x") == "HEALER_LABEL_COMPOSE_PROJECT_X"
    assert env_name("HEALER_ANNOTATION_", "runbook_url") == "HEALER_ANNOTATION_RUNBOOK_URL"


async def test_the_daemon_environment_is_not_passed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The script gets PATH and LANG from the daemon and nothing else: never its tokens."""
    monkeypatch.setenv("HEALER_WEBHOOK_TOKEN", "webhook-s3cret")
    monkeypatch.setenv("HEALER_ADMIN_TOKEN", "admin-s3cret")
    monkeypatch.setenv("PGPASSWORD", "pg-s3cret")
    monkeypatch.setenv("LANG", "C.UTF-8")
    details, _ = await run(params("/usr/bin/env"))  # a manual heal: no alert
    env = env_of(details["stdout_tail"])
    assert "s3cret" not in details["stdout_tail"]
    assert set(env) == {
        "PATH",
        "LANG",
        "HEALER_HEAL_ID",
        "HEALER_RULE",
        "HEALER_ALERTNAME",
        "HEALER_FINGERPRINT",
        "HEALER_DRY_RUN",
    }
    assert env["PATH"] == os.environ["PATH"]
    assert env["HEALER_ALERTNAME"] == env["HEALER_FINGERPRINT"] == ""


async def test_a_label_with_a_nul_byte_is_left_out(tmp_path: Path) -> None:
    """A NUL cannot live in an environment value: that one variable is skipped and the
    skip is recorded; the script still runs."""
    details, recorder = await run(
        params("/usr/bin/env"), labels={"alertname": "X", "evil": "a\x00b"}
    )
    env = env_of(details["stdout_tail"])
    assert "HEALER_LABEL_EVIL" not in env and env["HEALER_LABEL_ALERTNAME"] == "X"
    assert recorder.of("note") == [
        {"env_skipped": ["HEALER_LABEL_EVIL"], "why": "NUL in the value"}
    ]


async def test_cwd_is_where_the_script_runs(tmp_path: Path) -> None:
    """``cwd`` is the script's working directory."""
    (tmp_path / "work").mkdir()
    details, _ = await run(params("/bin/pwd", cwd=str(tmp_path / "work")))
    assert details["stdout_tail"].strip() == str(tmp_path / "work")


# --- outcome of the run ------------------------------------------------------------------


async def test_success_records_exit_code_duration_and_tails(tmp_path: Path) -> None:
    """Exit 0 is success; details carry exit code, duration and both output tails."""
    path = script(tmp_path / "ok.sh", 'echo "restarted 2 workers"; echo "warn: slow" >&2')
    details, _ = await run(params(path))
    assert details["exit_code"] == 0 and details["timed_out"] is False
    assert details["stdout_tail"] == "restarted 2 workers\n"
    assert details["stderr_tail"] == "warn: slow\n"
    assert details["seconds"] >= 0 and details["truncated"] is False


async def test_nonzero_exit_fails_with_the_stderr_tail(tmp_path: Path) -> None:
    """A non-zero exit raises ActionFailed naming the exit code and the end of stderr; the
    full tails are recorded in the timeline."""
    path = script(
        tmp_path / "bad.sh",
        'echo "checking"; echo "first problem" >&2; echo "disk still full" >&2; exit 3',
    )
    ctx, recorder = heal_context()
    p = params(path)
    check = await EXEC.check(ctx, p)
    with pytest.raises(ActionFailed) as info:
        await EXEC.act(ctx, p, check)
    assert "exit code 3" in info.value.message
    assert info.value.message.endswith("stderr: first problem\ndisk still full")
    [failed] = recorder.of("exec_failed")
    assert failed["exit_code"] == 3 and failed["stdout_tail"] == "checking\n"


async def test_huge_output_is_read_concurrently_and_truncated(tmp_path: Path) -> None:
    """Megabytes on both pipes never block the script (stderr is filled first, far past a
    pipe buffer); only the last 4 KiB of each are kept, with the byte counts."""
    body = (
        "import sys\n"
        "sys.stderr.write('e' * 3_000_000 + 'ERR-END')\n"
        "sys.stdout.write('o' * 5_000_000 + 'OUT-END')\n"
    )
    path = script(tmp_path / "chatty.py", body, shebang=f"#!{sys.executable}")
    details, _ = await run(params(path, timeout="60s"))
    assert details["exit_code"] == 0
    assert details["stdout_bytes"] == 5_000_007 and details["stderr_bytes"] == 3_000_007
    assert len(details["stdout_tail"]) == len(details["stderr_tail"]) == TAIL_BYTES
    assert details["stdout_tail"].endswith("oOUT-END")
    assert details["stderr_tail"].endswith("eERR-END")
    assert details["truncated"] is True


async def test_undecodable_output_is_replaced_not_fatal(tmp_path: Path) -> None:
    """Bytes that are not UTF-8 show up as U+FFFD instead of failing the heal."""
    path = script(tmp_path / "bin.sh", r"printf 'ok\377\376done'")
    details, _ = await run(params(path))
    assert details["stdout_tail"] == "ok\ufffd\ufffddone"


async def _time_out(tmp_path: Path, name: str, body: str) -> dict[str, Any]:
    """Run script ``body`` (``{pidfile}``: where it writes its child's pid) with a 0.5 s
    timeout: the act fails "timed out", and the script and its child are gone (waited
    for, bounded). Returns the ``exec_failed`` record."""
    pidfile = tmp_path / "child.pid"
    path = script(tmp_path / name, body.format(pidfile=pidfile))
    ctx, recorder = heal_context()
    p = params(path, timeout="0.5s")
    check = await EXEC.check(ctx, p)
    with pytest.raises(ActionFailed, match=r"timed out after 0.5s"):
        await EXEC.act(ctx, p, check)
    child = int(pidfile.read_text())
    [failed] = recorder.of("exec_failed")
    wait_until(
        lambda: gone(child) and gone(failed["pid"]),
        timeout=10,
        what=f"{name} and its child to be gone",
    )
    return failed


async def test_timeout_kills_the_whole_process_group(tmp_path: Path) -> None:
    """On timeout the script and the child it spawned are both killed, and the heal fails
    with "timed out after Ns"."""
    failed = await _time_out(tmp_path, "hang.sh", "sleep 300 & echo $! > {pidfile}; wait")
    assert failed["timed_out"] is True


async def test_a_group_ignoring_sigterm_gets_sigkill(tmp_path: Path) -> None:
    """A script (and child) ignoring SIGTERM are SIGKILLed after the grace period."""
    failed = await _time_out(
        tmp_path,
        "stubborn.sh",
        "trap '' TERM; sleep 300 & echo $! > {pidfile}; wait; wait; sleep 300",
    )
    assert failed["exit_code"] == -9


async def test_a_cancelled_heal_kills_the_process_group(tmp_path: Path) -> None:
    """When the heal is cancelled (healer shutting down), the script's group is killed
    rather than left running unsupervised."""
    pidfile = tmp_path / "child.pid"
    path = script(
        tmp_path / "hang.sh",
        f"sleep 300 & echo $! > {pidfile}.tmp; mv {pidfile}.tmp {pidfile}; wait",
    )
    ctx, _ = heal_context()
    p = params(path, timeout="300s")
    check = await EXEC.check(ctx, p)
    task = asyncio.create_task(EXEC.act(ctx, p, check))
    deadline = time.monotonic() + 10
    while not pidfile.exists():
        assert time.monotonic() < deadline, "the script never started its child"
        await asyncio.sleep(0.02)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    child = int(pidfile.read_text())
    wait_until(lambda: gone(child), timeout=10, what="the child to be gone")


async def test_a_background_child_holding_the_pipes_does_not_hang_the_heal(tmp_path: Path) -> None:
    """A script that exits 0 but leaves a child holding stdout open ends the heal after a
    short drain; the child is not the heal's business and is left alone."""
    pidfile = tmp_path / "child.pid"
    path = script(tmp_path / "daemonish.sh", f"sleep 300 & echo $! > {pidfile}; echo started")
    try:
        details, _ = await run(params(path, timeout="30s"))
        assert details["exit_code"] == 0
        assert details["stdout_tail"] == "started\n"
        assert not gone(int(pidfile.read_text()))
    finally:
        if pidfile.exists():
            os.kill(int(pidfile.read_text()), 9)


# --- through the engine --------------------------------------------------------------------


def exec_config(tmp_path: Path, argv: list[str]) -> dict[str, Any]:
    return {
        "journal": str(tmp_path / "journal.db"),
        "prometheus": {"url": "http://127.0.0.1:9", "timeout": "0.2s"},
        "allow": [{"kind": "exec", "name": f"{tmp_path}/runbooks/*"}],
        "rules": [
            {
                "name": "disk-full-runbook",
                "match": 'alertname="DiskFull"',
                "handler": "exec",
                "params": {"argv": argv, "timeout": "30s"},
                "verify": {"stable_for": "0s", "timeout": "0.2s"},
            }
        ],
    }


async def test_an_alert_runs_the_runbook_with_its_labels_as_data(tmp_path: Path) -> None:
    """Through the engine: an alert's hostile label, templated into argv, arrives as one
    literal item (no file created) and in the environment; the act is journaled."""
    pwned = tmp_path / "pwned"
    path = script(
        tmp_path / "runbooks" / "clean.sh",
        'printf "[%s]" "$@"; echo; echo "label=$HEALER_LABEL_MOUNTPOINT"',
    )
    hostile = f"/var; touch {pwned} $(touch {pwned})"
    config = exec_config(tmp_path, [str(path), "--mount", "{{ labels.mountpoint }}"])
    async with running_healer(config) as h:
        resp = await h.client.post(
            "/api/v1/alerts", json=alert_payload({"alertname": "DiskFull", "mountpoint": hostile})
        )
        [started] = resp.json()["started"]
        heal = await h.wait_for_outcome(started["heal_id"])
        timeline = (
            await h.client.get(f"/api/v1/heals/{heal['id']}", headers=h.admin_headers)
        ).json()["timeline"]
    assert heal["outcome"] == "unverified", heal["reason"]  # acted; nothing to verify against
    assert heal["targets"] == [f"exec:{path}"]
    [act] = [e["data"] for e in timeline if e["kind"] == "act"]
    assert act["details"]["stdout_tail"] == f"[--mount][{hostile}]\nlabel={hostile}\n"
    assert not pwned.exists()


async def test_a_script_outside_the_allowlist_is_refused_unrun(tmp_path: Path) -> None:
    """Through the engine: a script outside the allowed directory is refused and never
    runs; a failing allowed script ends ``failed`` with its exit code; a missing one is
    refused at check."""
    marker = tmp_path / "ran"
    elsewhere = script(tmp_path / "elsewhere" / "x.sh", f"touch {marker}")
    failing = script(tmp_path / "runbooks" / "fail.sh", "echo nope >&2; exit 7")
    missing = tmp_path / "runbooks" / "missing.sh"
    async with running_healer(exec_config(tmp_path, ["/bin/true"])) as h:
        outcomes = {}
        for path in (elsewhere, failing, missing):
            resp = await h.client.post(
                "/api/v1/heals",
                headers=h.admin_headers,
                json={"handler": "exec", "params": {"argv": [str(path)]}},
            )
            assert resp.status_code == 202, resp.text
            outcomes[path.name] = await h.wait_for_outcome(resp.json()["heal_id"])
    assert outcomes["x.sh"]["outcome"] == "refused"
    assert "outside the allowlist" in outcomes["x.sh"]["reason"]
    assert not marker.exists()
    assert outcomes["fail.sh"]["outcome"] == "failed"
    assert "exit code 7; stderr: nope" in outcomes["fail.sh"]["reason"]
    # check's InvalidParams (here: no such script) is a refusal too, not a failure.
    assert outcomes["missing.sh"]["outcome"] == "refused"
    assert "No such file" in outcomes["missing.sh"]["reason"]


def test_registered_as_a_builtin_plugin() -> None:
    """``exec`` comes from the real ``healer.handlers`` entry points and needs no service."""
    handler = HandlerRegistry.from_entry_points().get("exec")
    assert isinstance(handler, Exec) and handler.requires == frozenset()
