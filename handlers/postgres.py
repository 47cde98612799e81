"""PostgreSQL session handlers: ``postgres.terminate_blockers``, ``postgres.cancel_slow``,
``postgres.terminate_idle``.

Rule example (runbook "Database Deadlock")::

    databases:
      odoo: {dsn_file: /run/secrets/odoo_dsn, max_terminations: 3,
             protect: {users: [replicator], application_names: [pg_dump]}}
    allow:
      - {kind: postgres, database: odoo}
    rules:
      - name: odoo-db-lock-tree
        match: ['alertname="OdooDbDeadlock"']
        handler: postgres.terminate_blockers
        params: {database: odoo, datname: "{{ labels.datname }}", min_wait: 30s}

Each handler's ``check`` reads ``pg_stat_activity`` (with the lock graph), records
every session it considered and why, and names one target per session it will
signal: ``postgres:<database>/<pid>`` with attrs ``database``, ``datname``,
``user``, ``application_name`` for the allowlist. ``act`` reads the sessions again
and signals only a backend that is still the same one (same pid *and* same
backend start, plus the same transaction or statement where that is what made it
qualify) and still qualifies (``terminate_blockers``: the re-read and the signal in
one statement, healer/pg_protection.py). Protected sessions (superusers unless allowed,
non-client backends, healer's own, ``protect:`` users and application names) are
never signalled; when sessions qualify but all of them are protected the heal
ends ``refused``. Terminations stop at ``databases.<name>.max_terminations`` per
heal; the rest are recorded as skipped. A terminating ``act`` returns once the
terminated backends have exited (their locks released), about 5 s at most, or fails.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, Any, ClassVar, Literal

from pydantic import Field

from handlers._pgsessions import (
    MAX_LISTED,
    NameList,
    SessionParams,
    SessionsCheck,
    is_client,
    lock_trees,
    matches,
    protected_record,
    record,
    refuse_if_all_protected,
    sessions_check,
    signal,
    split_protected,
    summary,
    target,
)
from healer.api import (
    ActResult,
    CheckResult,
    Duration,
    HandlerParams,
    HealContext,
    PgSession,
)

IdleState = Literal["idle", "idle in transaction", "idle in transaction (aborted)"]
IDLE_STATES: list[IdleState] = ["idle", "idle in transaction", "idle in transaction (aborted)"]
Seconds = Annotated[Duration, Field(ge=0, le=30 * 86400)]


def _scope(params: SessionParams) -> dict[str, Any]:
    return {"database": params.database, "datname": params.datname}


class FilterParams(SessionParams):
    users: NameList = Field(default_factory=list)  # empty: any user
    application_names: NameList = Field(default_factory=list)  # empty: any application


async def _filtered_check(
    ctx: HealContext,
    params: FilterParams,
    *,
    qualifies: Callable[[PgSession], bool],
    age: Callable[[PgSession], float | None],
    capped: bool,
    noun: str,
    nothing: str,
    extra: dict[str, Any],
) -> CheckResult:
    """The check of a handler that signals every (unprotected) session that qualifies,
    oldest first; ``capped``: terminations, up to the per-heal cap."""
    db = params.database
    sessions = await ctx.postgres.sessions(db, datname=params.datname)
    found = sorted(
        (s for s in sessions if is_client(ctx, s) and qualifies(s)), key=lambda s: -(age(s) or 0.0)
    )
    split = split_protected(ctx, db, found)
    cap = max(ctx.postgres.terminations_left(db), 0) if capped else len(split.eligible)
    chosen, over = split.eligible[:cap], split.eligible[cap:]
    evidence: dict[str, Any] = {
        **_scope(params),
        **extra,
        "users": params.users,
        "application_names": params.application_names,
        "sessions_seen": len(sessions),
        "act_on": [record(s) for s in chosen],
        "skipped": [record(s, skipped=f"termination cap ({cap} per heal)") for s in over],
        "protected": [protected_record(s, why) for s, why in split.protected],
    }
    if not found:
        return CheckResult([], evidence, act=False, reason=nothing)
    if not split.eligible:
        await ctx.record("protected", {"sessions": evidence["protected"]})
    refuse_if_all_protected(split, noun)
    return SessionsCheck(
        [target(db, s) for s in chosen],
        evidence,
        act_on=evidence["act_on"],
        skipped=evidence["skipped"],
    )


async def _signal_checked(
    ctx: HealContext,
    params: SessionParams,
    check: CheckResult,
    how: Literal["terminate", "cancel"],
    same: tuple[str, ...],
    still: Callable[[PgSession], str | None],
    still_sql: str | None = None,
) -> ActResult:
    """Signal what check chose (if still the same backend and still qualifying)."""
    chosen = sessions_check(check)
    done, skipped = await signal(
        ctx,
        params.database,
        params.datname,
        chosen.act_on,
        how,
        same=same,
        still=still,
        still_sql=still_sql,
    )
    skipped += [{"pid": s["pid"], "reason": s["skipped"]} for s in chosen.skipped]
    key = "terminated" if how == "terminate" else "cancelled"
    return ActResult(summary(how, done, skipped), {key: done, "skipped": skipped})


# --- postgres.terminate_blockers --------------------------------------------------------


class BlockersParams(SessionParams):
    # Act only on lock trees where some session has waited at least this long.
    min_wait: Seconds = 30.0


class TerminateBlockers:
    """Terminate the *root* blockers of lock trees whose waiters waited too long.

    Params: ``database`` (a ``databases:`` name), ``datname`` (only sessions of this
    PostgreSQL database; default all), ``min_wait`` (default ``30s``).

    A root blocker blocks others (``pg_blocking_pids``) and waits on nobody. A tree
    qualifies when one of the sessions it holds up has waited at least ``min_wait``
    (wait = the age of the waiter's current statement). In A <- B <- C (C waits on
    B, B waits on A) only A is terminated; B and C then proceed. Waiters are never
    touched. Trees are handled biggest first up to the termination cap; evidence per
    root: pid, user, application, state, wait, transaction age, query head and
    ``blocks_total`` (every session it holds up, directly or not).
    """

    name: ClassVar[str] = "postgres.terminate_blockers"
    Params: ClassVar[type[HandlerParams]] = BlockersParams
    requires: ClassVar[frozenset[str]] = frozenset({"postgres"})

    async def check(self, ctx: HealContext, params: BlockersParams) -> CheckResult:
        db = params.database
        sessions = await ctx.postgres.sessions(db, datname=params.datname)
        trees = lock_trees(sessions)
        evidence: dict[str, Any] = {
            **_scope(params),
            "min_wait_s": params.min_wait,
            "sessions_seen": len(sessions),
            "lock_trees_total": len(trees),
            "lock_trees": [t.evidence() for t in trees[:MAX_LISTED]],
        }
        if not trees:
            return CheckResult([], evidence, act=False, reason="no session waits on a lock")
        due = [t for t in trees if t.longest_wait >= params.min_wait]
        if not due:
            longest = max(t.longest_wait for t in trees)
            return CheckResult(
                [],
                evidence,
                act=False,
                reason=(
                    f"{len(trees)} lock tree(s), longest wait {longest:.1f}s "
                    f"< min_wait {params.min_wait:g}s"
                ),
            )
        blocks = {t.root.pid: len(t.blocked) for t in due}
        split = split_protected(ctx, db, (t.root for t in due))
        evidence["protected"] = [
            protected_record(s, why, blocks_total=blocks[s.pid]) for s, why in split.protected
        ]
        if split.protected and not split.eligible:
            await ctx.record("protected", {"sessions": evidence["protected"]})
        refuse_if_all_protected(split, "root blocker")
        cap = max(ctx.postgres.terminations_left(db), 0)
        chosen, over = split.eligible[:cap], split.eligible[cap:]
        evidence["act_on"] = [record(s, blocks_total=blocks[s.pid]) for s in chosen]
        evidence["skipped"] = [
            record(s, blocks_total=blocks[s.pid], skipped=f"termination cap ({cap} per heal)")
            for s in over
        ]
        return SessionsCheck(
            [target(db, s) for s in chosen],
            evidence,
            act_on=evidence["act_on"],
            skipped=evidence["skipped"],
        )

    async def act(self, ctx: HealContext, params: BlockersParams, check: CheckResult) -> ActResult:
        # The re-read and the signal are one statement, one round trip less on the path
        # the action bench measures (ROOT_BLOCKER is root_blocker in SQL; root_blocker
        # words why a session no longer qualifies).
        return await _signal_checked(
            ctx,
            params,
            check,
            "terminate",
            ("backend_start", "xact_start"),
            root_blocker,
            ROOT_BLOCKER,
        )


ROOT_BLOCKER = "(cardinality(f.blocked_by) = 0 AND cardinality(f.blocking) > 0)"
""":func:`root_blocker` as a SQL condition over the fresh row of a planned session."""


def root_blocker(s: PgSession) -> str | None:
    """Why ``s`` is no longer a root blocker (waits on nobody, blocks someone), or None."""
    if s.blocked_by:
        return "now waits on another session itself"
    return None if s.blocking else "no longer blocks anyone"


# --- postgres.cancel_slow ----------------------------------------------------------------


class SlowParams(FilterParams):
    # Cancel active statements running at least this long.
    min_duration: Seconds = 300.0


class CancelSlow:
    """Cancel (``pg_cancel_backend``) active statements older than a threshold; the
    sessions stay connected.

    Params: ``database``, ``datname``, ``min_duration`` (default ``5m``), ``users``,
    ``application_names`` (empty lists: any). A statement is cancelled only if, when
    healer signals, the same backend still runs the same statement (same
    ``query_start``). Cancellations are not capped (they end a statement, not a
    session); protected sessions are never cancelled.
    """

    name: ClassVar[str] = "postgres.cancel_slow"
    Params: ClassVar[type[HandlerParams]] = SlowParams
    requires: ClassVar[frozenset[str]] = frozenset({"postgres"})

    async def check(self, ctx: HealContext, params: SlowParams) -> CheckResult:
        return await _filtered_check(
            ctx,
            params,
            qualifies=lambda s: _slow(s, params),
            age=lambda s: s.query_age,
            capped=False,
            noun="slow statement's session",
            nothing=f"no active statement older than {params.min_duration:g}s",
            extra={"min_duration_s": params.min_duration},
        )

    async def act(self, ctx: HealContext, params: SlowParams, check: CheckResult) -> ActResult:
        def still(s: PgSession) -> str | None:
            return None if _slow(s, params) else "no longer a slow active statement"

        return await _signal_checked(
            ctx, params, check, "cancel", ("backend_start", "query_start"), still
        )


def _slow(s: PgSession, p: SlowParams) -> bool:
    return (
        s.state == "active"
        and s.query_age is not None
        and s.query_age >= p.min_duration
        and matches(s, p.users, p.application_names)
    )


# --- postgres.terminate_idle -------------------------------------------------------------


class IdleParams(FilterParams):
    # Terminate sessions that have been in one of ``states`` at least this long.
    min_idle: Seconds = 600.0
    states: list[IdleState] = Field(default_factory=lambda: list(IDLE_STATES), min_length=1)


class TerminateIdle:
    """Terminate idle and idle-in-transaction sessions older than a threshold (runbook
    "too many connections"); active sessions are never touched.

    Params: ``database``, ``datname``, ``min_idle`` (default ``10m``, measured from the
    session's last state change), ``states`` (default all three idle states),
    ``users``, ``application_names`` (empty lists: any). Oldest first, up to the
    termination cap; a session that ran a statement since check is left alone.
    """

    name: ClassVar[str] = "postgres.terminate_idle"
    Params: ClassVar[type[HandlerParams]] = IdleParams
    requires: ClassVar[frozenset[str]] = frozenset({"postgres"})

    async def check(self, ctx: HealContext, params: IdleParams) -> CheckResult:
        return await _filtered_check(
            ctx,
            params,
            qualifies=lambda s: _idle(s, params),
            age=lambda s: s.state_age,
            capped=True,
            noun="idle session",
            nothing=(f"no session in {', '.join(params.states)} for {params.min_idle:g}s or more"),
            extra={"min_idle_s": params.min_idle, "states": params.states},
        )

    async def act(self, ctx: HealContext, params: IdleParams, check: CheckResult) -> ActResult:
        def still(s: PgSession) -> str | None:
            return None if _idle(s, params) else "no longer idle long enough"

        return await _signal_checked(ctx, params, check, "terminate", ("backend_start",), still)


def _idle(s: PgSession, p: IdleParams) -> bool:
    return (
        s.state in p.states
        and s.state_age is not None
        and s.state_age >= p.min_idle
        and matches(s, p.users, p.application_names)
    )
