"""Session logic shared by the ``postgres.*`` handlers (and any handler that signals
PostgreSQL backends): who qualifies, lock trees, targets, and the re-checked signal.

Usage (inside a handler)::

    sessions = await ctx.postgres.sessions(params.database, datname=params.datname)
    trees = lock_trees(sessions)                    # one per root blocker, biggest first
    found = [s for s in sessions if is_client(ctx, s) and matches(s, users, apps)]
    split = split_protected(ctx, params.database, found)   # eligible / protected
    ...
    act_on = [record(s) for s in chosen]
    SessionsCheck([target(db, s) for s in chosen], {"act_on": act_on, ...}, act_on=act_on)
    # act: re-read pg_stat_activity, signal only what is still the same backend
    done, skipped = await signal(ctx, db, datname, sessions_check(check).act_on, "terminate",
                                 same=("backend_start", "xact_start"), still=...)

Every value from params (a database name from an alert label, user names, ...)
reaches PostgreSQL only as a query parameter, inside ``ctx.postgres``.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Annotated, Any, Literal

from pydantic import Field

from healer.api import (
    ActionFailed,
    CheckResult,
    HandlerParams,
    HealContext,
    PgSession,
    Target,
    TargetRefused,
)

# A name from the config's ``databases:`` section (same pattern as the config's keys).
DatabaseName = Annotated[str, Field(pattern=r"^[A-Za-z0-9_.-]+$", max_length=128)]
# A PostgreSQL database / role / application name: any text (it only ever travels as a
# query parameter), bounded so a hostile label cannot make it large.
PgName = Annotated[str, Field(min_length=1, max_length=255)]
NameList = Annotated[list[PgName], Field(max_length=100)]

Signal = Literal["terminate", "cancel"]

# A pile-up can hold hundreds of sessions: evidence lists this many, and counts the rest.
MAX_LISTED = 50


class SessionParams(HandlerParams):
    """Params every session handler takes.

    ``database`` names a ``databases:`` entry (how healer connects); ``datname``
    restricts to sessions of one PostgreSQL database on that server (``None``: every
    database the server hosts)."""

    database: DatabaseName
    datname: PgName | None = None


def wait_age(s: PgSession) -> float | None:
    """How long a waiting session has been waiting, in seconds.

    PostgreSQL does not expose the start of a lock wait in ``pg_stat_activity``; a
    session stuck on a lock is running one statement, so the age of that statement
    (``query_age``; ``state_age`` when unknown) bounds the wait from above and equals
    it whenever the statement blocked at once, as an UPDATE on a locked row does."""
    return s.query_age if s.query_age is not None else s.state_age


@dataclass(frozen=True, slots=True)
class LockTree:
    """A root blocker (blocks others, waits on nobody) and every session it holds up,
    directly or through other waiters."""

    root: PgSession
    blocked: tuple[PgSession, ...]

    @property
    def longest_wait(self) -> float:
        """The longest :func:`wait_age` among the sessions it holds up (0 if unknown)."""
        return max((wait_age(s) or 0.0 for s in self.blocked if s.blocked_by), default=0.0)

    def evidence(self) -> dict[str, Any]:
        """The root in full, and the first :data:`MAX_LISTED` sessions it holds up."""
        return {
            "root": record(self.root, blocks_total=len(self.blocked)),
            "blocks_total": len(self.blocked),
            "longest_wait_s": round(self.longest_wait, 3),
            "waiting": [
                {
                    "pid": s.pid,
                    "blocked_by": list(s.blocked_by),
                    "wait_age_s": _round(wait_age(s)),
                    "user": s.user,
                    "application_name": s.application_name,
                }
                for s in self.blocked[:MAX_LISTED]
            ],
        }


def lock_trees(sessions: Iterable[PgSession]) -> list[LockTree]:
    """One :class:`LockTree` per root blocker in ``sessions``, most sessions held up first.

    A session held up by two roots appears in both trees. A cycle with no root (a
    deadlock) yields no tree: PostgreSQL's deadlock detector resolves it by itself."""
    by_pid = {s.pid: s for s in sessions}
    trees = []
    for root in by_pid.values():
        if not root.blocking or root.blocked_by:
            continue
        seen: dict[int, PgSession] = {}
        todo = list(root.blocking)
        while todo:
            pid = todo.pop()
            s = by_pid.get(pid)
            if s is None or pid in seen or pid == root.pid:
                continue
            seen[pid] = s
            todo.extend(s.blocking)
        trees.append(LockTree(root, tuple(sorted(seen.values(), key=lambda x: x.pid))))
    return sorted(trees, key=lambda t: (-len(t.blocked), -t.longest_wait, t.root.pid))


def is_client(ctx: HealContext, s: PgSession) -> bool:
    """A client backend that is not healer's own: the only kind a handler considers.
    (Replication, autovacuum and other background processes are never candidates.)"""
    return s.backend_type == "client backend" and not ctx.postgres.is_own(s)


def matches(s: PgSession, users: Sequence[str], application_names: Sequence[str]) -> bool:
    """True when ``s`` belongs to one of ``users`` and ``application_names`` (an empty
    list accepts any)."""
    return (not users or s.user in users) and (
        not application_names or s.application_name in application_names
    )


@dataclass(frozen=True, slots=True)
class Split:
    eligible: list[PgSession]
    protected: list[tuple[PgSession, str]]


def split_protected(ctx: HealContext, database: str, found: Iterable[PgSession]) -> Split:
    eligible, protected = [], []
    for s in found:
        why = ctx.postgres.protection(database, s)
        if why is None:
            eligible.append(s)
        else:
            protected.append((s, why))
    return Split(eligible, protected)


def refuse_if_all_protected(split: Split, what: str) -> None:
    """Something qualifies but every candidate is protected: the heal ends ``refused``
    (a person must look), never ``no_action``."""
    if split.protected and not split.eligible:
        names = "; ".join(f"pid {s.pid} ({why})" for s, why in split.protected[:10])
        raise TargetRefused(f"every {what} is protected: {names}")


@dataclass(frozen=True, slots=True)
class SessionsCheck(CheckResult):
    """check's choice, for act (the state a check hands its act: a CheckResult subclass).
    The same entries are in ``evidence``, which is what the journal shows."""

    act_on: Sequence[dict[str, Any]] = ()
    skipped: Sequence[dict[str, Any]] = ()


def sessions_check(check: CheckResult) -> SessionsCheck:
    """``check`` as the :class:`SessionsCheck` act needs (the engine hands act the result
    of the same handler's check, so anything else is a bug)."""
    if not isinstance(check, SessionsCheck):
        raise ActionFailed(f"act needs its own check's result, got a {type(check).__name__}")
    return check


def target(database: str, s: PgSession) -> Target:
    """``postgres:<database>/<pid>``; attrs feed the allowlist
    (``{kind: postgres, database: odoo, user: "odoo*"}``)."""
    attrs = {
        "database": database,
        "datname": s.database,
        "user": s.user,
        "application_name": s.application_name,
    }
    return Target(
        kind="postgres",
        name=f"{database}/{s.pid}",
        attrs={k: v for k, v in attrs.items() if v is not None},
    )


def record(s: PgSession, **extra: Any) -> dict[str, Any]:
    """A session's evidence plus what identifies it exactly (backend, transaction and
    statement start), so ``act`` can tell it from a later backend with the same pid."""
    return {
        **s.evidence(),
        "xact_start": _iso(s.xact_start),
        "query_start": _iso(s.query_start),
        **extra,
    }


def protected_record(s: PgSession, why: str, **extra: Any) -> dict[str, Any]:
    return record(s, protected=why, **extra)


Still = Callable[[PgSession], str | None]
"""Given the fresh view of a planned session, why it no longer qualifies (or None)."""


async def signal(
    ctx: HealContext,
    database: str,
    datname: str | None,
    planned: Sequence[dict[str, Any]],
    how: Signal,
    *,
    same: Sequence[str] = ("backend_start",),
    still: Still | None = None,
    still_sql: str | None = None,
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Terminate or cancel the ``planned`` sessions (records made by :func:`record` in
    ``check``), each only if it is still the same backend (pid and every key of ``same``
    unchanged), ``still`` finds it qualifying, it is not protected and (terminate) the
    heal's termination cap allows it. Returns ``(done, skipped)`` records; each signal
    is also added to the heal's timeline as it happens.

    With ``still_sql`` (``still`` as a SQL condition over the fresh row ``f``: its
    ``blocked_by`` and ``blocking`` pid arrays and the ``pg_stat_activity`` columns of
    ``ctx.postgres.sessions``) the re-read, every one of those checks and the signals are
    one statement, one round trip (``ctx.postgres.signal_checked``); ``still`` then only
    words the reason of a session ``still_sql`` turned down.

    A terminate is done once the backend has exited and so released its locks
    (``ctx.postgres.wait_gone``, about 5 s at most): each done record says ``gone`` and
    ``exit_s`` (from its signal until healer saw it gone), and a backend still there
    after the wait fails the act, named. The timeline writes (``ctx.record_soon``)
    overlap the next signal and that wait; the engine waits for them once act ends."""
    async with ctx.postgres.pinned(database):
        if still_sql is not None:
            return await _signal_in_one(
                ctx, database, datname, planned, how, same=same, still=still, still_sql=still_sql
            )
        return await _signal(ctx, database, datname, planned, how, same=same, still=still)


async def _signal_in_one(
    ctx: HealContext,
    database: str,
    datname: str | None,
    planned: Sequence[dict[str, Any]],
    how: Signal,
    *,
    same: Sequence[str],
    still: Still | None,
    still_sql: str,
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    checked = await ctx.postgres.signal_checked(
        database, planned, how, datname=datname, same=same, still=still_sql
    )
    sent_at = time.monotonic()
    done: list[dict[str, Any]] = []
    skipped: list[dict[str, Any]] = []
    signalled: list[PgSession] = []
    verb = "terminated" if how == "terminate" else "cancelled"
    for plan, c in zip(planned, checked, strict=True):
        if c.now is None or c.refused is not None or not c.sent:
            why = _refused(ctx, database, c.refused, c.now, c.protected, still)
            skipped.append({"pid": plan["pid"], "reason": why or "gone before the signal"})
            continue
        entry = {**plan, **record(c.now)}  # fresh facts, plus check's (blocks_total)
        done.append(entry)
        signalled.append(c.now)
        ctx.record_soon(verb, dict(entry))  # a copy: ``entry`` gains ``gone`` below
    if how == "terminate" and signalled:
        # Every signal went out in the one statement: one send time for all.
        await _wait_exits(ctx, database, done, signalled, {e["pid"]: sent_at for e in done})
    return done, skipped


def _refused(
    ctx: HealContext,
    database: str,
    key: str | None,
    now: PgSession | None,
    protected: str | None,
    still: Still | None,
) -> str | None:
    """The recorded reason for a planned session ``signal_checked`` turned down (``key``),
    in the words of :func:`_signal`; None when it was not turned down."""
    if key is None:
        return None
    if key == "gone" or now is None:
        return "gone"
    if key == "backend_start":
        return "pid now belongs to another backend"
    if key in ("xact_start", "query_start"):
        return f"{key.removesuffix('_start')} changed since check"
    if key == "still":
        return (still(now) if still is not None else None) or "no longer qualifies"
    if key == "cap":
        return (
            f"termination cap reached ({ctx.postgres.config(database).max_terminations} per heal)"
        )
    return protected or key


async def _signal(
    ctx: HealContext,
    database: str,
    datname: str | None,
    planned: Sequence[dict[str, Any]],
    how: Signal,
    *,
    same: Sequence[str],
    still: Still | None,
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    fresh = {s.pid: s for s in await ctx.postgres.sessions(database, datname=datname)}
    done: list[dict[str, Any]] = []
    skipped: list[dict[str, Any]] = []
    verb = "terminated" if how == "terminate" else "cancelled"
    signalled: list[PgSession] = []
    sent_at: dict[int, float] = {}
    for plan in planned:
        now = fresh.get(plan["pid"])
        why = _changed(plan, now, same)
        if why is None and now is not None and still is not None:
            why = still(now)
        if why is None and now is not None:
            why = ctx.postgres.protection(database, now)
        if why is None and how == "terminate" and ctx.postgres.terminations_left(database) <= 0:
            why = (
                f"termination cap reached "
                f"({ctx.postgres.config(database).max_terminations} per heal)"
            )
        if why is not None or now is None:
            skipped.append({"pid": plan["pid"], "reason": why or "gone"})
            continue
        try:
            sent = await (
                ctx.postgres.terminate(database, now)
                if how == "terminate"
                else ctx.postgres.cancel(database, now)
            )
        except TargetRefused as exc:  # the engine's own guard; never signal past it
            skipped.append({"pid": now.pid, "reason": exc.message})
            continue
        if not sent:
            skipped.append({"pid": now.pid, "reason": "gone before the signal"})
            continue
        sent_at[now.pid] = time.monotonic()
        entry = {**plan, **record(now)}  # fresh facts, plus check's (blocks_total)
        done.append(entry)
        signalled.append(now)
        # On the timeline now; the write runs while the next signal goes out and while
        # the backends exit (the engine waits for it once act ends). A copy: ``entry``
        # gains ``gone`` below.
        ctx.record_soon(verb, dict(entry))
    if how == "terminate" and signalled:
        await _wait_exits(ctx, database, done, signalled, sent_at)
    return done, skipped


async def _wait_exits(
    ctx: HealContext,
    database: str,
    done: list[dict[str, Any]],
    signalled: list[PgSession],
    sent_at: dict[int, float],
) -> None:
    """Wait until the terminated backends have exited: each done record gains ``gone``
    and ``exit_s``; a backend still there after the wait fails the act, named."""
    left = await ctx.postgres.wait_gone(database, signalled)
    seen = time.monotonic()
    for entry in done:
        entry["gone"] = entry["pid"] not in left
        entry["exit_s"] = round(seen - sent_at[entry["pid"]], 4) if entry["gone"] else None
    if left:
        raise ActionFailed(
            f"terminated pid(s) {', '.join(str(e['pid']) for e in done)} but "
            f"{', '.join(map(str, left))} still there "
            f"{seen - min(sent_at.values()):.1f}s later"
        )


def _changed(plan: dict[str, Any], now: PgSession | None, same: Sequence[str]) -> str | None:
    if now is None:
        return "gone"
    current = record(now)
    for key in same:
        if plan.get(key) != current.get(key):
            if key == "backend_start":
                return "pid now belongs to another backend"
            return f"{key.removesuffix('_start')} changed since check"
    return None


def summary(how: Signal, done: Sequence[dict[str, Any]], skipped: Sequence[dict[str, Any]]) -> str:
    verb = "terminated" if how == "terminate" else "cancelled"
    pids = ", ".join(str(d["pid"]) for d in done)
    text = f"{verb} {len(done)} session(s)" + (f" (pid {pids})" if done else "")
    if skipped:
        text += f"; skipped {len(skipped)}: " + "; ".join(
            f"pid {s['pid']} ({s['reason']})" for s in skipped[:5]
        )
    return text


def _iso(v: Any) -> str | None:
    return None if v is None else str(v.isoformat())


def _round(v: float | None) -> float | None:
    return None if v is None else round(v, 3)
