"""Alerts in PostgreSQL: the deliveries and alerts tables, exactly-once ingest across
processes, and what the gates ask of them (has this alert resolved?).

Exactly-once: ``(fingerprint, starts_at, status)`` is the alerts table's primary key.
An ingest first counts, in one UPDATE, the receipts of the rows it repeats; only if some
alert is new does it take a transaction-level advisory lock per alert identity
(fingerprint, startsAt), in one sorted order, then decide as the SQLite store does, and
insert with ``ON CONFLICT DO NOTHING``; the delivery row, the alert rows and the new
heals commit in one transaction. Racing deliveries from any number of processes
therefore create one heal per alert identity: the second waits for the first's lock
(or, for a row already there, its row lock), and then sees its rows.
"""

from __future__ import annotations

from collections.abc import Sequence

from healer.replica import Replica
from healer.store import rows
from healer.store.postgres import heals
from healer.store.postgres.pool import Conn, lock
from healer.store.types import AlertKey, Disposition, HealPlan, ReceivedAlert

DDL = (
    """CREATE TABLE IF NOT EXISTS deliveries (
    id          BIGSERIAL PRIMARY KEY,
    received_at DOUBLE PRECISION NOT NULL,
    body        TEXT NOT NULL
)""",
    """CREATE TABLE IF NOT EXISTS alerts (
    fingerprint TEXT NOT NULL,
    starts_at   TEXT NOT NULL,
    status      TEXT NOT NULL,
    alertname   TEXT NOT NULL,
    delivery_id BIGINT,
    idx         INTEGER,
    first_seen  DOUBLE PRECISION NOT NULL,
    last_seen   DOUBLE PRECISION NOT NULL,
    times_seen  INTEGER NOT NULL DEFAULT 1,
    disposition TEXT NOT NULL,
    heal_id     TEXT,
    PRIMARY KEY (fingerprint, starts_at, status)
)""",
)

# alert_log: the stored rows (alerts a rule matched, their resolved notices), then each
# unmatched alert of each kept body, once per body that brought it, read from the body
# (as in the SQLite store's view). Schema 5: before it, unmatched alerts had rows too.
LOG_DDL = (
    "DROP VIEW IF EXISTS alert_log",
    """CREATE VIEW alert_log AS
    SELECT a.*, (d.body::jsonb -> 'alerts' -> a.idx -> 'labels') AS labels,
           (d.body::jsonb -> 'alerts' -> a.idx -> 'annotations') AS annotations
    FROM alerts a LEFT JOIN deliveries d ON d.id = a.delivery_id
    UNION ALL
    SELECT j.value ->> 'fingerprint', j.value ->> 'startsAt', j.value ->> 'status',
           COALESCE(j.value -> 'labels' ->> 'alertname', ''), d.id, (j.n - 1)::integer,
           d.received_at, d.received_at, 1, 'ignored', NULL::text,
           j.value -> 'labels', j.value -> 'annotations'
    FROM deliveries d
    CROSS JOIN LATERAL jsonb_array_elements(d.body::jsonb -> 'alerts')
        WITH ORDINALITY AS j(value, n)
    WHERE j.value ? 'fingerprint' AND NOT EXISTS (
        SELECT 1 FROM alerts a WHERE a.fingerprint = j.value ->> 'fingerprint'
        AND a.status = j.value ->> 'status')""",
)


def alert_lock(fingerprint: str, starts: str) -> tuple[str, ...]:
    return ("alert", fingerprint, starts)


async def ingest_batch(
    db: Conn,
    alerts: Sequence[ReceivedAlert],
    plans: Sequence[HealPlan | None],
    now: float,
    received_at: float | None,
    body: str,
    me: Replica,
    fresh_unmatched: bool = True,
) -> list[Disposition]:
    if rows.only_noise(alerts, plans):
        if fresh_unmatched:
            await _keep_body(db, received_at or now, body)
        return rows.all_ignored(alerts)
    keyed = rows.key_alerts(alerts)
    wanted = rows.looked_up(keyed, plans)
    copies = rows.row_copies(keyed, wanted)
    counted = await _count_repeats(db, copies, now) if copies else {}
    if len(counted) < len(copies):  # new rows to decide: under the identities' locks
        await lock(db, *(alert_lock(fp, starts) for fp, starts in wanted))
        known = await _known_alerts(db, wanted)
    else:
        known = counted
    batch = rows.IngestBatch(known, now)
    batch.counted.update(counted)
    for idx, (alert, starts) in enumerate(keyed):
        plan, heal_id = plans[idx], None
        if batch.ignore_unmatched(alert, starts, plan) or batch.repeat(alert, starts):
            continue
        kind = batch.kind(alert, starts, plan)
        if kind == "resolved":
            await _note_resolved(db, alert, now, me)
        elif kind == "started" and plan is not None:
            heal_id = await heals.insert_heal(
                db, plan, alert, "alert", now, me, received_at=received_at
            )
        batch.add(idx, alert, starts, kind, plan, heal_id)
    if batch.keeps_body(fresh_unmatched):
        delivery = await _keep_body(db, received_at or now, body)
        if batch.inserts:
            await db.executemany(
                "INSERT INTO alerts (fingerprint, starts_at, status, alertname, idx,"
                " first_seen, last_seen, times_seen, disposition, heal_id, delivery_id)"
                " VALUES ($1,$2,$3,$4,$5,$6,$7,$8,$9,$10,$11)"
                " ON CONFLICT (fingerprint, starts_at, status) DO NOTHING",
                batch.insert_rows(delivery),
            )
    if batch.repeats:
        await db.executemany(
            "UPDATE alerts SET times_seen = times_seen + $1, last_seen = $2"
            " WHERE fingerprint=$3 AND starts_at=$4 AND status=$5",
            batch.repeat_rows(),
        )
    return batch.out


async def _keep_body(db: Conn, received_at: float, body: str) -> int:
    return int(
        await db.fetchval(
            "INSERT INTO deliveries (received_at, body) VALUES ($1, $2) RETURNING id",
            received_at,
            body,
        )
    )


async def _count_repeats(db: Conn, copies: dict[rows.AlertRowKey, int], now: float) -> rows.Known:
    """Count the receipts of every row this delivery repeats, in one statement (its row
    locks serialise racing deliveries of one alert); the rows found, as ``Known``. Most
    of a storm is repeats: those need neither the identity locks nor a lookup, and a
    delivery of repeats only is one statement and its commit."""
    keys = sorted(copies)
    found = await db.fetch(
        "UPDATE alerts AS a SET times_seen = a.times_seen + v.n, last_seen = $5"
        " FROM unnest($1::text[], $2::text[], $3::text[], $4::int[]) AS v(fp, starts, status, n)"
        " WHERE a.fingerprint = v.fp AND a.starts_at = v.starts AND a.status = v.status"
        " RETURNING a.fingerprint, a.starts_at, a.status, a.disposition, a.heal_id",
        [k[0] for k in keys],
        [k[1] for k in keys],
        [k[2] for k in keys],
        [copies[k] for k in keys],
        now,
    )
    return {(r[0], r[1], r[2]): (r[3], r[4]) for r in found}


async def _known_alerts(
    db: Conn, keys: set[tuple[str, str]]
) -> dict[tuple[str, str, str], tuple[str, str | None]]:
    known: dict[tuple[str, str, str], tuple[str, str | None]] = {}
    stored = await db.fetch(
        "SELECT fingerprint, starts_at, status, disposition, heal_id FROM alerts"
        " WHERE fingerprint = ANY($1::text[])",
        sorted({fp for fp, _ in keys}),
    )
    for row in stored:
        if (row[0], row[1]) in keys:
            known[(row[0], row[1], row[2])] = (row[3], row[4])
    return known


async def _note_resolved(db: Conn, alert: ReceivedAlert, now: float, me: Replica) -> None:
    open_heals = await db.fetch(
        "SELECT id, phase FROM heals WHERE fingerprint=$1 AND phase != 'done' ORDER BY id",
        alert.fingerprint,
    )
    for heal in open_heals:
        await heals.event(
            db, heal["id"], heal["phase"], "alert_resolved", {"ends_at": alert.ends_at}, now, me
        )


async def alert_counts(db: Conn) -> dict[str, int]:
    return {
        r[0]: r[1]
        for r in await db.fetch(
            "SELECT disposition, COUNT(*)::int FROM alerts GROUP BY disposition"
        )
    }


async def resolved_at(db: Conn, alert: AlertKey) -> float | None:
    value = await db.fetchval(
        "SELECT first_seen FROM alerts WHERE fingerprint=$1 AND starts_at=$2 AND status='resolved'",
        *alert,
    )
    return None if value is None else float(value)


async def resolved_alerts(db: Conn, fingerprints: Sequence[str]) -> dict[AlertKey, float]:
    return {
        (r[0], r[1]): float(r[2])
        for r in await db.fetch(
            "SELECT fingerprint, starts_at, first_seen FROM alerts WHERE status='resolved'"
            " AND fingerprint = ANY($1::text[])",
            sorted(set(fingerprints)),
        )
    }
