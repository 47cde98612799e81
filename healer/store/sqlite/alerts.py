"""Alerts in SQLite: the deliveries and alerts tables, exactly-once ingest, and what the
gates ask of them (has this alert resolved?).

Exactly-once: a firing alert is keyed by ``(fingerprint, startsAt)``; the first receipt
creates its heal in the same transaction, every later receipt (repeat, HA peer, retry,
after a restart) only bumps ``times_seen``. Every function takes the store's connection
and runs on its writer thread (:mod:`healer.store.sqlite.writer`)."""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from healer.store.sqlite import heals
from healer.store.types import (
    AlertKey,
    Disposition,
    HealPlan,
    ReceivedAlert,
    Replica,
    alert_key_time,
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
    """CREATE VIEW IF NOT EXISTS alert_log AS
    SELECT a.*, json_extract(d.body, '$.alerts[' || a.idx || '].labels') AS labels,
           json_extract(d.body, '$.alerts[' || a.idx || '].annotations') AS annotations
    FROM alerts a LEFT JOIN deliveries d ON d.id = a.delivery_id""",
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
    return ("""INSERT INTO alerts (fingerprint, starts_at, status, alertname, delivery_id, idx,
                    first_seen, last_seen, times_seen, disposition, heal_id)
SELECT fingerprint, starts_at, status, alertname, NULL, id, first_seen, last_seen,
       times_seen, disposition, heal_id FROM alerts_v1""",)


# Fingerprints per lookup query, well under SQLite's 32,766-parameter limit.
_LOOKUP_CHUNK = 500


def ingest_batch(db: sqlite3.Connection, alerts: Sequence[ReceivedAlert],
                 plans: Sequence[HealPlan | None], now: float,
                 received_at: float | None, body: str, me: Replica) -> list[Disposition]:
    """One query finds which alerts were seen before; new ones are inserted and
    repeats counted with one ``executemany`` each (no per-alert round trips)."""
    starts_cache: dict[datetime, str] = {}
    keyed = []
    for alert in alerts:
        starts = starts_cache.get(alert.starts_at)
        if starts is None:
            starts = starts_cache[alert.starts_at] = alert_key_time(alert.starts_at)
        keyed.append((alert, starts))
    known = _known_alerts(db, {(a.fingerprint, starts) for a, starts in keyed})
    inserts: dict[tuple[str, str, str], list[Any]] = {}
    repeats: dict[tuple[str, str, str], int] = {}
    out: list[Disposition] = []
    for idx, (alert, starts) in enumerate(keyed):
        key = (alert.fingerprint, starts, alert.status)
        seen = known.get(key)
        if seen is not None or key in inserts:
            if seen is None:
                row = inserts[key]
                row[7] += 1  # times_seen of a row this batch inserts
                disposition, heal_id = row[8], row[9]
            else:
                repeats[key] = repeats.get(key, 0) + 1
                disposition, heal_id = seen
            out.append(Disposition(alert.fingerprint, "duplicate", heal_id,
                                   reason=f"already received ({disposition})"))
            continue
        heal_id = None
        if alert.status == "resolved":
            _note_resolved(db, alert, now, me)
            disposition, result = "resolved", Disposition(alert.fingerprint, "resolved")
        elif (alert.fingerprint, starts, "resolved") in known or \
                (alert.fingerprint, starts, "resolved") in inserts:
            # A late re-send (slow HA peer, retry) of an alert already seen resolved.
            disposition = "stale"
            result = Disposition(alert.fingerprint, "ignored",
                                 reason="stale: this alert was already resolved")
        elif (plan := plans[idx]) is None:
            disposition = "ignored"
            result = Disposition(alert.fingerprint, "ignored", reason="no rule matches")
        else:
            heal_id = heals.insert_heal(db, plan, alert, "alert", now, me,
                                       received_at=received_at)
            disposition = "started"
            result = Disposition(alert.fingerprint, "started", heal_id, plan.rule, plan=plan)
        inserts[key] = [alert.fingerprint, starts, alert.status, alert.name, idx, now, now,
                        1, disposition, heal_id]
        out.append(result)
    if inserts:
        delivery = db.execute("INSERT INTO deliveries (received_at, body) VALUES (?, ?)",
                              (received_at or now, body)).lastrowid
        db.executemany(
            "INSERT INTO alerts (fingerprint, starts_at, status, alertname, idx,"
            " first_seen, last_seen, times_seen, disposition, heal_id, delivery_id)"
            " VALUES (?,?,?,?,?,?,?,?,?,?,?)",  # one SQL text: a prepared statement
            [(*row, delivery) for row in inserts.values()])
    if repeats:
        db.executemany(
            "UPDATE alerts SET times_seen = times_seen + ?, last_seen = ?"
            " WHERE fingerprint=? AND starts_at=? AND status=?",
            [(n, now, *key) for key, n in repeats.items()])
    return out


def _known_alerts(db: sqlite3.Connection, keys: set[tuple[str, str]]
                  ) -> dict[tuple[str, str, str], tuple[str, str | None]]:
    """(fingerprint, starts_at, status) -> (disposition, heal_id) of every stored row
    for these (fingerprint, starts_at) pairs, whatever its status."""
    known: dict[tuple[str, str, str], tuple[str, str | None]] = {}
    fingerprints = sorted({fp for fp, _ in keys})
    for i in range(0, len(fingerprints), _LOOKUP_CHUNK):
        chunk = fingerprints[i:i + _LOOKUP_CHUNK]
        # Looked up by fingerprint alone, so the UNIQUE index serves it (a row-value
        # IN over two columns scans the table); other startsAt are filtered out here.
        for row in db.execute(
                "SELECT fingerprint, starts_at, status, disposition, heal_id FROM alerts"
                f" WHERE fingerprint IN ({','.join('?' * len(chunk))})", chunk):
            if (row[0], row[1]) in keys:
                known[(row[0], row[1], row[2])] = (row[3], row[4])
    return known


def _note_resolved(db: sqlite3.Connection, alert: ReceivedAlert, now: float,
                   me: Replica) -> None:
    open_heals = db.execute(
        "SELECT id, phase FROM heals WHERE fingerprint=? AND phase != 'done'",
        (alert.fingerprint,)).fetchall()
    for heal in open_heals:
        heals.event(db, heal["id"], heal["phase"], "alert_resolved",
                    {"ends_at": alert.ends_at}, now, me)


def alert_counts(db: sqlite3.Connection) -> dict[str, int]:
    return {r[0]: r[1] for r in db.execute(
        "SELECT disposition, COUNT(*) FROM alerts GROUP BY disposition")}


def resolved_at(db: sqlite3.Connection, alert: AlertKey) -> float | None:
    """When healer first received Alertmanager's resolved notification for this alert
    (fingerprint + startsAt), or None while it has not."""
    row = db.execute("SELECT first_seen FROM alerts WHERE fingerprint=? AND starts_at=? AND"
                     " status='resolved'", alert).fetchone()
    return None if row is None else float(row[0])


def resolved_alerts(db: sqlite3.Connection, fingerprints: Sequence[str]
                    ) -> dict[AlertKey, float]:
    """:func:`resolved_at` for every resolved alert of these fingerprints at once
    (the start-up resume asks about all its pending heals in one go)."""
    found: dict[AlertKey, float] = {}
    unique = sorted(set(fingerprints))
    for i in range(0, len(unique), _LOOKUP_CHUNK):  # well under SQLite's parameter limit
        chunk = unique[i:i + _LOOKUP_CHUNK]
        for row in db.execute(
                "SELECT fingerprint, starts_at, first_seen FROM alerts WHERE status='resolved'"
                f" AND fingerprint IN ({','.join('?' * len(chunk))})", chunk):
            found[(row[0], row[1])] = float(row[2])
    return found
