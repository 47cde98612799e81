"""PostgreSQL access for handlers: one asyncpg pool per named database, owned by the app.

Usage (the app factory builds it; handlers reach it as ``ctx.postgres``)::

    pg = PostgresAdapter(config.databases, secrets.databases)
    rows = await pg.fetch("odoo", "SELECT id FROM ir_cron WHERE active AND nextcall < $1", t)
    free = await pg.probe("odoo", "SELECT id FROM ir_cron FOR UPDATE SKIP LOCKED")  # rolled back
    for s in await pg.sessions("odoo"):                       # pg_stat_activity + lock graph
        if pg.protection("odoo", s) is None: ...              # None = may be signalled
    await pg.terminate("odoo", session)                       # refuses protected sessions
    left = await pg.wait_gone("odoo", [session])              # [] once its backend exited
    async with pg.pinned("odoo"): ...                         # calls inside: one connection
    await pg.aclose()

Every value reaches the server as a query parameter, never spliced into SQL.
Every connection carries a short ``statement_timeout`` and the application
name ``healer``, and its backend pid is remembered, so healer never signals
its own sessions. Pools are created lazily: healer starts (and reports
"postgres: down" on /health/ready) while a database is unreachable.

Protection is enforced here, not left to each handler: superusers (unless the
database's config allows them), non-client backends (replication, autovacuum,
background workers), healer's own sessions, and the configured users and
application names are never cancelled or terminated; ``HealPostgres`` caps how
many sessions one heal may terminate.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import asynccontextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import asyncpg

from healer.errors import ActionFailed, TargetRefused
from healer.pg_protection import (
    APPLICATION_NAME,
    SESSION_COLUMNS,
    checked_signal_args,
    checked_signal_sql,
    is_own,
    protection,
    reason,
)
from healer.pg_session import Session
from healer.redact import redact_dsn

if TYPE_CHECKING:
    from healer.config import DatabaseConfig

# After pg_terminate_backend, the pauses (s) before each look at whether the backend has
# exited: at once, then doubling from 1 ms, then every 50 ms; about 5 s in all.
EXIT_POLL: tuple[float, ...] = (0.0, 0.001, 0.002, 0.004, 0.008, 0.016, 0.032) + (0.05,) * 99


@dataclass(frozen=True, slots=True)
class Checked:
    """One planned session after :meth:`PostgresAdapter.signal_checked`: its fresh view
    (None: gone), why it was not signalled (``gone``, a changed identity column,
    ``still``, a protection rule's key, ``cap``; None: it was), the protection's recorded
    reason when a rule refused it, and what the signal function returned (None: not
    sent; False: the backend was gone by then)."""

    pid: int
    now: Session | None
    refused: str | None
    protected: str | None
    sent: bool | None


def _session(r: Mapping[str, Any], blocking: Sequence[int]) -> Session:
    return Session(
        pid=r["pid"],
        database=r["datname"],
        user=r["usename"],
        application_name=r["application_name"],
        client_addr=r["client_addr"],
        backend_type=r["backend_type"],
        state=r["state"],
        wait_event_type=r["wait_event_type"],
        wait_event=r["wait_event"],
        xact_age=r["xact_age"],
        query_age=r["query_age"],
        state_age=r["state_age"],
        query=r["query"],
        superuser=r["superuser"],
        blocked_by=tuple(r["blocked_by"] or ()),
        blocking=tuple(blocking),
        backend_start=r["backend_start"],
        xact_start=r["xact_start"],
        query_start=r["query_start"],
    )


_SESSIONS_SQL = f"""
SELECT a.pid, {SESSION_COLUMNS}
  FROM pg_stat_activity a
  LEFT JOIN pg_roles r ON r.oid = a.usesysid
 WHERE a.pid <> pg_backend_pid()
   AND ($1::text IS NULL OR a.datname = $1)
"""


_ALIVE_SQL = """
SELECT a.pid
  FROM pg_stat_get_activity(NULL) a
  JOIN unnest($1::int[], $2::timestamptz[]) AS g(pid, backend_start)
    ON a.pid = g.pid AND a.backend_start IS NOT DISTINCT FROM g.backend_start
"""


async def _no_session_state(conn: asyncpg.Connection) -> None:
    """The pool's reset on release. asyncpg's default sends one more statement after every
    query (``pg_advisory_unlock_all(); CLOSE ALL; UNLISTEN *; RESET ALL``): a second round
    trip that made each of healer's queries, a terminate included, take 1.6x as long.
    healer leaves nothing of that kind behind: no advisory locks, cursors, LISTEN or
    session-level SET (``probe`` sets ``lock_timeout`` for its own transaction, which
    always rolls back); and asyncpg still rolls back a transaction left open before it
    calls this."""


@dataclass(slots=True)
class _Pin:
    """A connection held by :meth:`PostgresAdapter.pinned` for the code in its block
    (tasks started there included: they take turns through ``lock``)."""

    db: str
    conn: asyncpg.Connection
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    released: bool = False


_PINNED: ContextVar[_Pin | None] = ContextVar("healer_postgres_pinned", default=None)

# What a query, an acquire or a release raises when the server or the network fails.
_DB_ERRORS = (TimeoutError, asyncpg.PostgresError, OSError, asyncpg.InterfaceError)


def _failed(db: str, exc: BaseException) -> ActionFailed:
    return ActionFailed(f"database {db!r}: {type(exc).__name__}: {redact_dsn(str(exc))}")


class PostgresAdapter:
    def __init__(self, databases: Mapping[str, DatabaseConfig], dsns: Mapping[str, str]) -> None:
        self._config = dict(databases)
        self._dsns = dict(dsns)
        self._pools: dict[str, asyncpg.Pool] = {}
        self._own_pids: set[int] = set()
        self._lock = asyncio.Lock()

    @property
    def names(self) -> list[str]:
        return sorted(self._config)

    def config(self, db: str) -> DatabaseConfig:
        try:
            return self._config[db]
        except KeyError:
            raise TargetRefused(
                f"database {db!r} is not configured (databases: {', '.join(self.names) or 'none'})"
            ) from None

    async def _pool(self, db: str) -> asyncpg.Pool:
        cfg = self.config(db)
        async with self._lock:
            pool = self._pools.get(db)
            if pool is None:
                timeout_ms = str(int(cfg.statement_timeout * 1000))

                async def remember(conn: asyncpg.Connection) -> None:
                    self._own_pids.add(conn.get_server_pid())

                try:
                    pool = await asyncpg.create_pool(
                        self._dsns[db],
                        min_size=0,
                        max_size=cfg.pool_size,
                        timeout=cfg.connect_timeout,
                        command_timeout=cfg.statement_timeout + 5,
                        server_settings={
                            "application_name": APPLICATION_NAME,
                            "statement_timeout": timeout_ms,
                            # healer's statements read the statistics views with the
                            # same shape every time: plan them once per connection, not
                            # at each of the first executions (~1 ms each for act's
                            # one-statement re-read and signal).
                            "plan_cache_mode": "force_generic_plan",
                        },
                        init=remember,
                        reset=_no_session_state,
                    )
                except Exception as exc:
                    raise ActionFailed(
                        f"cannot connect to database {db!r}: {redact_dsn(str(exc))}"
                    ) from None
                self._pools[db] = pool
            return pool

    @asynccontextmanager
    async def _conn(self, db: str) -> AsyncIterator[asyncpg.Connection]:
        """The connection this task pinned to ``db`` (:meth:`pinned`), else one from the
        pool for the block."""
        pin = _PINNED.get()
        if pin is not None and pin.db == db and not pin.released and not pin.conn.is_closed():
            async with pin.lock:  # one statement (or probe transaction) at a time
                yield pin.conn
            return
        pool = await self._pool(db)
        async with pool.acquire() as conn:
            yield conn

    async def fetch(self, db: str, query: str, *args: Any) -> list[dict[str, Any]]:
        """Run a query with parameters ($1, $2, ...); rows come back as dicts."""
        try:
            async with self._conn(db) as conn:
                rows = await conn.fetch(query, *args)
        except _DB_ERRORS as exc:
            raise _failed(db, exc) from None
        return [dict(r) for r in rows]

    @asynccontextmanager
    async def pinned(self, db: str) -> AsyncIterator[None]:
        """Inside the block, calls on ``db`` share one pooled connection: one acquire and
        release for a whole sequence (read the sessions, signal, wait for the exit)
        instead of one per query. Tasks started inside take turns on it; once the block
        ends they, like every other task, take connections from the pool."""
        pool = await self._pool(db)
        try:
            conn = await pool.acquire()
        except _DB_ERRORS as exc:
            raise _failed(db, exc) from None
        pin = _Pin(db, conn)
        token = _PINNED.set(pin)
        try:
            yield
        finally:
            _PINNED.reset(token)
            async with pin.lock:  # a statement from a task started inside ends first
                pin.released = True
            # A connection that broke meanwhile is closed and dropped by the pool.
            with contextlib.suppress(*_DB_ERRORS):
                await pool.release(conn)

    async def probe(
        self, db: str, query: str, *args: Any, lock_timeout: float = 0.1
    ) -> list[dict[str, Any]]:
        """Run ``query`` in a transaction that is always rolled back and waits at most
        ``lock_timeout`` seconds for any lock: for statements that lock only to learn
        something (``SELECT ... FOR NO KEY UPDATE SKIP LOCKED``), so healer never holds
        a lock past the statement nor queues in front of other sessions."""
        try:
            async with self._conn(db) as conn:
                tx = conn.transaction()
                await tx.start()
                try:
                    await conn.execute(
                        "SELECT set_config('lock_timeout', $1, true)",
                        f"{max(1, int(lock_timeout * 1000))}ms",
                    )
                    rows = await conn.fetch(query, *args)
                finally:
                    await tx.rollback()
        except _DB_ERRORS as exc:
            raise _failed(db, exc) from None
        return [dict(r) for r in rows]

    async def ping(self, db: str) -> None:
        await self.fetch(db, "SELECT 1")

    async def sessions(self, db: str, *, datname: str | None = None) -> list[Session]:
        """Every other backend on the server (or in ``datname``), with who blocks whom."""
        rows = await self.fetch(db, _SESSIONS_SQL, datname)
        blocking: dict[int, list[int]] = {}
        for r in rows:
            for b in r["blocked_by"] or ():
                blocking.setdefault(b, []).append(r["pid"])
        return [_session(r, blocking.get(r["pid"], ())) for r in rows]

    def is_own(self, session: Session) -> bool:
        """True for healer's own connections (never a candidate for any handler)."""
        return is_own(session, frozenset(self._own_pids))

    def protection(self, db: str, session: Session) -> str | None:
        """Why ``session`` must not be signalled, or ``None`` if it may be (the rules of
        healer/pg_protection.py)."""
        return protection(session, self.config(db), frozenset(self._own_pids))

    async def signal_checked(
        self,
        db: str,
        planned: Sequence[Mapping[str, Any]],
        how: str,
        *,
        datname: str | None,
        same: Sequence[str],
        still: str | None,
        cap: int | None,
    ) -> list[Checked]:
        """Re-read the ``planned`` sessions (records with ``pid`` and the ISO
        ``backend_start`` / ``xact_start`` / ``query_start`` check saw) and signal, in
        the same statement (one round trip), each one still the same backend (pid and
        every key of ``same``), still qualifying (``still``, a SQL condition), protected
        by no rule and within ``cap`` (terminations; None: no cap), in plan order. One
        :class:`Checked` per planned session, in order."""
        sql = checked_signal_sql(how, same=same, still=still)
        args = checked_signal_args(
            planned,
            datname=datname,
            own=frozenset(self._own_pids),
            cfg=self.config(db),
            cap=cap,
        )
        rows = await self.fetch(db, sql, *args)
        out = []
        for r in rows:
            now = _session(r, tuple(r["blocking"] or ())) if r["found"] else None
            refused = "cap" if r["over_cap"] else r["refused"]
            out.append(
                Checked(
                    pid=r["pid"],
                    now=now,
                    refused=refused,
                    protected=None if now is None or refused is None else reason(refused, now),
                    sent=r["sent"],
                )
            )
        return out

    async def _signal(self, db: str, session: Session, fn: str) -> bool:
        why = self.protection(db, session)
        if why is not None:
            raise TargetRefused(f"pid {session.pid} is protected: {why}")
        # The signal goes only to the backend that was looked at: a pid PostgreSQL gave
        # to a new backend since then has a different backend_start and is left alone.
        call = "pg_terminate_backend" if fn == "terminate" else "pg_cancel_backend"
        # pg_stat_get_activity(pid): that backend's row alone (pg_stat_activity is the
        # same function over every backend, joined with pg_database and pg_authid).
        sql = (
            f"SELECT {call}(pid) FROM pg_stat_get_activity($1)"
            " WHERE backend_start IS NOT DISTINCT FROM $2::timestamptz"
        )
        rows = await self.fetch(db, sql, session.pid, session.backend_start)
        return bool(rows and next(iter(rows[0].values())))

    async def terminate(self, db: str, session: Session) -> bool:
        """``pg_terminate_backend``; False when the session was already gone (or its pid
        now belongs to another backend). It returns once the signal is sent: see
        :meth:`wait_gone` for the backend's exit."""
        return await self._signal(db, session, "terminate")

    async def wait_gone(self, db: str, sessions: Sequence[Session]) -> list[int]:
        """Wait until each of ``sessions`` (pid and backend start) has left
        ``pg_stat_activity``, i.e. its backend has exited and released its locks; look
        after each pause of :data:`EXIT_POLL` (about 5 s in all). Returns the pids still
        there at the end, [] when every one is gone."""
        left = {s.pid: s.backend_start for s in sessions}
        for pause in EXIT_POLL:
            if not left:
                break
            if pause:
                await asyncio.sleep(pause)
            rows = await self.fetch(db, _ALIVE_SQL, list(left), list(left.values()))
            alive = {r["pid"] for r in rows}
            left = {pid: started for pid, started in left.items() if pid in alive}
        return sorted(left)

    async def cancel(self, db: str, session: Session) -> bool:
        """``pg_cancel_backend`` (the statement stops, the session stays)."""
        return await self._signal(db, session, "cancel")

    def for_heal(self) -> HealPostgres:
        return HealPostgres(self)

    async def aclose(self) -> None:
        pools, self._pools = list(self._pools.values()), {}
        for pool in pools:
            try:
                await asyncio.wait_for(pool.close(), 5)
            except Exception:
                pool.terminate()


class HealPostgres:
    """The view of :class:`PostgresAdapter` one heal gets as ``ctx.postgres``: the same
    calls, plus the per-heal termination cap (``databases.<name>.max_terminations``)."""

    def __init__(self, adapter: PostgresAdapter) -> None:
        self._adapter = adapter
        self._terminated: dict[str, int] = {}
        self.fetch = adapter.fetch
        self.probe = adapter.probe
        self.sessions = adapter.sessions
        self.protection = adapter.protection
        self.is_own = adapter.is_own
        self.cancel = adapter.cancel
        self.wait_gone = adapter.wait_gone
        self.pinned = adapter.pinned
        self.config = adapter.config

    def terminations_left(self, db: str) -> int:
        """How many more sessions this heal may terminate on ``db``."""
        return self._adapter.config(db).max_terminations - self._terminated.get(db, 0)

    async def signal_checked(
        self,
        db: str,
        planned: Sequence[Mapping[str, Any]],
        how: str,
        *,
        datname: str | None,
        same: Sequence[str],
        still: str | None,
    ) -> list[Checked]:
        """:meth:`PostgresAdapter.signal_checked` within this heal's termination cap."""
        cap = max(self.terminations_left(db), 0) if how == "terminate" else None
        checked = await self._adapter.signal_checked(
            db, planned, how, datname=datname, same=same, still=still, cap=cap
        )
        if how == "terminate":
            sent = sum(1 for c in checked if c.sent is not None)
            self._terminated[db] = self._terminated.get(db, 0) + sent
        return checked

    async def terminate(self, db: str, session: Session) -> bool:
        if self.terminations_left(db) <= 0:
            raise TargetRefused(
                f"termination cap reached for database {db!r} "
                f"({self._adapter.config(db).max_terminations} per heal)"
            )
        self._terminated[db] = self._terminated.get(db, 0) + 1
        return await self._adapter.terminate(db, session)
