"""A real, small filesystem that a test can fill up: a tmpfs mounted on a directory.

    with small_disk(tmp_path / "disk", size="4m") as disk:
        journal = disk.path / "journal.db"
        disk.fill()          # writes zeros until the kernel answers ENOSPC
        ...                  # every write on disk.path now fails: "database or disk is full"
        disk.free()          # deletes the filler: room again

Tests run as root, so a chmod would not stop a write; a full filesystem does. Mounting
needs root (CAP_SYS_ADMIN): elsewhere the test skips, and fails under CI=true.
"""

from __future__ import annotations

import contextlib
import errno
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

from tests.support.env import require_service

_CHUNK = b"\0" * 65536


class SmallDisk:
    def __init__(self, path: Path) -> None:
        self.path = path
        self.filler = path / ".filler"

    def fill(self) -> int:
        """Fill the filesystem to the last byte; returns how many bytes that took."""
        written = 0
        fd = os.open(self.filler, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        try:
            for chunk in (_CHUNK, b"\0" * 4096, b"\0"):  # big steps first, then the crumbs
                while True:
                    try:
                        written += os.write(fd, chunk)
                    except OSError as exc:
                        if exc.errno != errno.ENOSPC:
                            raise
                        break
        finally:
            os.close(fd)
        return written

    def free(self) -> None:
        with contextlib.suppress(FileNotFoundError):
            self.filler.unlink()

    @property
    def available(self) -> int:
        stat = os.statvfs(self.path)
        return stat.f_bavail * stat.f_frsize


@contextlib.contextmanager
def small_disk(path: Path, size: str = "4m") -> Iterator[SmallDisk]:
    """Mount a ``size`` tmpfs on ``path`` (created); unmounted on exit, even on failure."""
    path.mkdir(parents=True, exist_ok=True)
    result = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size},mode=0755", "tmpfs", str(path)],
        capture_output=True,
        check=False,
    )
    if result.returncode != 0:
        require_service(
            "a tmpfs mount",
            result.stderr.decode(errors="replace").strip() or f"mount exited {result.returncode}",
        )
    try:
        yield SmallDisk(path)
    finally:
        # Lazy: a process killed by the test may still hold a file open there.
        subprocess.run(["umount", "-l", str(path)], capture_output=True, check=False)
