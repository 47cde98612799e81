"""Which PostgreSQL sessions healer never signals, as data: each rule once, read both by
Python (:func:`protection`, over a :class:`~healer.pg_session.Session`) and by SQL
(:func:`checked_signal_sql`, over the same columns of ``pg_stat_activity``), so that the
re-read before a signal and the signal itself can be one statement, one round trip,
without a second copy of the protections.

Usage (healer/postgres_adapter.py does this)::

    why = protection(session, config, own_pids)          # None: it may be signalled
    sql = checked_signal_sql("terminate", same=("backend_start", "xact_start"),
                             still="cardinality(f.blocking) > 0")
    rows = await conn.fetch(sql, *checked_signal_args(...))

The rules, first match wins (tests/integration/test_pg_protection.py holds the SQL to
the Python on the same real sessions):

====================  ==============================================================
``own``               healer's own connections (their pids, or application ``healer``)
``not_client``        anything but a client backend (replication, autovacuum, ...)
``superuser``         a superuser, unless the database's config allows them
``user``              a user in ``protect.users``
``application``       an application name in ``protect.application_names``
====================  ==============================================================
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from healer.config import DatabaseConfig
    from healer.pg_session import Session

APPLICATION_NAME = "healer"


@dataclass(frozen=True)
class Protection:
    """One rule: ``applies`` in Python, ``sql`` the same test over the fresh row ``f``
    (its parameters by name: ``{own}``, ``{app}``, ``{allow_superusers}``, ``{users}``,
    ``{apps}``), ``reason`` what a heal records."""

    key: str
    applies: Callable[[Session, DatabaseConfig, frozenset[int]], bool]
    sql: str
    reason: Callable[[Session], str]


def is_own(session: Session, own: frozenset[int]) -> bool:
    """One of healer's own connections: its pid is one of ``own``, or its application
    name is healer's."""
    return session.pid in own or session.application_name == APPLICATION_NAME


PROTECTIONS: tuple[Protection, ...] = (
    Protection(
        "own",
        lambda s, cfg, own: is_own(s, own),
        "(f.pid = ANY({own}) OR f.application_name = {app})",
        lambda s: "healer's own session",
    ),
    Protection(
        "not_client",
        lambda s, cfg, own: s.backend_type != "client backend",
        "f.backend_type <> 'client backend'",
        lambda s: f"not a client backend ({s.backend_type or 'unknown'})",
    ),
    Protection(
        "superuser",
        lambda s, cfg, own: s.superuser and not cfg.allow_superusers,
        "(f.superuser AND NOT {allow_superusers})",
        lambda s: f"superuser {s.user!r}",
    ),
    Protection(
        "user",
        lambda s, cfg, own: s.user in cfg.protect.users,
        "f.usename = ANY({users})",
        lambda s: f"protected user {s.user!r}",
    ),
    Protection(
        "application",
        lambda s, cfg, own: s.application_name in cfg.protect.application_names,
        "f.application_name = ANY({apps})",
        lambda s: f"protected application {s.application_name!r}",
    ),
)
_BY_KEY = {p.key: p for p in PROTECTIONS}


def protection_rule(session: Session, cfg: DatabaseConfig, own: frozenset[int]) -> str | None:
    """The key of the first rule that protects ``session``, or None."""
    return next((p.key for p in PROTECTIONS if p.applies(session, cfg, own)), None)


def protection(session: Session, cfg: DatabaseConfig, own: frozenset[int]) -> str | None:
    """Why ``session`` must not be signalled, or None if it may be."""
    key = protection_rule(session, cfg, own)
    return None if key is None else _BY_KEY[key].reason(session)


def reason(key: str, session: Session) -> str | None:
    """The recorded reason of the protection rule ``key`` for ``session``; None when
    ``key`` names no protection rule."""
    rule = _BY_KEY.get(key)
    return None if rule is None else rule.reason(session)


# The columns of a fresh session, as PostgresAdapter.sessions reads them (``a``:
# pg_stat_activity, ``r``: pg_roles), named as its rows are.
SESSION_COLUMNS = """
       a.datname, a.usename, coalesce(a.application_name, '') AS application_name,
       host(a.client_addr) AS client_addr, coalesce(a.backend_type, '') AS backend_type,
       a.state, a.wait_event_type, a.wait_event,
       extract(epoch FROM now() - a.xact_start)::float8 AS xact_age,
       extract(epoch FROM now() - a.query_start)::float8 AS query_age,
       extract(epoch FROM now() - a.state_change)::float8 AS state_age,
       left(coalesce(a.query, ''), 200) AS query,
       coalesce(r.rolsuper, false) AS superuser,
       pg_blocking_pids(a.pid) AS blocked_by,
       a.backend_start, a.xact_start, a.query_start"""

IDENTITY = ("backend_start", "xact_start", "query_start")
_FUNCTIONS = {"terminate": "pg_terminate_backend", "cancel": "pg_cancel_backend"}
_PARAMS = {
    "own": "$6::int[]",
    "app": "$7::text",
    "allow_superusers": "$8::bool",
    "users": "$9::text[]",
    "apps": "$10::text[]",
}


def checked_signal_sql(how: str, *, same: Sequence[str], still: str | None) -> str:
    """One statement that re-reads each planned session and signals those that are
    still the same backend (pid and every column of ``same`` unchanged), still qualify
    (``still``: a SQL condition over the fresh row ``f``; None: any), are protected by
    no rule of :data:`PROTECTIONS` and are within the cap, in plan order. A row per
    planned session, in plan order: the fresh columns (``found`` false when it is gone),
    ``refused`` (``gone``, a ``same`` column, ``still``, a protection key, ``cap``, or
    NULL) and ``sent`` (what the signal function returned; NULL when not sent).

    Parameters: see :func:`checked_signal_args`."""
    unknown = [k for k in same if k not in IDENTITY]
    if unknown or how not in _FUNCTIONS:
        raise ValueError(f"cannot check {unknown} or signal {how!r}")
    changed = "".join(
        f"\n                WHEN f.{k} IS DISTINCT FROM f.planned_{k} THEN '{k}'" for k in same
    )
    still_case = "" if still is None else f"\n                WHEN NOT {still} THEN 'still'"
    protected = "".join(
        f"\n                WHEN {p.sql.format(**_PARAMS)} THEN '{p.key}'" for p in PROTECTIONS
    )
    return f"""
WITH plan AS MATERIALIZED (
    SELECT * FROM unnest($1::int[], $2::timestamptz[], $3::timestamptz[], $4::timestamptz[])
           WITH ORDINALITY AS p(pid, backend_start, xact_start, query_start, ord)
), scope AS MATERIALIZED (
    -- Only a backend waiting for a lock can be blocked: pg_blocking_pids, which reads the
    -- lock manager, runs for those alone. One that starts waiting after this snapshot
    -- is missed, so a root may look no longer blocking and be refused: the safe side.
    SELECT w.pid, pg_blocking_pids(w.pid) AS blocked_by
      FROM pg_stat_activity w
     WHERE w.pid <> pg_backend_pid() AND w.wait_event_type = 'Lock'
       AND ($5::text IS NULL OR w.datname = $5)
), fresh AS MATERIALIZED (
    SELECT p.ord, p.pid, a.pid IS NOT NULL AS found,
           p.backend_start AS planned_backend_start, p.xact_start AS planned_xact_start,
           p.query_start AS planned_query_start,{SESSION_COLUMNS},
           ARRAY(SELECT s.pid FROM scope s WHERE a.pid = ANY(s.blocked_by)) AS blocking
      FROM plan p
      LEFT JOIN pg_stat_activity a
        ON a.pid = p.pid AND a.pid <> pg_backend_pid() AND ($5::text IS NULL OR a.datname = $5)
      LEFT JOIN pg_roles r ON r.oid = a.usesysid
), judged AS MATERIALIZED (
    SELECT f.*,
           CASE WHEN NOT f.found THEN 'gone'{changed}{still_case}{protected}
           END AS refused
      FROM fresh f
), ranked AS MATERIALIZED (
    SELECT j.*,
           count(*) FILTER (WHERE j.refused IS NULL) OVER (ORDER BY j.ord) AS eligible_rank
      FROM judged j
)
SELECT r.*,
       CASE WHEN r.refused IS NULL AND ($11::int IS NULL OR r.eligible_rank <= $11)
            THEN {_FUNCTIONS[how]}(r.pid) END AS sent,
       r.refused IS NULL AND $11::int IS NOT NULL AND r.eligible_rank > $11 AS over_cap
  FROM ranked r
 ORDER BY r.ord
"""


def checked_signal_args(
    planned: Sequence[Mapping[str, Any]],
    *,
    datname: str | None,
    own: frozenset[int],
    cfg: DatabaseConfig,
    cap: int | None,
) -> tuple[Any, ...]:
    """The parameters of :func:`checked_signal_sql`: the planned sessions (records with
    ``pid`` and the ISO times of :data:`IDENTITY`), the database filter, what the
    protections read, and the cap (None: none)."""

    def times(key: str) -> list[datetime | None]:
        return [datetime.fromisoformat(p[key]) if p.get(key) else None for p in planned]

    return (
        [int(p["pid"]) for p in planned],
        times("backend_start"),
        times("xact_start"),
        times("query_start"),
        datname,
        sorted(own),
        APPLICATION_NAME,
        cfg.allow_superusers,
        list(cfg.protect.users),
        list(cfg.protect.application_names),
        cap,
    )
