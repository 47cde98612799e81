"""The ``files.prune`` handler on real files: what it deletes (old, matching, beyond the
newest K), what it reports, and what it never does (follow a symlink, leave its directory,
delete a file that changed since check, accept a path built from a hostile label).
"""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from handlers.files import FilesPrune, PruneCheck, PruneParams
from healer.api import ActionFailed, InvalidParams
from healer.plugins import HandlerRegistry
from tests.support.env import require_service
from tests.support.inprocess.healctx import heal_context
from tests.support.inprocess.inproc import running_healer
from tests.support.inprocess.payloads import alert_payload

PRUNE = FilesPrune()
DAY = 86400


def old_file(path: Path, days: float, size: int = 10) -> Path:
    """A file of ``size`` bytes whose mtime is ``days`` ago (parents created)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"x" * size)
    stamp = time.time() - days * DAY
    os.utime(path, (stamp, stamp))
    return path


def params(directory: Path | str, **kw: Any) -> PruneParams:
    return PruneParams.model_validate({"directory": str(directory), "older_than": "7d", **kw})


def names(directory: Path) -> set[str]:
    return {
        str(p.relative_to(directory)) for p in directory.rglob("*") if p.is_file() or p.is_symlink()
    }


async def prune(p: PruneParams) -> tuple[PruneCheck, dict[str, Any] | None]:
    """check, then act when check says so; returns (check, act details or None)."""
    ctx, _ = heal_context()
    check = await PRUNE.check(ctx, p)
    if not check.act:
        return check, None
    return check, (await PRUNE.act(ctx, p, check)).details


# --- what it deletes ---------------------------------------------------------------------


async def test_keeps_the_newest_k_whatever_their_age(tmp_path: Path) -> None:
    """All six backups are past the threshold: the three newest survive anyway."""
    for day in range(10, 16):
        old_file(tmp_path / f"odoo-{day}.dump", day)
    _, details = await prune(params(tmp_path, keep=3))
    assert names(tmp_path) == {"odoo-10.dump", "odoo-11.dump", "odoo-12.dump"}
    assert details is not None and details["deleted"] == 3


async def test_only_files_older_than_the_threshold_go(tmp_path: Path) -> None:
    """With keep=0, files younger than ``older_than`` stay and older ones go."""
    for day in (1, 2, 6.9, 8, 9, 30):
        old_file(tmp_path / f"b-{day}.dump", day)
    _, details = await prune(params(tmp_path, keep=0))
    assert names(tmp_path) == {"b-1.dump", "b-2.dump", "b-6.9.dump"}
    assert details is not None
    assert sorted(details["deleted_names"]) == ["b-30.dump", "b-8.dump", "b-9.dump"]


async def test_check_reports_candidates_and_act_the_bytes_freed(tmp_path: Path) -> None:
    """Check's evidence counts candidates, their bytes, what is kept and the first names
    (oldest first); act reports exactly the bytes it freed."""
    old_file(tmp_path / "new.dump", 1, size=5)
    old_file(tmp_path / "a.dump", 20, size=1000)
    old_file(tmp_path / "b.dump", 10, size=234)
    old_file(tmp_path / "keep.dump", 9, size=7)
    check, details = await prune(params(tmp_path, keep=2))
    ev = check.evidence
    assert (ev["matched"], ev["kept"], ev["candidates"], ev["bytes"]) == (4, 2, 2, 1234)
    assert ev["names"] == ["a.dump", "b.dump"]
    assert ev["kept_newest"]["name"] == "new.dump" and ev["kept_oldest"]["name"] == "keep.dump"
    assert ev["oldest_candidate"]["name"] == "a.dump"
    assert ev["oldest_candidate"]["age_s"] == pytest.approx(20 * DAY, abs=60)
    assert details is not None
    assert details["bytes_freed"] == 1234 and details["deleted"] == 2
    assert details["errors"] == [] and details["skipped"] == []


async def test_the_pattern_matches_names_and_skips_dotfiles(tmp_path: Path) -> None:
    """Only names matching the glob are considered; as in a shell, ``*`` does not match a
    leading dot."""
    for name in ("a.dump", "a.log", ".hidden.dump", "notes.txt"):
        old_file(tmp_path / name, 30)
    await prune(params(tmp_path, pattern="*.dump", keep=0))
    assert names(tmp_path) == {"a.log", ".hidden.dump", "notes.txt"}
    await prune(params(tmp_path, pattern="*", keep=0))
    assert names(tmp_path) == {".hidden.dump"}
    await prune(params(tmp_path, pattern=".*.dump", keep=0))
    assert names(tmp_path) == set()


async def test_only_recursive_descends_into_subdirectories(tmp_path: Path) -> None:
    """Subdirectories are left alone unless ``recursive``; then files below match too and
    ``keep`` counts over all of them."""
    old_file(tmp_path / "top.dump", 30)
    old_file(tmp_path / "daily" / "d1.dump", 20)
    old_file(tmp_path / "daily" / "deep" / "d2.dump", 10)
    await prune(params(tmp_path, keep=0))
    assert names(tmp_path) == {"daily/d1.dump", "daily/deep/d2.dump"}
    old_file(tmp_path / "top.dump", 30)
    check, _ = await prune(params(tmp_path, keep=1, recursive=True))
    assert check.evidence["names"] == ["top.dump", "daily/d1.dump"]
    assert names(tmp_path) == {"daily/deep/d2.dump"}


async def test_nothing_to_prune_is_no_action(tmp_path: Path) -> None:
    """When every match is kept or young, check says act=False with a reason."""
    old_file(tmp_path / "a.dump", 2)
    old_file(tmp_path / "b.dump", 1)
    old_file(tmp_path / "c.log", 30)
    check, details = await prune(params(tmp_path, pattern="*.dump", keep=1))
    assert check.act is False and details is None
    assert check.reason == (
        "nothing to prune: 2 file(s) match '*.dump', 1 kept as the newest, 1 younger than 7d"
    )
    assert names(tmp_path) == {"a.dump", "b.dump", "c.log"}


# --- what it refuses --------------------------------------------------------------------


@pytest.mark.parametrize(
    "pattern", ["../*", "../../etc/*", "sub/*.dump", "..", "*..*", "a\\b", "a\x00b", ""]
)
def test_patterns_that_are_not_plain_names_are_refused(pattern: str) -> None:
    """A pattern with a path separator, '..', a backslash or NUL (e.g. from a hostile
    label) does not validate: the heal ends refused."""
    with pytest.raises(ValidationError):
        PruneParams.model_validate(
            {"directory": "/var/backups", "pattern": pattern, "older_than": "7d"}
        )


@pytest.mark.parametrize(
    "directory",
    ["backups", "/var/backups/../../etc", "/var/backups/..", "/", "//", "/var/\x00x", ""],
)
def test_directories_that_are_not_plain_absolute_paths_are_refused(directory: str) -> None:
    """The directory must be absolute, without '..' or NUL, and not / itself."""
    with pytest.raises(ValidationError):
        PruneParams.model_validate({"directory": directory, "older_than": "7d"})


@pytest.mark.parametrize(
    "extra",
    [{}, {"older_than": "0s"}, {"older_than": "7 days"}, {"keep": -1}, {"follow_symlinks": True}],
)
def test_params_need_a_positive_age_and_know_their_keys(extra: dict[str, Any]) -> None:
    """``older_than`` is required and positive, ``keep`` is not negative, no unknown keys."""
    data: dict[str, Any] = {"directory": "/var/backups", **extra}
    if not extra:
        data.pop("older_than", None)
    with pytest.raises(ValidationError):
        PruneParams.model_validate(data)


async def test_a_missing_directory_fails_check(tmp_path: Path) -> None:
    """A directory that does not exist fails the check (nothing to judge or delete)."""
    ctx, _ = heal_context()
    with pytest.raises(ActionFailed, match="does not exist"):
        await PRUNE.check(ctx, params(tmp_path / "missing"))


async def test_a_directory_resolving_to_root_is_refused(tmp_path: Path) -> None:
    """A symlink to / as the directory is refused before anything is listed."""
    (tmp_path / "root").symlink_to("/")
    ctx, _ = heal_context()
    with pytest.raises(InvalidParams, match="resolves to /"):
        await PRUNE.check(ctx, params(tmp_path / "root"))


# --- symlinks and races ------------------------------------------------------------------------


async def test_symlinks_are_never_followed_nor_deleted(tmp_path: Path) -> None:
    """A matching symlink to a file outside, and a symlinked subdirectory, are skipped: the
    outside files survive, and so do the links themselves."""
    outside = tmp_path / "outside"
    precious = old_file(outside / "precious.dump", 100)
    also = old_file(outside / "also.dump", 100)
    backups = tmp_path / "backups"
    old_file(backups / "real.dump", 30)
    (backups / "link.dump").symlink_to(precious)
    os.utime(backups / "link.dump", (0, 0), follow_symlinks=False)
    (backups / "linkdir").symlink_to(outside)
    check, details = await prune(params(backups, keep=0, recursive=True))
    assert check.evidence["symlinks_skipped"] == 2
    assert check.evidence["names"] == ["real.dump"]
    assert precious.exists() and also.exists()
    assert names(backups) == {"link.dump", "linkdir"}
    assert details is not None and details["deleted_names"] == ["real.dump"]


async def test_a_symlinked_directory_is_judged_by_where_it_points(tmp_path: Path) -> None:
    """The target is the resolved directory, so the allowlist judges the real place."""
    real = tmp_path / "real"
    real.mkdir()
    (tmp_path / "alias").symlink_to(real)
    ctx, _ = heal_context()
    check = await PRUNE.check(ctx, params(tmp_path / "alias"))
    [target] = check.targets
    assert (target.kind, target.name) == ("files", str(real))
    assert target.attrs == {"pattern": "*", "recursive": "false"}


async def test_a_file_changed_between_check_and_act_is_not_deleted(tmp_path: Path) -> None:
    """A candidate replaced by another file (same name and mtime, other inode), or touched,
    after check is skipped; untouched candidates are still deleted."""
    swapped = old_file(tmp_path / "swapped.dump", 30)
    touched = old_file(tmp_path / "touched.dump", 30)
    old_file(tmp_path / "plain.dump", 30)
    ctx, _ = heal_context()
    p = params(tmp_path, keep=0)
    check = await PRUNE.check(ctx, p)
    assert check.evidence["candidates"] == 3
    stamp = swapped.stat().st_mtime_ns
    newcomer = tmp_path / "newcomer"
    newcomer.write_bytes(b"important")
    os.utime(newcomer, ns=(stamp, stamp))
    os.replace(newcomer, swapped)
    os.utime(touched)
    details = (await PRUNE.act(ctx, p, check)).details
    assert details["deleted_names"] == ["plain.dump"]
    assert sorted(s["name"] for s in details["skipped"]) == ["swapped.dump", "touched.dump"]
    assert swapped.read_bytes() == b"important" and touched.exists()


async def test_a_directory_swapped_for_a_symlink_is_not_followed(tmp_path: Path) -> None:
    """If the directory is renamed and a symlink to elsewhere takes its place between check
    and act, act fails and deletes nothing, neither here nor there."""
    backups = tmp_path / "backups"
    old_file(backups / "a.dump", 30)
    elsewhere = tmp_path / "elsewhere"
    victim = old_file(elsewhere / "a.dump", 30)
    ctx, _ = heal_context()
    p = params(backups, keep=0)
    check = await PRUNE.check(ctx, p)
    backups.rename(tmp_path / "moved")
    backups.symlink_to(elsewhere)
    with pytest.raises(ActionFailed, match="can no longer be opened safely"):
        await PRUNE.act(ctx, p, check)
    assert victim.exists() and (tmp_path / "moved" / "a.dump").exists()


async def test_a_subdirectory_swapped_for_a_symlink_is_not_followed(tmp_path: Path) -> None:
    """Recursive: a subdirectory replaced by a symlink after check is skipped, the files
    it now points to survive, the rest is pruned."""
    backups = tmp_path / "backups"
    old_file(backups / "top.dump", 30)
    old_file(backups / "daily" / "a.dump", 30)
    victim = old_file(tmp_path / "elsewhere" / "a.dump", 30)
    ctx, _ = heal_context()
    p = params(backups, keep=0, recursive=True)
    check = await PRUNE.check(ctx, p)
    (backups / "daily").rename(tmp_path / "moved")
    (backups / "daily").symlink_to(tmp_path / "elsewhere")
    details = (await PRUNE.act(ctx, p, check)).details
    assert details["deleted_names"] == ["top.dump"]
    assert details["skipped"] == [{"name": "daily/a.dump", "why": "its directory changed"}]
    assert victim.exists()


@contextmanager
def immutable(path: Path) -> Iterator[None]:
    """``chattr +i``: even root cannot unlink the file until the flag is removed."""
    if subprocess.run(["chattr", "+i", str(path)], capture_output=True).returncode != 0:
        require_service("chattr +i", "the filesystem under tmp_path refuses the immutable flag")
    try:
        yield
    finally:
        subprocess.run(["chattr", "-i", str(path)], check=True)


async def test_per_file_errors_are_recorded_and_all_failing_fails(tmp_path: Path) -> None:
    """A file that cannot be deleted is recorded as an error and the others still go; when
    every candidate fails, the heal fails."""
    stuck = old_file(tmp_path / "stuck.dump", 30)
    old_file(tmp_path / "free.dump", 30)
    with immutable(stuck):
        _, details = await prune(params(tmp_path, keep=0))
        assert details is not None and details["deleted_names"] == ["free.dump"]
        assert [e["name"] for e in details["errors"]] == ["stuck.dump"]
        with pytest.raises(ActionFailed, match=r"could not delete any of 1 file\(s\)"):
            await prune(params(tmp_path, keep=0))
    assert stuck.exists()


# --- through the engine ----------------------------------------------------------------------


def files_config(tmp_path: Path) -> dict[str, Any]:
    return {
        "journal": str(tmp_path / "journal.db"),
        "prometheus": {"url": "http://127.0.0.1:9", "timeout": "0.2s"},
        "allow": [{"kind": "files", "name": str(tmp_path / "backups")}],
        "rules": [
            {
                "name": "prune-backups",
                "match": 'alertname="DiskFull"',
                "handler": "files.prune",
                "params": {
                    "directory": f"{tmp_path}/backups",
                    "pattern": "{{ labels.prefix }}*.dump",
                    "older_than": "7d",
                    "keep": 1,
                },
                "verify": {"stable_for": "0s", "timeout": "0.2s"},
            }
        ],
    }


async def test_manual_prune_acts_inside_the_allowlist_and_is_refused_outside(
    tmp_path: Path,
) -> None:
    """Through the engine: pruning the allowed directory deletes and journals what it freed;
    pointing the same handler at another directory ends refused with nothing deleted."""
    for day in (10, 20, 30):
        old_file(tmp_path / "backups" / f"odoo-{day}.dump", day, size=100)
        old_file(tmp_path / "other" / f"odoo-{day}.dump", day, size=100)
    async with running_healer(files_config(tmp_path)) as h:
        heals = {}
        for where in ("backups", "other"):
            resp = await h.client.post(
                "/api/v1/heals",
                headers=h.admin_headers,
                json={
                    "handler": "files.prune",
                    "params": {"directory": str(tmp_path / where), "older_than": "7d", "keep": 1},
                },
            )
            assert resp.status_code == 202, resp.text
            heals[where] = await h.wait_for_outcome(resp.json()["heal_id"])
        timeline = (
            await h.client.get(f"/api/v1/heals/{heals['backups']['id']}", headers=h.admin_headers)
        ).json()["timeline"]
    assert heals["backups"]["outcome"] == "unverified"  # acted; nothing to verify against
    [act] = [e["data"] for e in timeline if e["kind"] == "act"]
    assert act["details"]["bytes_freed"] == 200
    assert names(tmp_path / "backups") == {"odoo-10.dump"}
    assert heals["other"]["outcome"] == "refused"
    assert heals["other"]["reason"] == f"files:{tmp_path / 'other'} is outside the allowlist"
    assert len(names(tmp_path / "other")) == 3


async def test_a_hostile_label_in_the_pattern_is_refused(tmp_path: Path) -> None:
    """Through the engine: an alert whose label would turn the pattern into ``../*`` ends
    refused by params validation; a benign label prunes as configured."""
    for day in (10, 20):
        old_file(tmp_path / "backups" / f"odoo-{day}.dump", day)
    old_file(tmp_path / "precious.dump", 30)
    async with running_healer(files_config(tmp_path)) as h:
        outcomes = []
        for fingerprint, prefix in (("00000000000000a1", "../"), ("00000000000000a2", "odoo-")):
            resp = await h.client.post(
                "/api/v1/alerts",
                json=alert_payload(
                    {"alertname": "DiskFull", "prefix": prefix}, fingerprint=fingerprint
                ),
            )
            [started] = resp.json()["started"]
            outcomes.append(await h.wait_for_outcome(started["heal_id"]))
    hostile, benign = outcomes
    assert hostile["outcome"] == "refused"
    assert "pattern matches file names only" in hostile["reason"]
    assert (tmp_path / "precious.dump").exists()
    assert benign["outcome"] == "unverified"
    assert names(tmp_path / "backups") == {"odoo-10.dump"}


def test_registered_as_a_builtin_plugin() -> None:
    """``files.prune`` comes from the real ``healer.handlers`` entry points, no service."""
    handler = HandlerRegistry.from_entry_points().get("files.prune")
    assert isinstance(handler, FilesPrune) and handler.requires == frozenset()
