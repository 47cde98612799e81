"""Alerts in SQLite: the deliveries and alerts tables, exactly-once ingest, and what the
gates ask of them (has this alert resolved?).

Exactly-once: a firing alert is keyed by ``(fingerprint, startsAt)``; the first receipt
creates its heal in the same transaction, every later receipt (repeat, HA peer, retry,
after a restart) only bumps ``times_seen``. Every function takes the store's connection
and runs on its writer thread (:mod:`healer.store.sqlite.writer`)."""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence

from healer.store import rows
from healer.store.sqlite import heals
from healer.store.types import (
    AlertKey,
    Disposition,
    HealPlan,
    ReceivedAlert,
    Replica,
)

DDL = (
    # Every webhook POST that brought at least one new alert, as received: the alerts'
    # labels and annotations live here, not re-encoded per alert (see the alert_log view).
    """CREATE TABLE IF NOT EXISTS deliveries (
    id          INTEGER PRIMARY KEY,
    received_at REAL NOT NULL,
    body        TEXT NOT NULL
)""",
    # One row per alert identity and status; repeats only bump times_seen / last_seen.
    """CREATE TABLE IF NOT EXISTS alerts (
    fingerprint TEXT NOT NULL,
    starts_at   TEXT NOT NULL,
    status      TEXT NOT NULL,
    alertname   TEXT NOT NULL,
    delivery_id INTEGER,
    idx         INTEGER,
    first_seen  REAL NOT NULL,
    last_seen   REAL NOT NULL,
    times_seen  INTEGER NOT NULL DEFAULT 1,
    disposition TEXT NOT NULL,
    heal_id     TEXT,
    PRIMARY KEY (fingerprint, starts_at, status)
) WITHOUT ROWID""",
)

# Every alert with its receipts, disposition, labels and annotations: the stored rows
# (alerts a rule matched, their resolved notices), then each unmatched alert of each kept
# body, once per body that brought it (no row counts its re-sends), read from the body.
# Schema 6: before it, unmatched alerts had rows too.
LOG_DDL = (
    "DROP VIEW IF EXISTS alert_log",
    """CREATE VIEW alert_log AS
    SELECT a.*, json_extract(d.body, '$.alerts[' || a.idx || '].labels') AS labels,
           json_extract(d.body, '$.alerts[' || a.idx || '].annotations') AS annotations
    FROM alerts a LEFT JOIN deliveries d ON d.id = a.delivery_id
    UNION ALL
    SELECT json_extract(j.value, '$.fingerprint'), json_extract(j.value, '$.startsAt'),
           json_extract(j.value, '$.status'),
           COALESCE(json_extract(j.value, '$.labels.alertname'), ''), d.id, j.key,
           d.received_at, d.received_at, 1, 'ignored', NULL,
           json_extract(j.value, '$.labels'), json_extract(j.value, '$.annotations')
    FROM deliveries d, json_each(d.body, '$.alerts') j
    WHERE json_extract(j.value, '$.fingerprint') IS NOT NULL AND NOT EXISTS (
        SELECT 1 FROM alerts a WHERE a.fingerprint = json_extract(j.value, '$.fingerprint')
        AND a.status = json_extract(j.value, '$.status'))""",
)


# Version 1 stored each alert's labels and annotations as JSON in its own row. Its rows
# move to the new table (exactly-once must remember them); their labels stay readable
# in alerts_v1.
def v1_set_aside(db: sqlite3.Connection) -> Sequence[str]:
    """Before the version-2 tables: a version-1 ``alerts`` table becomes ``alerts_v1``."""
    if "labels" not in {r[1] for r in db.execute("PRAGMA table_info(alerts)")}:
        return ()
    return ("ALTER TABLE alerts RENAME TO alerts_v1", "DROP VIEW IF EXISTS alert_log")


def v1_copy(db: sqlite3.Connection) -> Sequence[str]:
    """After them: the version-1 rows (set aside just now) copied into ``alerts``."""
    if not db.execute("PRAGMA table_info(alerts_v1)").fetchall():
        return ()
    return (
        """INSERT INTO alerts (fingerprint, starts_at, status, alertname, delivery_id, idx,
                    first_seen, last_seen, times_seen, disposition, heal_id)
SELECT fingerprint, starts_at, status, alertname, NULL, id, first_seen, last_seen,
       times_seen, disposition, heal_id FROM alerts_v1""",
    )


# Fingerprints per lookup query, well under SQLite's 32,766-parameter limit.
_LOOKUP_CHUNK = 500


def ingest_batch(
    db: sqlite3.Connection,
    alerts: Sequence[ReceivedAlert],
    plans: Sequence[HealPlan | None],
    now: float,
    received_at: float | None,
    body: str,
    me: Replica,
    fresh_unmatched: bool = True,
) -> list[Disposition]:
    """One query finds which of the alerts that keep rows were seen before; new ones are
    inserted and repeats counted with one ``executemany`` each (no per-alert round
    trips). Unmatched alerts keep no row (:class:`healer.store.rows.IngestBatch`)."""
    if rows.only_noise(alerts, plans):
        if fresh_unmatched:
            _keep_body(db, received_at or now, body)
        return rows.all_ignored(alerts)
    keyed = rows.key_alerts(alerts)
    wanted = rows.looked_up(keyed, plans)
    batch = rows.IngestBatch(_known_alerts(db, wanted) if wanted else {}, now)
    for idx, (alert, starts) in enumerate(keyed):
        plan, heal_id = plans[idx], None
        if batch.ignore_unmatched(alert, starts, plan) or batch.repeat(alert, starts):
            continue
        kind = batch.kind(alert, starts, plan)
        if kind == "resolved":
            _note_resolved(db, alert, now, me)
        elif kind == "started" and plan is not None:
            heal_id = heals.insert_heal(db, plan, alert, "alert", now, me, received_at=received_at)
        batch.add(idx, alert, starts, kind, plan, heal_id)
    if batch.keeps_body(fresh_unmatched):
        delivery = _keep_body(db, received_at or now, body)
        if batch.inserts:
            db.executemany(
                "INSERT INTO alerts (fingerprint, starts_at, status, alertname, idx,"
                " first_seen, last_seen, times_seen, disposition, heal_id, delivery_id)"
                " VALUES (?,?,?,?,?,?,?,?,?,?,?)",  # one SQL text: a prepared statement
                batch.insert_rows(delivery),
            )
    if batch.repeats:
        db.executemany(
            "UPDATE alerts SET times_seen = times_seen + ?, last_seen = ?"
            " WHERE fingerprint=? AND starts_at=? AND status=?",
            batch.repeat_rows(),
        )
    return batch.out


def _keep_body(db: sqlite3.Connection, received_at: float, body: str) -> int | None:
    return db.execute(
        "INSERT INTO deliveries (received_at, body) VALUES (?, ?)", (received_at, body)
    ).lastrowid


def _known_alerts(
    db: sqlite3.Connection, keys: set[tuple[str, str]]
) -> dict[tuple[str, str, str], tuple[str, str | None]]:
    """(fingerprint, starts_at, status) -> (disposition, heal_id) of every stored row
    for these (fingerprint, starts_at) pairs, whatever its status."""
    known: dict[tuple[str, str, str], tuple[str, str | None]] = {}
    fingerprints = sorted({fp for fp, _ in keys})
    for i in range(0, len(fingerprints), _LOOKUP_CHUNK):
        chunk = fingerprints[i : i + _LOOKUP_CHUNK]
        # Looked up by fingerprint alone, so the UNIQUE index serves it (a row-value
        # IN over two columns scans the table); other startsAt are filtered out here.
        for row in db.execute(
            "SELECT fingerprint, starts_at, status, disposition, heal_id FROM alerts"
            f" WHERE fingerprint IN ({','.join('?' * len(chunk))})",
            chunk,
        ):
            if (row[0], row[1]) in keys:
                known[(row[0], row[1], row[2])] = (row[3], row[4])
    return known


def _note_resolved(db: sqlite3.Connection, alert: ReceivedAlert, now: float, me: Replica) -> None:
    open_heals = db.execute(
        "SELECT id, phase FROM heals WHERE fingerprint=? AND phase != 'done'", (alert.fingerprint,)
    ).fetchall()
    for heal in open_heals:
        heals.event(
            db, heal["id"], heal["phase"], "alert_resolved", {"ends_at": alert.ends_at}, now, me
        )


def alert_counts(db: sqlite3.Connection) -> dict[str, int]:
    return {
        r[0]: r[1]
        for r in db.execute("SELECT disposition, COUNT(*) FROM alerts GROUP BY disposition")
    }


def resolved_at(db: sqlite3.Connection, alert: AlertKey) -> float | None:
    """When healer first received Alertmanager's resolved notification for this alert
    (fingerprint + startsAt), or None while it has not."""
    row = db.execute(
        "SELECT first_seen FROM alerts WHERE fingerprint=? AND starts_at=? AND status='resolved'",
        alert,
    ).fetchone()
    return None if row is None else float(row[0])


def resolved_alerts(db: sqlite3.Connection, fingerprints: Sequence[str]) -> dict[AlertKey, float]:
    """:func:`resolved_at` for every resolved alert of these fingerprints at once
    (the start-up resume asks about all its pending heals in one go)."""
    found: dict[AlertKey, float] = {}
    unique = sorted(set(fingerprints))
    for i in range(0, len(unique), _LOOKUP_CHUNK):  # well under SQLite's parameter limit
        chunk = unique[i : i + _LOOKUP_CHUNK]
        for row in db.execute(
            "SELECT fingerprint, starts_at, first_seen FROM alerts WHERE status='resolved'"
            f" AND fingerprint IN ({','.join('?' * len(chunk))})",
            chunk,
        ):
            found[(row[0], row[1])] = float(row[2])
    return found
