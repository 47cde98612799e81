"""``files.prune``: delete old files matching a glob in one directory, keeping the newest K.

Config example (runbook "Disk usage > 85%: clean old backups")::

    allow:
      - {kind: files, name: /var/backups/odoo}
    rules:
      - name: prune-odoo-backups
        match: ['alertname="DiskUsageHigh"', 'mountpoint="/var/backups"']
        handler: files.prune
        params:
          directory: /var/backups/odoo
          pattern: "*.dump"
          older_than: 7d
          keep: 3

What it deletes: regular files directly in ``directory`` (or below it with
``recursive: true``) whose *name* matches ``pattern`` (``fnmatch``; as in a shell,
a leading ``.`` must be matched explicitly), whose mtime is older than
``older_than``, and which are not among the ``keep`` newest matching files
(counted over everything matched, whatever their age).

What it never does:

* follow a symlink: symlinks are neither followed nor deleted (a ``latest ->
  backup-x`` link survives, and so does whatever it points to);
* leave the directory: ``directory`` is resolved (realpath) once, in check, and
  that resolved path is the target the allowlist judges
  (``files:/var/backups/odoo``); every later step walks from ``/`` with
  ``O_NOFOLLOW`` and works relative to directory file descriptors
  (``scandir(fd)``, ``unlink(name, dir_fd=fd)``), so renaming a directory or
  swapping in a symlink cannot redirect a deletion elsewhere;
* cross into another filesystem when recursing (like ``find -xdev``);
* delete a file that changed since check: act re-reads each candidate and
  deletes it only if it is still the same regular file (device, inode, mtime).

Per-file errors are recorded and the rest carries on; the heal fails only when
nothing could be deleted because of errors.
"""

from __future__ import annotations

import asyncio
import os
import stat
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from datetime import UTC, datetime
from fnmatch import fnmatchcase
from typing import Any, ClassVar

from pydantic import Field, field_validator

from healer.api import (
    ActionFailed,
    ActResult,
    CheckResult,
    Duration,
    HandlerParams,
    HealContext,
    InvalidParams,
    Target,
)

MAX_ENTRIES = 100_000  # directory entries looked at per scan; beyond: the scan stops
MAX_DEPTH = 32
SHOWN = 20  # candidate names shown in the check evidence
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC

Identity = tuple[int, int]  # (st_dev, st_ino)


class PruneParams(HandlerParams):
    directory: str = Field(max_length=4096)
    pattern: str = Field(default="*", min_length=1, max_length=255)
    older_than: Duration = Field(gt=0)
    keep: int = Field(default=3, ge=0, le=100_000)
    recursive: bool = False

    @field_validator("directory")
    @classmethod
    def _directory(cls, value: str) -> str:
        if "\x00" in value:
            raise ValueError("directory contains a NUL byte")
        if not os.path.isabs(value):
            raise ValueError(f"directory must be an absolute path, got {value!r}")
        if ".." in value.split("/"):
            raise ValueError(f"directory must not contain '..', got {value!r}")
        value = os.path.normpath(value)
        if value in ("/", "//"):
            raise ValueError("directory must not be /")
        return value

    @field_validator("pattern")
    @classmethod
    def _pattern(cls, value: str) -> str:
        for bad in ("/", "\\", "..", "\x00"):
            if bad in value:
                raise ValueError(f"pattern matches file names only: {bad!r} is not allowed")
        return value


@dataclass(frozen=True, slots=True)
class Seen:
    """One matching file as check saw it."""

    rel: tuple[str, ...]  # path under the directory; the last item is the file name
    dev: int
    ino: int
    mtime_ns: int
    size: int

    @property
    def path(self) -> str:
        return "/".join(self.rel)

    def brief(self, now: float) -> dict[str, Any]:
        mtime = self.mtime_ns / 1e9
        return {
            "name": self.path,
            "size": self.size,
            "age_s": round(now - mtime),
            "mtime": datetime.fromtimestamp(mtime, UTC).isoformat(timespec="seconds"),
        }


@dataclass(frozen=True, slots=True)
class PruneCheck(CheckResult):
    """CheckResult plus what act needs to re-validate; only ``evidence`` is journaled."""

    root: str = ""
    root_id: Identity = (0, 0)
    dirs: dict[tuple[str, ...], Identity] = field(default_factory=dict)
    candidates: tuple[Seen, ...] = ()


@dataclass
class _Scan:
    pattern: str
    recursive: bool
    root_dev: int
    files: list[Seen] = field(default_factory=list)
    dirs: dict[tuple[str, ...], Identity] = field(default_factory=dict)
    entries: int = 0
    symlinks: int = 0
    truncated: bool = False

    def matches(self, name: str) -> bool:
        if name.startswith(".") and not self.pattern.startswith("."):
            return False
        return fnmatchcase(name, self.pattern)

    def walk(self, dir_fd: int, rel: tuple[str, ...]) -> None:
        with os.scandir(dir_fd) as entries:
            for entry in entries:
                self.entries += 1
                if self.entries > MAX_ENTRIES:
                    self.truncated = True
                    return
                try:
                    st = entry.stat(follow_symlinks=False)
                except FileNotFoundError:
                    continue  # deleted while we looked
                if stat.S_ISLNK(st.st_mode):
                    self.symlinks += 1
                elif stat.S_ISDIR(st.st_mode):
                    self._descend(dir_fd, (*rel, entry.name), st)
                elif stat.S_ISREG(st.st_mode) and self.matches(entry.name):
                    self.files.append(
                        Seen((*rel, entry.name), st.st_dev, st.st_ino, st.st_mtime_ns, st.st_size)
                    )
                if self.truncated:
                    return

    def _descend(self, dir_fd: int, rel: tuple[str, ...], st: os.stat_result) -> None:
        if not self.recursive or len(rel) > MAX_DEPTH or st.st_dev != self.root_dev:
            return
        try:
            sub = os.open(rel[-1], _DIR_FLAGS, dir_fd=dir_fd)
        except OSError:
            return  # gone, swapped for a symlink, or unreadable: not ours to prune
        try:
            if _identity(os.fstat(sub)) != _identity(st):
                return
            self.dirs[rel] = _identity(st)
            self.walk(sub, rel)
        finally:
            os.close(sub)


def _identity(st: os.stat_result) -> Identity:
    return (st.st_dev, st.st_ino)


@contextmanager
def _open_dir(path: str) -> Iterator[int]:
    """A descriptor on ``path``, opened one component at a time from ``/`` with O_NOFOLLOW:
    a symlink anywhere in the path fails the open instead of being followed."""
    fd = os.open("/", _DIR_FLAGS)
    try:
        for part in path.split("/"):
            if part:
                sub = os.open(part, _DIR_FLAGS, dir_fd=fd)
                os.close(fd)
                fd = sub
        yield fd
    finally:
        os.close(fd)


def _ago(seconds: float) -> str:
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size and seconds % size == 0:
            return f"{seconds / size:g}{unit}"
    return f"{seconds:g}s"


class FilesPrune:
    name: ClassVar[str] = "files.prune"
    Params: ClassVar[type[HandlerParams]] = PruneParams
    requires: ClassVar[frozenset[str]] = frozenset()

    async def check(self, ctx: HealContext, params: PruneParams) -> PruneCheck:
        # Directory walks and unlinks block: they run in a worker thread, off the event loop.
        return await asyncio.to_thread(self._check, ctx, params)

    def _check(self, ctx: HealContext, params: PruneParams) -> PruneCheck:
        root = os.path.realpath(params.directory)
        if root == "/":
            raise InvalidParams(f"directory {params.directory!r} resolves to /")
        try:
            with _open_dir(root) as fd:
                root_st = os.fstat(fd)
                scan = _Scan(params.pattern, params.recursive, root_st.st_dev)
                scan.walk(fd, ())
        except (FileNotFoundError, NotADirectoryError):
            raise ActionFailed(f"directory {params.directory!r} does not exist") from None
        except OSError as exc:
            raise ActionFailed(f"cannot read {root}: {exc.strerror}") from None

        now = time.time()
        newest_first = sorted(scan.files, key=lambda s: (-s.mtime_ns, s.rel))
        kept = newest_first[: params.keep]
        rest = newest_first[params.keep :]
        threshold_ns = int((now - params.older_than) * 1e9)
        old = [s for s in rest if s.mtime_ns < threshold_ns]
        old.reverse()  # oldest first: the order act deletes in
        evidence: dict[str, Any] = {
            "directory": params.directory,
            "resolved": root,
            "pattern": params.pattern,
            "recursive": params.recursive,
            "older_than_s": params.older_than,
            "keep": params.keep,
            "matched": len(scan.files),
            "kept": len(kept),
            "kept_newest": kept[0].brief(now) if kept else None,
            "kept_oldest": kept[-1].brief(now) if kept else None,
            "younger": len(rest) - len(old),
            "candidates": len(old),
            "bytes": sum(s.size for s in old),
            "oldest_candidate": old[0].brief(now) if old else None,
            "newest_candidate": old[-1].brief(now) if old else None,
            "names": [s.path for s in old[:SHOWN]],
            "symlinks_skipped": scan.symlinks,
            "scan_truncated": scan.truncated,
        }
        target = Target(
            kind="files",
            name=root,
            attrs={"pattern": params.pattern, "recursive": str(params.recursive).lower()},
        )
        reason = ""
        if not old:
            reason = (
                f"nothing to prune: {len(scan.files)} file(s) match {params.pattern!r}, "
                f"{len(kept)} kept as the newest, {len(rest)} younger than "
                f"{_ago(params.older_than)}"
            )
        return PruneCheck(
            targets=[target],
            evidence=evidence,
            act=bool(old),
            reason=reason,
            root=root,
            root_id=_identity(root_st),
            dirs=scan.dirs,
            candidates=tuple(old),
        )

    async def act(self, ctx: HealContext, params: PruneParams, check: CheckResult) -> ActResult:
        if not isinstance(check, PruneCheck):
            raise ActionFailed("files.prune act needs its own check result")
        result = await asyncio.to_thread(self._delete, ctx, check)
        details = result.details()
        if result.errors and not result.deleted:
            first = result.errors[0]
            raise ActionFailed(
                f"could not delete any of {len(check.candidates)} file(s) in "
                f"{check.root}: {first['name']}: {first['error']}"
            )
        summary = (
            f"deleted {len(result.deleted)} file(s) in {check.root}, {result.freed} bytes freed"
        )
        if result.skipped:
            summary += f"; {len(result.skipped)} skipped (changed since check)"
        if result.errors:
            summary += f"; {len(result.errors)} error(s)"
        return ActResult(summary=summary, details=details)

    def _delete(self, ctx: HealContext, check: PruneCheck) -> _Delete:
        try:
            with _open_dir(check.root) as fd:
                if _identity(os.fstat(fd)) != check.root_id:
                    raise ActionFailed(f"{check.root} was replaced since check")
                return _Delete(fd, check).run()
        except OSError as exc:
            raise ActionFailed(
                f"{check.root} can no longer be opened safely: {exc.strerror}"
            ) from None


class _Delete:
    """Deletes ``check.candidates`` under the open root ``fd``, each re-validated first."""

    def __init__(self, fd: int, check: PruneCheck) -> None:
        self._root = fd
        self._check = check
        self._fds: dict[tuple[str, ...], int | None] = {(): fd}
        self.deleted: list[str] = []
        self.skipped: list[dict[str, str]] = []
        self.errors: list[dict[str, str]] = []
        self.freed = 0
        self.linked = 0

    def run(self) -> _Delete:
        try:
            for seen in self._check.candidates:
                self._one(seen)
        finally:
            for rel, fd in self._fds.items():
                if rel and fd is not None:
                    os.close(fd)
        return self

    def _dir(self, rel: tuple[str, ...]) -> int | None:
        """The descriptor of subdirectory ``rel``, if it is still the one check walked."""
        if rel in self._fds:
            return self._fds[rel]
        parent = self._dir(rel[:-1])
        fd = None
        if parent is not None:
            with suppress(OSError):
                fd = os.open(rel[-1], _DIR_FLAGS, dir_fd=parent)
            if fd is not None and _identity(os.fstat(fd)) != self._check.dirs.get(rel):
                os.close(fd)
                fd = None
        self._fds[rel] = fd
        return fd

    def _one(self, seen: Seen) -> None:
        parent = self._dir(seen.rel[:-1])
        if parent is None:
            self.skipped.append({"name": seen.path, "why": "its directory changed"})
            return
        name = seen.rel[-1]
        try:
            st = os.stat(name, dir_fd=parent, follow_symlinks=False)
        except FileNotFoundError:
            self.skipped.append({"name": seen.path, "why": "gone"})
            return
        except OSError as exc:
            self.errors.append({"name": seen.path, "error": exc.strerror or str(exc)})
            return
        if (
            not stat.S_ISREG(st.st_mode)
            or (st.st_dev, st.st_ino) != (seen.dev, seen.ino)
            or st.st_mtime_ns != seen.mtime_ns
        ):
            self.skipped.append({"name": seen.path, "why": "changed since check"})
            return
        try:
            os.unlink(name, dir_fd=parent)
        except FileNotFoundError:
            self.skipped.append({"name": seen.path, "why": "gone"})
            return
        except OSError as exc:
            self.errors.append({"name": seen.path, "error": exc.strerror or str(exc)})
            return
        self.deleted.append(seen.path)
        if st.st_nlink > 1:
            self.linked += 1  # another hard link keeps the data: nothing freed
        else:
            self.freed += st.st_size

    def details(self) -> dict[str, Any]:
        return {
            "directory": self._check.root,
            "deleted": len(self.deleted),
            "bytes_freed": self.freed,
            "hardlinked": self.linked,
            "deleted_names": self.deleted[:200],
            "skipped": self.skipped[:50],
            "errors": self.errors[:50],
        }
