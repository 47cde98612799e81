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
never the daemon's own environment, which holds its tokens.

Check resolves ``argv[0]`` (symlinks included) and names it as the target
``exec:<resolved path>``, so the allowlist judges the file that will really run.
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

ArgvItem = Annotated[str, Field(max_length=8192)]


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
    env: dict[str, str] = Field(default_factory=dict, max_length=64)

    @field_validator("argv")
    @classmethod
    def _argv(cls, argv: list[str]) -> list[str]:
        for i, item in enumerate(argv):
            _no_nul(item, f"argv[{i}]")
        _absolute(argv[0], "argv[0]")
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


def alert_env(ctx: HealContext) -> tuple[dict[str, str], list[str]]:
    """The ``HEALER_*`` variables for one heal, and the names skipped (a NUL in the value).

    ``HEALER_HEAL_ID``, ``HEALER_RULE`` (``(manual)`` for a manual trigger),
    ``HEALER_ALERTNAME``, ``HEALER_FINGERPRINT`` (empty without an alert),
    ``HEALER_DRY_RUN`` (``0``/``1``), ``HEALER_LABEL_<NAME>`` and
    ``HEALER_ANNOTATION_<NAME>`` (upper-cased, other characters -> ``_``).
    """
    alert = ctx.alert
    env: dict[str, str] = {}
    skipped: list[str] = []
    sources: list[tuple[str, Mapping[str, str]]] = []
    if alert is not None:
        sources = [("HEALER_LABEL_", alert.labels), ("HEALER_ANNOTATION_", alert.annotations)]
    for prefix, values in sources:
        for key in sorted(values):
            name = env_name(prefix, key)
            if "\x00" in values[key]:
                skipped.append(name)
            else:
                env[name] = values[key]
    env.update({
        "HEALER_HEAL_ID": ctx.heal_id,
        "HEALER_RULE": ctx.rule,
        "HEALER_ALERTNAME": alert.name if alert is not None else "",
        "HEALER_FINGERPRINT": alert.fingerprint if alert is not None else "",
        "HEALER_DRY_RUN": "1" if ctx.dry_run else "0",
    })
    return env, skipped


def inherited_env() -> dict[str, str]:
    """What the script gets from the daemon's environment: ``PATH`` and ``LANG`` only."""
    env = {k: os.environ[k] for k in _INHERITED if os.environ.get(k)}
    env.setdefault("PATH", _DEFAULT_PATH)
    return env


def _resolve_executable(path: str) -> str:
    resolved = os.path.realpath(path)
    try:
        st = os.stat(resolved)
    except OSError as exc:
        raise InvalidParams(f"argv[0] {path!r}: {exc.strerror}") from None
    if not stat.S_ISREG(st.st_mode):
        raise InvalidParams(f"argv[0] {path!r} is not a regular file")
    if not os.access(resolved, os.X_OK):
        raise InvalidParams(f"argv[0] {path!r} is not executable")
    if st.st_mode & stat.S_IWOTH:
        raise InvalidParams(f"argv[0] {path!r} is world-writable: refusing to run it")
    return resolved


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
            del self._data[:-self._limit]

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.closed.done():
            self.closed.set_result(None)

    def text(self) -> str:
        return bytes(self._data[-self._limit:]).decode("utf-8", errors="replace")


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


class Exec:
    name: ClassVar[str] = "exec"
    Params: ClassVar[type[HandlerParams]] = ExecParams
    requires: ClassVar[frozenset[str]] = frozenset()

    async def check(self, ctx: HealContext, params: ExecParams) -> CheckResult:
        path = _resolve_executable(params.argv[0])
        cwd = _resolve_cwd(params.cwd)
        attrs = {"cwd": cwd} if cwd is not None else {}
        evidence = {"argv": params.argv, "path": path, "cwd": cwd, "timeout": params.timeout,
                    "env_keys": sorted(params.env)}
        return CheckResult(targets=[Target(kind="exec", name=path, attrs=attrs)],
                           evidence=evidence)

    async def act(self, ctx: HealContext, params: ExecParams, check: CheckResult) -> ActResult:
        # Run what the allowlist judged, and make sure it is still a runnable file.
        path = check.targets[0].name
        if _resolve_executable(path) != path:
            raise ActionFailed(f"{path} changed since check", heal_id=ctx.heal_id)
        cwd = check.targets[0].attrs.get("cwd")
        healer_env, skipped = alert_env(ctx)
        env = inherited_env() | params.env | healer_env
        if skipped:
            await ctx.record("note", {"env_skipped": skipped, "why": "NUL in the value"})

        details = await self._run(ctx, path, params.argv, cwd, env, params.timeout)
        if details["timed_out"]:
            await ctx.record("exec_failed", details)
            raise ActionFailed(f"{path} timed out after {params.timeout:g}s "
                               f"(process group killed)", heal_id=ctx.heal_id)
        code = details["exit_code"]
        if code != 0:
            await ctx.record("exec_failed", details)
            stderr = details["stderr_tail"].strip()[-1024:]
            raise ActionFailed(f"{path} failed: {_describe_exit(code)}"
                               + (f"; stderr: {stderr}" if stderr else ""), heal_id=ctx.heal_id)
        return ActResult(summary=f"ran {path}: exit code 0 in {details['seconds']:g}s",
                         details=details)

    async def _run(self, ctx: HealContext, path: str, argv: list[str], cwd: str | None,
                   env: dict[str, str], timeout: float) -> dict[str, Any]:
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
                argv[0], *argv[1:], executable=path, cwd=cwd, env=env,
                stdin=asyncio.subprocess.DEVNULL, stdout=out_w, stderr=err_w,
                start_new_session=True, close_fds=True)
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
            "path": path, "pid": proc.pid, "exit_code": proc.returncode,
            "timed_out": timed_out, "seconds": round(time.monotonic() - started, 3),
            "stdout_tail": out.text(), "stderr_tail": err.text(),
            "stdout_bytes": out.total, "stderr_bytes": err.total,
            "truncated": out.total > TAIL_BYTES or err.total > TAIL_BYTES,
        }

    async def _kill_group(self, proc: asyncio.subprocess.Process) -> None:
        _killpg(proc.pid, signal.SIGTERM)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(proc.wait(), KILL_GRACE)
        # The leader may have died on SIGTERM while a child ignores it: kill the rest too.
        _killpg(proc.pid, signal.SIGKILL)
        await proc.wait()
