"""``exec`` runs only scripts nobody else can replace, and an alert cannot make its
environment too big to exec (issue 12, Low 14 and 15). Real files, real processes."""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from handlers.exec import CUT_MARKER, MAX_ALERT_ENV, MAX_ENV_VALUE, Exec, ExecParams
from healer.api import ActionFailed, InvalidParams
from healer.cli import main
from tests.support.env import in_ci
from tests.support.inprocess.healctx import heal_context

EXEC = Exec()
OTHER_UID = 54321  # no such user here; root can still chown to it
# CI runs as root: there these cases always run (and fail honestly if chown is refused).
as_root = pytest.mark.skipif(
    os.geteuid() != 0 and not in_ci(), reason="chown to another uid needs root"
)


def script(path: Path, body: str = "exit 0") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o755)
    path.write_text(f"#!/bin/sh\n{body}\n")
    path.chmod(0o755)
    return path


def params(path: Path) -> ExecParams:
    return ExecParams.model_validate({"argv": [str(path)]})


# Each makes the script at ``root/a/b/fix.sh`` replaceable by someone else.
def _chmod(rel: str, mode: int) -> Callable[[Path], None]:
    return lambda root: (root / rel).chmod(mode)


def _chown(rel: str, mode: int | None = None) -> Callable[[Path], None]:
    def make(root: Path) -> None:
        os.chown(root / rel, OTHER_UID, -1)
        if mode is not None:
            (root / rel).chmod(mode)

    return make


UNSAFE: dict[str, tuple[Callable[[Path], None], str]] = {
    "file-world-writable": (_chmod("a/b/fix.sh", 0o757), "world-writable"),
    "file-group-writable": (_chmod("a/b/fix.sh", 0o775), "group-writable"),
    "parent-world-writable": (_chmod("a/b", 0o777), "directory .*/a/b is world-writable"),
    "parent-group-writable": (_chmod("a/b", 0o775), "directory .*/a/b is group-writable"),
    "grandparent-world-writable": (_chmod("a", 0o777), "directory .*/a is world-writable"),
    "world-writable-even-with-group-bit-off": (_chmod("a", 0o757), "world-writable"),
}
UNSAFE_AS_ROOT: dict[str, tuple[Callable[[Path], None], str]] = {
    "file-owned-by-another-user": (_chown("a/b/fix.sh"), f"owned by uid {OTHER_UID}"),
    "dir-owned-by-another-user": (_chown("a"), f"owned by uid {OTHER_UID}"),
    "sticky-dir-not-owned-by-root": (_chown("a", 0o1777), f"owned by uid {OTHER_UID}"),
}
CASES = [pytest.param(k, *v, id=k) for k, v in UNSAFE.items()] + [
    pytest.param(k, *v, id=k, marks=as_root) for k, v in UNSAFE_AS_ROOT.items()
]


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    """``tmp_path/a/b/fix.sh``, every part 0755 (tmp_path is under the sticky /tmp)."""
    tmp_path.chmod(0o755)
    script(tmp_path / "a" / "b" / "fix.sh")
    return tmp_path


@pytest.mark.parametrize(("case", "make_unsafe", "why"), CASES)
async def test_a_replaceable_script_is_refused_at_load_check_and_act(
    tree: Path, case: str, make_unsafe: Callable[[Path], None], why: str
) -> None:
    """Whatever makes the script replaceable (the file, its directory or one further up
    writable by group or others, or owned by another user; a sticky directory helps only
    when root owns it): the params are refused at config load, check refuses the heal if
    it became so after load, and act refuses to run it if it became so after check."""
    path = tree / "a" / "b" / "fix.sh"
    loaded = params(path)
    ctx, _ = heal_context()
    checked = await EXEC.check(ctx, loaded)
    make_unsafe(tree)
    with pytest.raises(ValidationError, match=why):
        params(path)
    with pytest.raises(InvalidParams, match=why):
        await EXEC.check(ctx, loaded)
    with pytest.raises(ActionFailed, match=why):
        await EXEC.act(ctx, loaded, checked)


@pytest.mark.parametrize(("case", "make_unsafe", "why"), CASES)
async def test_a_symlink_is_judged_by_the_real_path(
    tree: Path, case: str, make_unsafe: Callable[[Path], None], why: str
) -> None:
    """A link from a safe directory to a script in an unsafe place is refused: the check
    is on the resolved path."""
    safe = tree / "safe"
    safe.mkdir(mode=0o755)
    (safe / "fix.sh").symlink_to(tree / "a" / "b" / "fix.sh")
    make_unsafe(tree)
    with pytest.raises(ValidationError, match=why):
        params(safe / "fix.sh")


async def test_a_script_replaced_between_check_and_act_is_not_run(tree: Path) -> None:
    """Same path, same safe modes, another file (another inode): act refuses."""
    path = tree / "a" / "b" / "fix.sh"
    marker = tree / "ran"
    ctx, _ = heal_context()
    checked = await EXEC.check(ctx, params(path))
    path.unlink()
    script(path, f"touch {marker}")
    with pytest.raises(ActionFailed, match="changed since check"):
        await EXEC.act(ctx, params(path), checked)
    assert not marker.exists()


async def test_a_safe_script_under_the_sticky_tmp_runs(tree: Path) -> None:
    """/tmp is world-writable but sticky and root's: a 0755 chain below it is safe."""
    assert os.stat("/tmp").st_mode & 0o1000
    ctx, _ = heal_context()
    p = params(tree / "a" / "b" / "fix.sh")
    result = await EXEC.act(ctx, p, await EXEC.check(ctx, p))
    assert result.details["exit_code"] == 0


def test_check_config_names_the_rule_of_a_replaceable_script(
    tree: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """check-config reports a runbook in a world-writable directory at its rule's path."""
    (tree / "a" / "b").chmod(0o777)
    config = tree / "healer.yml"
    config.write_text(
        json.dumps(
            {
                "rules": [
                    {
                        "name": "fix",
                        "match": 'alertname="X"',
                        "handler": "exec",
                        "params": {"argv": [str(tree / "a" / "b" / "fix.sh")]},
                    }
                ]
            }
        )
    )
    assert main(["check-config", str(config)]) == 1
    err = capsys.readouterr().err
    assert "rules[0].params.argv" in err and "world-writable" in err


# --- the environment an alert contributes ---------------------------------------------

ENV_REPORT = """\
import json, os
mine = {k: v for k, v in os.environ.items() if k.startswith("HEALER_")}
sizes = {k: len(os.environb[k.encode()]) for k in mine}
print(json.dumps({"n": len(mine), "max": max(sizes.values()), "total": sum(
    len(k) + v + 2 for k, v in sizes.items()), "marked": sorted(
    k for k, v in mine.items() if v.endswith(MARKER))}))
""".replace("MARKER", repr(CUT_MARKER))


def _many(n: int, unit: str = "x") -> str:
    return unit * n


ALERTS: dict[str, dict[str, Any]] = {
    "one-200KiB-annotation": {"annotations": {"description": _many(200 * 1024)}},
    "one-130KiB-multibyte-annotation": {"annotations": {"d": _many(44 * 1024, "\u00e9\u20ac")}},
    "emoji-cut-mid-character": {"annotations": {"d": _many(5000, "\U0001f600")}},
    "a-huge-label-and-alertname": {
        "labels": {"alertname": _many(300 * 1024), "instance": _many(150 * 1024)}
    },
    "many-values-under-the-cap": {
        "annotations": {f"a{i:03}": _many(MAX_ENV_VALUE - 100) for i in range(40)}
    },
    "thousands-of-small-annotations": {"annotations": {f"k{i}": _many(200) for i in range(3000)}},
    "exactly-at-the-cap": {"annotations": {"d": _many(MAX_ENV_VALUE)}},
}


@pytest.mark.parametrize("alert", list(ALERTS.values()), ids=list(ALERTS))
async def test_no_alert_can_make_the_environment_too_big_to_exec(
    tree: Path, alert: dict[str, Any]
) -> None:
    """Huge, multibyte, many or many-small labels and annotations: the script runs, every
    HEALER_* value fits :data:`MAX_ENV_VALUE` bytes, all of them :data:`MAX_ALERT_ENV`
    (plus the fixed five), and the timeline names exactly the variables cut (they end with
    the marker) and those left out."""
    report = tree / "report.py"
    report.write_text(f"#!{sys.executable}\n{ENV_REPORT}")
    report.chmod(0o755)
    ctx, recorder = heal_context(
        labels=alert.get("labels", {"alertname": "Big"}), annotations=alert.get("annotations", {})
    )
    p = params(report)
    result = await EXEC.act(ctx, p, await EXEC.check(ctx, p))
    assert result.details["exit_code"] == 0, result.details["stderr_tail"]
    seen = json.loads(result.details["stdout_tail"])
    assert seen["max"] <= MAX_ENV_VALUE
    assert seen["total"] <= MAX_ALERT_ENV + 1024
    notes = recorder.of("note")
    cut = notes[0].get("env_cut", []) if notes else []
    dropped = notes[0].get("env_dropped", []) if notes else []
    assert sorted(set(cut) - set(dropped)) == [k for k in seen["marked"] if k != "HEALER_ALERTNAME"]
    values = [v.encode() for d in alert.values() for v in d.values()]
    over = (
        any(len(v) > MAX_ENV_VALUE for v in values) or sum(len(v) for v in values) > MAX_ALERT_ENV
    )
    assert bool(cut or dropped) == over
