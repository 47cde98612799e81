"""Approvals in PostgreSQL: the ``approvals`` table and its writes, as the SQLite
backend's (:mod:`healer.store.sqlite.approvals`, whose docstring says what each does).
A decision is one ``UPDATE ... WHERE decision IS NULL``: PostgreSQL's row lock makes a
racing decision (another replica's API, a chat callback) wait, then find the row closed."""

from __future__ import annotations

from typing import Any

from healer.outcomes import Phase
from healer.store import rows
from healer.store.postgres import heals
from healer.store.postgres.pool import Conn
from healer.store.types import ApprovalRow, ApprovalVerdict, Replica, dumps

DDL = (
    """CREATE TABLE IF NOT EXISTS approvals (
    heal_id     TEXT PRIMARY KEY,
    token_hash  TEXT NOT NULL,
    opened_at   DOUBLE PRECISION NOT NULL,
    expires_at  DOUBLE PRECISION NOT NULL,
    targets     TEXT NOT NULL,
    decision    TEXT,
    decided_by  TEXT,
    via         TEXT,
    comment     TEXT,
    decided_at  DOUBLE PRECISION
)""",
    "CREATE INDEX IF NOT EXISTS approvals_open ON approvals (expires_at) WHERE decision IS NULL",
)


async def _row(db: Conn, heal_id: str) -> Any:
    return await db.fetchrow("SELECT * FROM approvals WHERE heal_id=$1", heal_id)


async def open_approval(
    db: Conn,
    heal_id: str,
    token_hash: str,
    targets: list[str],
    expires_at: float,
    now: float,
    me: Replica,
) -> tuple[ApprovalRow, bool]:
    await heals.fence(db, heal_id, me)
    existing = rows.approval_row(await _row(db, heal_id))
    if existing is not None:
        if existing["decision"] is None:
            await db.execute(
                "UPDATE heals SET phase=$1 WHERE id=$2", str(Phase.AWAITING_APPROVAL), heal_id
            )
        return existing, False
    await db.execute(
        "INSERT INTO approvals (heal_id, token_hash, opened_at, expires_at, targets)"
        " VALUES ($1,$2,$3,$4,$5)",
        heal_id,
        token_hash,
        now,
        expires_at,
        dumps(targets),
    )
    await db.execute(
        "UPDATE heals SET phase=$1, targets=$2 WHERE id=$3",
        str(Phase.AWAITING_APPROVAL),
        dumps(targets),
        heal_id,
    )
    await heals.event(
        db,
        heal_id,
        Phase.AWAITING_APPROVAL,
        "approval_requested",
        {"targets": targets, "expires_at": expires_at},
        now,
        me,
    )
    opened = rows.approval_row(await _row(db, heal_id))
    assert opened is not None
    return opened, True


async def get_approval(db: Conn, heal_id: str) -> ApprovalRow | None:
    return rows.approval_row(await _row(db, heal_id))


async def decide(
    db: Conn,
    heal_id: str,
    decision: str,
    by: str,
    via: str,
    comment: str | None,
    token_hash: str | None,
    now: float,
    me: Replica,
) -> ApprovalVerdict:
    # The row lock first: a racing decision waits here, then reads the row closed.
    found = await db.fetchrow("SELECT * FROM approvals WHERE heal_id=$1 FOR UPDATE", heal_id)
    phase = await db.fetchval("SELECT phase FROM heals WHERE id=$1", heal_id)
    refusal = rows.judge_decision(found, phase, token_hash, now)
    if refusal is not None:
        return refusal
    changed = await db.fetchrow(
        "UPDATE approvals SET decision=$1, decided_by=$2, via=$3, comment=$4, decided_at=$5"
        " WHERE heal_id=$6 AND decision IS NULL RETURNING *",
        decision,
        by,
        via,
        comment,
        now,
        heal_id,
    )
    if changed is None:
        return ApprovalVerdict("done", rows.approval_row(await _row(db, heal_id)))
    kind = "approved" if decision == "approve" else "rejected"
    data = {"by": by, "via": via, "comment": comment}
    await heals.event(db, heal_id, Phase.AWAITING_APPROVAL, kind, data, now, me)
    return ApprovalVerdict("decided", rows.approval_row(changed))


async def close(
    db: Conn, heal_id: str, decision: str, now: float, me: Replica
) -> ApprovalRow | None:
    await heals.fence(db, heal_id, me)
    await db.execute(
        "UPDATE approvals SET decision=$1, via='healer', decided_at=$2"
        " WHERE heal_id=$3 AND decision IS NULL",
        decision,
        now,
        heal_id,
    )
    return rows.approval_row(await _row(db, heal_id))


async def open_approvals(db: Conn) -> list[ApprovalRow]:
    found = await db.fetch(
        "SELECT * FROM approvals WHERE decision IS NULL AND heal_id IN"
        " (SELECT id FROM heals WHERE phase = 'awaiting_approval') ORDER BY expires_at"
    )
    return [r for r in map(rows.approval_row, found) if r is not None]
