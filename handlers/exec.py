"""``exec``: run an existing runbook script, never through a shell.

Config example::

    allow:
      - {kind: exec, name: "/opt/runbooks/*"}
    rules:
      - name: odoo-clear-sessions
        match: ['alertname="OdooSessionsStuck"']
        handler: exec
        params:
          argv: ["/opt/runbooks/clear_sessions.sh", "--instance", "{{ labels.instance }}"]
          timeout: 2m
          cwd: /opt/runbooks
          env: {ODOO_DB: production}

``argv`` goes to ``execve`` as it is: a label value templated into an item stays
that one item (spaces, ``;``, ``$(...)`` and backticks are plain characters).
The script sees a small environment: ``PATH`` and ``LANG`` from the daemon, the
rule's ``env``, and the alert as ``HEALER_*`` variables (see :func:`alert_env`);
never the daemon's own environment, which holds its tokens. What the alert adds is
bounded (:data:`MAX_ENV_VALUE` bytes a value, :data:`MAX_ALERT_ENV` in all): a longer
value is cut with a marker, what does not fit is left out, and the timeline names both
(Linux refuses ``execve`` with any string over 128 KiB: one huge annotation made every
run fail with "Argument list too long").

Check resolves ``argv[0]`` (symlinks included) and names it as the target
``exec:<resolved path>``, so the allowlist judges the file that will really run.
It runs only a file nobody else can replace (:func:`untrusted_reason`, sshd's
StrictModes rule): the file and every directory up to ``/`` owned by root or by
healer's user and not writable by group or others; a root-owned sticky directory
(``/tmp``) counts as safe, since only an entry's owner may rename or remove it there.
Config load checks an existing ``argv[0]`` the same way, and act checks again (same
inode) right before running it.
Act runs it in a new session (its own process group) with a deadline: on timeout
the whole group gets SIGTERM, then SIGKILL after a short grace. Stdout and
stderr are read as they come (a chatty script never blocks on a full pipe) and
only their last 4 KiB are kept. A non-zero exit fails the heal with the exit
code and the stderr tail; the tails are recorded in the timeline either way.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import signal
import stat
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Annotated, Any, ClassVar

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

TAIL_BYTES = 4096
KILL_GRACE = 2.0  # seconds between SIGTERM and SIGKILL for the process group
DRAIN_GRACE = 2.0  # after exit, how long to wait for the pipes to reach EOF
_DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
_INHERITED = ("PATH", "LANG")
_ENV_KEY = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,127}$")
_NOT_ENV_CHAR = re.compile(r"[^A-Z0-9_]")
# What the alert may put in the environment: bytes per value, and in all (names too).
MAX_ENV_VALUE = 16 * 1024
MAX_ALERT_ENV = 256 * 1024
CUT_MARKER = "...[cut by healer]"
# Room kept for argv and the rule's env under the kernel's total (ARG_MAX).
_ARG_MAX = os.sysconf("SC_ARG_MAX") if hasattr(os, "sysconf") else 2 * 1024 * 1024

ArgvItem = Annotated[str, Field(max_length=8192)]
EnvValue = Annotated[str, Field(max_length=8192)]


def _no_nul(value: str, what: str) -> str:
    if "\x00" in value:
        raise ValueError(f"{what} contains a NUL byte")
    return value


def _absolute(value: str, what: str) -> str:
    _no_nul(value, what)
    if not os.path.isabs(value):
        raise ValueError(f"{what} must be an absolute path, got {value!r}")
    if ".." in value.split("/"):
        raise ValueError(f"{what} must not contain '..', got {value!r}")
    return value


class ExecParams(HandlerParams):
    argv: list[ArgvItem] = Field(min_length=1, max_length=256)
    timeout: Duration = Field(default=60.0, gt=0, le=86400)
    cwd: str | None = None
    env: dict[str, EnvValue] = Field(default_factory=dict, max_length=64)

    @field_validator("argv")
    @classmethod
    def _argv(cls, argv: list[str]) -> list[str]:
        for i, item in enumerate(argv):
            _no_nul(item, f"argv[{i}]")
        _absolute(argv[0], "argv[0]")
        # At config load (and again per heal): an existing script must be one nobody
        # else can replace. A missing one is judged when a heal runs it.
        resolved = os.path.realpath(argv[0])
        if os.path.exists(resolved):
            why = untrusted_reason(resolved)
            if why is not None:
                raise ValueError(f"argv[0] {argv[0]!r}: {why}")
        return argv

    @field_validator("cwd")
    @classmethod
    def _cwd(cls, cwd: str | None) -> str | None:
        return None if cwd is None else _absolute(cwd, "cwd")

    @field_validator("env")
    @classmethod
    def _env(cls, env: dict[str, str]) -> dict[str, str]:
        for key, value in env.items():
            if not _ENV_KEY.match(key):
                raise ValueError(f"env key {key!r} is not a variable name")
            if key.upper().startswith("HEALER_"):
                raise ValueError(f"env key {key!r}: HEALER_* is reserved for the alert data")
            _no_nul(value, f"env[{key}]")
        return env


def env_name(prefix: str, key: str) -> str:
    """``env_name("HEALER_LABEL_", "compose-service")`` -> ``HEALER_LABEL_COMPOSE_SERVICE``."""
    return prefix + _NOT_ENV_CHAR.sub("_", key.upper())


@dataclass(frozen=True)
class AlertEnv:
    """The ``HEALER_*`` variables of one heal, and what was left out of them: names
    ``skipped`` (a NUL in the value), ``cut`` (longer than :data:`MAX_ENV_VALUE`, cut with
    :data:`CUT_MARKER`) and ``dropped`` (past :data:`MAX_ALERT_ENV` in all)."""

    env: dict[str, str]
    skipped: list[str] = field(default_factory=list)
    cut: list[str] = field(default_factory=list)
    dropped: list[str] = field(default_factory=list)

    def note(self) -> dict[str, Any] | None:
        """The timeline entry saying what was left out, if anything was."""
        out: dict[str, Any] = {}
        if self.skipped:
            out |= {"env_skipped": self.skipped, "why": "NUL in the value"}
        if self.cut:
            out |= {"env_cut": self.cut, "max_value_bytes": MAX_ENV_VALUE}
        if self.dropped:
            out |= {"env_dropped": self.dropped, "max_total_bytes": MAX_ALERT_ENV}
        return out or None


def _bounded(value: str) -> tuple[str, bool]:
    """``value`` in at most :data:`MAX_ENV_VALUE` UTF-8 bytes (cut at a character, marker
    included), and whether it was cut."""
    if len(value) <= MAX_ENV_VALUE // 4 or len(value.encode()) <= MAX_ENV_VALUE:
        return value, False
    room = MAX_ENV_VALUE - len(CUT_MARKER)
    return value.encode()[:room].decode("utf-8", errors="ignore") + CUT_MARKER, True


def alert_env(ctx: HealContext) -> AlertEnv:
    """The ``HEALER_*`` variables for one heal (see :class:`AlertEnv` for what is left out).

    ``HEALER_HEAL_ID``, ``HEALER_RULE`` (``(manual)`` for a manual trigger),
    ``HEALER_ALERTNAME``, ``HEALER_FINGERPRINT`` (empty without an alert),
    ``HEALER_DRY_RUN`` (``0``/``1``), ``HEALER_LABEL_<NAME>`` and
    ``HEALER_ANNOTATION_<NAME>`` (upper-cased, other characters -> ``_``); labels first,
    each kind in name order, until :data:`MAX_ALERT_ENV` is spent.
    """
    alert = ctx.alert
    out = AlertEnv({})
    sources: list[tuple[str, Mapping[str, str]]] = []
    if alert is not None:
        sources = [("HEALER_LABEL_", alert.labels), ("HEALER_ANNOTATION_", alert.annotations)]
    fixed = {
        "HEALER_HEAL_ID": ctx.heal_id,
        "HEALER_RULE": ctx.rule,
        "HEALER_ALERTNAME": _bounded(alert.name)[0] if alert is not None else "",
        "HEALER_FINGERPRINT": alert.fingerprint if alert is not None else "",
        "HEALER_DRY_RUN": "1" if ctx.dry_run else "0",
    }
    spent = sum(_env_bytes(k, v) for k, v in fixed.items())
    for prefix, values in sources:
        for key in sorted(values):
            name, value = env_name(prefix, key)[:256], values[key]
            if "\x00" in value:
                out.skipped.append(name)
                continue
            value, cut = _bounded(value)
            if cut:
                out.cut.append(name)
            size = _env_bytes(name, value)
            if spent + size > MAX_ALERT_ENV:
                out.dropped.append(name)
                continue
            spent += size
            out.env[name] = value
    out.env.update(fixed)
    return out


def _env_bytes(name: str, value: str) -> int:
    return len(name.encode()) + len(value.encode()) + 2  # "=" and the NUL


def inherited_env() -> dict[str, str]:
    """What the script gets from the daemon's environment: ``PATH`` and ``LANG`` only."""
    env = {k: os.environ[k] for k in _INHERITED if os.environ.get(k)}
    env.setdefault("PATH", _DEFAULT_PATH)
    return env


_UNSAFE_BITS = stat.S_IWGRP | stat.S_IWOTH


def untrusted_reason(path: str) -> str | None:
    """Why someone other than root or healer's user could replace ``path`` (a resolved,
    absolute path), or None. As sshd's StrictModes (``safe_path``): the file and every
    directory up to ``/`` must be owned by root or by us and not writable by group or
    others. One exception, unlike sshd: a root-owned directory with the sticky bit
    (``/tmp``), where only an entry's owner may rename or remove it; the entry itself
    is then checked like any other."""
    me = os.geteuid()
    current = path
    while True:
        try:
            st = os.lstat(current)
        except OSError as exc:
            return f"cannot check {current}: {exc.strerror}"
        if st.st_uid not in (0, me):
            return (
                f"{current} is owned by uid {st.st_uid}, not by root or healer's user "
                f"(uid {me}): refusing to run it"
            )
        sticky_root_dir = (
            stat.S_ISDIR(st.st_mode)
            and st.st_mode & stat.S_ISVTX
            and st.st_uid == 0
            and current != path
        )
        if st.st_mode & _UNSAFE_BITS and not sticky_root_dir:
            what = "world-writable" if st.st_mode & stat.S_IWOTH else "group-writable"
            kind = "directory " if current != path else ""
            return f"{kind}{current} is {what}: refusing to run it"
        if current == "/":
            return None
        current = os.path.dirname(current)


def _resolve_executable(path: str) -> tuple[str, os.stat_result]:
    """The resolved path of a file healer may run, and its stat (the inode act runs)."""
    resolved = os.path.realpath(path)
    try:
        st = os.stat(resolved)
    except OSError as exc:
        raise InvalidParams(f"argv[0] {path!r}: {exc.strerror}") from None
    if not stat.S_ISREG(st.st_mode):
        raise InvalidParams(f"argv[0] {path!r} is not a regular file")
    if not os.access(resolved, os.X_OK):
        raise InvalidParams(f"argv[0] {path!r} is not executable")
    why = untrusted_reason(resolved)
    if why is not None:
        raise InvalidParams(f"argv[0] {path!r}: {why}")
    return resolved, st


def _inode(st: os.stat_result) -> str:
    """Which file this is: an inode number is reused at once after an unlink, its change
    time (set on creation, chmod, chown, write) is not the same."""
    return f"{st.st_dev}:{st.st_ino}:{st.st_ctime_ns}"


def _resolve_cwd(cwd: str | None) -> str | None:
    if cwd is None:
        return None
    resolved = os.path.realpath(cwd)
    if not os.path.isdir(resolved):
        raise InvalidParams(f"cwd {cwd!r} is not an existing directory")
    return resolved


class _Tail(asyncio.Protocol):
    """Receives one pipe and keeps only its last ``limit`` bytes (and the total count)."""

    def __init__(self, limit: int) -> None:
        self._limit = limit
        self._data = bytearray()
        self.total = 0
        self.closed: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    def data_received(self, data: bytes) -> None:
        self.total += len(data)
        self._data += data
        if len(self._data) > 2 * self._limit:  # trim in batches, not on every chunk
            del self._data[: -self._limit]

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.closed.done():
            self.closed.set_result(None)

    def text(self) -> str:
        return bytes(self._data[-self._limit :]).decode("utf-8", errors="replace")


async def _reader(fd: int) -> tuple[asyncio.ReadTransport, _Tail]:
    loop = asyncio.get_running_loop()
    pipe = os.fdopen(fd, "rb", buffering=0)  # owns fd from here; the transport, once connected
    try:
        transport, tail = await loop.connect_read_pipe(lambda: _Tail(TAIL_BYTES), pipe)
    except BaseException:
        pipe.close()
        raise
    return transport, tail


def _killpg(pgid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError):  # the whole group is gone already
        os.killpg(pgid, sig)


def _describe_exit(code: int) -> str:
    if code < 0:
        try:
            return f"killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"killed by signal {-code}"
    return f"exit code {code}"


@dataclass(frozen=True, slots=True)
class ExecCheck(CheckResult):
    """The file check judged, for act to make sure it runs that one (also in evidence)."""

    inode: str = ""


class Exec:
    name: ClassVar[str] = "exec"
    Params: ClassVar[type[HandlerParams]] = ExecParams
    requires: ClassVar[frozenset[str]] = frozenset()

    async def check(self, ctx: HealContext, params: ExecParams) -> CheckResult:
        path, st = _resolve_executable(params.argv[0])
        cwd = _resolve_cwd(params.cwd)
        attrs = {"cwd": cwd} if cwd is not None else {}
        evidence = {
            "argv": params.argv,
            "path": path,
            "cwd": cwd,
            "timeout": params.timeout,
            "env_keys": sorted(params.env),
            "inode": _inode(st),
        }
        return ExecCheck(
            targets=[Target(kind="exec", name=path, attrs=attrs)],
            evidence=evidence,
            inode=_inode(st),
        )

    async def act(self, ctx: HealContext, params: ExecParams, check: CheckResult) -> ActResult:
        if not isinstance(check, ExecCheck):
            raise ActionFailed(f"act needs its own check's result, got a {type(check).__name__}")
        # Run what the allowlist judged, and make sure it is still a runnable file.
        path = check.targets[0].name
        try:
            resolved, st = _resolve_executable(path)
        except InvalidParams as exc:
            raise ActionFailed(f"{path} changed since check: {exc.message}") from None
        if resolved != path or _inode(st) != check.inode:
            raise ActionFailed(f"{path} changed since check")
        cwd = check.targets[0].attrs.get("cwd")
        alert = alert_env(ctx)
        env = inherited_env() | params.env | alert.env
        note = alert.note()
        if note is not None:
            await ctx.record("note", note)
        size = sum(len(a.encode()) + 1 for a in params.argv) + sum(
            _env_bytes(k, v) for k, v in env.items()
        )
        if size > _ARG_MAX - 4096:
            raise ActionFailed(
                f"{path}: argv and environment take {size} bytes, over the "
                f"system's {_ARG_MAX} (ARG_MAX): not run"
            )

        details = await self._run(ctx, path, params.argv, cwd, env, params.timeout)
        if details["timed_out"]:
            await ctx.record("exec_failed", details)
            raise ActionFailed(f"{path} timed out after {params.timeout:g}s (process group killed)")
        code = details["exit_code"]
        if code != 0:
            await ctx.record("exec_failed", details)
            stderr = details["stderr_tail"].strip()[-1024:]
            raise ActionFailed(
                f"{path} failed: {_describe_exit(code)}" + (f"; stderr: {stderr}" if stderr else "")
            )
        return ActResult(
            summary=f"ran {path}: exit code 0 in {details['seconds']:g}s", details=details
        )

    async def _run(
        self,
        ctx: HealContext,
        path: str,
        argv: list[str],
        cwd: str | None,
        env: dict[str, str],
        timeout: float,
    ) -> dict[str, Any]:
        out_r, out_w = os.pipe()
        err_r, err_w = os.pipe()
        unread = [out_r, err_r]  # read ends not yet owned by a transport
        readers: list[tuple[asyncio.ReadTransport, _Tail]] = []
        proc: asyncio.subprocess.Process | None = None
        started = time.monotonic()
        timed_out = False
        try:
            while unread:
                readers.append(await _reader(unread.pop(0)))
            proc = await asyncio.create_subprocess_exec(
                argv[0],
                *argv[1:],
                executable=path,
                cwd=cwd,
                env=env,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=out_w,
                stderr=err_w,
                start_new_session=True,
                close_fds=True,
            )
            os.close(out_w)
            os.close(err_w)
            out_w = err_w = -1
            ctx.log.info("exec started", path=path, pid=proc.pid)
            try:
                await asyncio.wait_for(proc.wait(), timeout)
            except TimeoutError:
                timed_out = True
                await self._kill_group(proc)
            # Output still buffered in the pipes, or held open by a child left behind.
            closed = [tail.closed for _, tail in readers]
            await asyncio.wait(closed, timeout=DRAIN_GRACE)
        finally:
            for fd in (out_w, err_w, *unread):
                if fd >= 0:
                    os.close(fd)
            for transport, _ in readers:
                transport.close()
            if proc is not None and proc.returncode is None:  # cancelled (healer stopping)
                _killpg(proc.pid, signal.SIGKILL)
                # Reap it, so that no zombie (and no "still running" Popen) outlives the heal.
                with contextlib.suppress(Exception, asyncio.CancelledError):
                    await asyncio.wait_for(proc.wait(), KILL_GRACE)
        (_, out), (_, err) = readers
        return {
            "path": path,
            "pid": proc.pid,
            "exit_code": proc.returncode,
            "timed_out": timed_out,
            "seconds": round(time.monotonic() - started, 3),
            "stdout_tail": out.text(),
            "stderr_tail": err.text(),
            "stdout_bytes": out.total,
            "stderr_bytes": err.total,
            "truncated": out.total > TAIL_BYTES or err.total > TAIL_BYTES,
        }

    async def _kill_group(self, proc: asyncio.subprocess.Process) -> None:
        _killpg(proc.pid, signal.SIGTERM)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(proc.wait(), KILL_GRACE)
        # The leader may have died on SIGTERM while a child ignores it: kill the rest too.
        _killpg(proc.pid, signal.SIGKILL)
        await proc.wait()
