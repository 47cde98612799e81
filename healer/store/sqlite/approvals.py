"""Approvals in SQLite (``mode: approve``): the ``approvals`` table, one row per heal
that asked a human, opened once and closed once.

* :func:`open_approval`: fenced (the heal's holder); sets the heal's phase
  ``awaiting_approval`` and its targets, and inserts the row with the token's SHA-256
  (never the token) and the deadline, in one transaction. A heal that asks again (resumed
  after a restart or a take-over) keeps its first row: same token, same deadline.
* :func:`decide`: a human's decision; not fenced (any replica's API or callback takes
  it). One conditional write (``WHERE decision IS NULL``): of racing decisions exactly one
  closes the approval; the others find it closed.
* :func:`close`: the heal's own end of the wait (``expire``, ``resolved``), as
  conditional: a human's decision that won the race is returned instead.

Every function runs on the store's single writer thread, inside the caller's write or
read."""

from __future__ import annotations

import sqlite3
from typing import Any

from healer.outcomes import Phase
from healer.store import rows
from healer.store.sqlite import heals
from healer.store.types import ApprovalRow, ApprovalVerdict, Replica, dumps

DDL = (
    """CREATE TABLE IF NOT EXISTS approvals (
    heal_id     TEXT PRIMARY KEY,
    token_hash  TEXT NOT NULL,
    opened_at   REAL NOT NULL,
    expires_at  REAL NOT NULL,
    targets     TEXT NOT NULL,
    decision    TEXT,
    decided_by  TEXT,
    via         TEXT,
    comment     TEXT,
    decided_at  REAL
)""",
    "CREATE INDEX IF NOT EXISTS approvals_open ON approvals (expires_at) WHERE decision IS NULL",
)


def _row(db: sqlite3.Connection, heal_id: str) -> Any:
    return db.execute("SELECT * FROM approvals WHERE heal_id=?", (heal_id,)).fetchone()


def open_approval(
    db: sqlite3.Connection,
    heal_id: str,
    token_hash: str,
    targets: list[str],
    expires_at: float,
    now: float,
    me: Replica,
) -> tuple[ApprovalRow, bool]:
    """(the heal's approval, True if this call opened it)."""
    heals.fence(db, heal_id, me)
    existing = rows.approval_row(_row(db, heal_id))
    if existing is not None:
        if existing["decision"] is None:
            db.execute(
                "UPDATE heals SET phase=? WHERE id=?", (str(Phase.AWAITING_APPROVAL), heal_id)
            )
        return existing, False
    db.execute(
        "INSERT INTO approvals (heal_id, token_hash, opened_at, expires_at, targets)"
        " VALUES (?,?,?,?,?)",
        (heal_id, token_hash, now, expires_at, dumps(targets)),
    )
    db.execute(
        "UPDATE heals SET phase=?, targets=? WHERE id=?",
        (str(Phase.AWAITING_APPROVAL), dumps(targets), heal_id),
    )
    heals.event(
        db,
        heal_id,
        Phase.AWAITING_APPROVAL,
        "approval_requested",
        {"targets": targets, "expires_at": expires_at},
        now,
        me,
    )
    opened = rows.approval_row(_row(db, heal_id))
    assert opened is not None
    return opened, True


def get_approval(db: sqlite3.Connection, heal_id: str) -> ApprovalRow | None:
    return rows.approval_row(_row(db, heal_id))


def decide(
    db: sqlite3.Connection,
    heal_id: str,
    decision: str,
    by: str,
    via: str,
    comment: str | None,
    token_hash: str | None,
    now: float,
    me: Replica,
) -> ApprovalVerdict:
    phase = db.execute("SELECT phase FROM heals WHERE id=?", (heal_id,)).fetchone()
    refusal = rows.judge_decision(_row(db, heal_id), phase and phase[0], token_hash, now)
    if refusal is not None:
        return refusal
    changed = db.execute(
        "UPDATE approvals SET decision=?, decided_by=?, via=?, comment=?, decided_at=?"
        " WHERE heal_id=? AND decision IS NULL",
        (decision, by, via, comment, now, heal_id),
    ).rowcount
    row = rows.approval_row(_row(db, heal_id))
    if changed != 1:
        return ApprovalVerdict("done", row)
    kind = "approved" if decision == "approve" else "rejected"
    data = {"by": by, "via": via, "comment": comment}
    heals.event(db, heal_id, Phase.AWAITING_APPROVAL, kind, data, now, me)
    return ApprovalVerdict("decided", row)


def close(
    db: sqlite3.Connection, heal_id: str, decision: str, now: float, me: Replica
) -> ApprovalRow | None:
    """Close the heal's open approval as ``decision`` (the heal's holder only); the
    approval as it now is (a human's earlier decision stays)."""
    heals.fence(db, heal_id, me)
    db.execute(
        "UPDATE approvals SET decision=?, via='healer', decided_at=?"
        " WHERE heal_id=? AND decision IS NULL",
        (decision, now, heal_id),
    )
    return rows.approval_row(_row(db, heal_id))


def open_approvals(db: sqlite3.Connection) -> list[ApprovalRow]:
    """Every approval still open whose heal waits for it, soonest deadline first."""
    found = db.execute(
        "SELECT * FROM approvals WHERE decision IS NULL AND heal_id IN"
        " (SELECT id FROM heals WHERE phase = 'awaiting_approval') ORDER BY expires_at"
    )
    return [r for r in map(rows.approval_row, found) if r is not None]
