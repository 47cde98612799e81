"""The durable record: every alert received, every heal and its timeline.

SQLite in WAL mode with ``synchronous=FULL``: when a call returns, what it wrote
survives a crash. One connection lives on one dedicated thread, so writes are
serialised without locks and the event loop never blocks on disk.

Group commit: writes that arrive while a transaction is being committed wait for it
and then go to disk together, in one transaction and one fsync, each in its own
savepoint (one write failing does not undo the others). An idle journal commits a
lone write at once; a busy one commits many per fsync. Nothing answers before its
own data is durable.

Usage::

    journal = await Journal.open(Path("healer.db"))
    dispositions = await journal.ingest(alerts, match=ruleset.plan_for)
    await journal.add_event(heal_id, "verifying", "verify_sample", {...})
    heal = await journal.get_heal(heal_id)
    await journal.close()

Broken files: each write batch (and so each readiness probe) checks that the database
and WAL files at ``path`` are still the ones opened; if one was deleted or replaced, or
SQLite reports corruption (SQLITE_CORRUPT, SQLITE_NOTADB) from any read or write, the
journal refuses everything until restart (JournalBroken, logged once): acknowledging
into a file the next start will not read would lose alerts and safety state.

Exactly-once: a firing alert is keyed by ``(fingerprint, startsAt)``; the first
receipt creates its heal in the same transaction, every later receipt (repeat,
HA peer, retry, after a restart) only bumps ``times_seen``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import os
import sqlite3
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import partial
from pathlib import Path
from typing import Any, NamedTuple, Protocol, TypeVar

import structlog

from healer.errors import JournalBroken, JournalUnavailable
from healer.outcomes import Outcome, Phase
from healer.redact import redact_data, redact_dsn

T = TypeVar("T")
log = structlog.get_logger("healer.journal")

_SCHEMA = """
-- Every webhook POST that brought at least one new alert, as received: the alerts'
-- labels and annotations live here, not re-encoded per alert (see the alert_log view).
CREATE TABLE IF NOT EXISTS deliveries (
    id          INTEGER PRIMARY KEY,
    received_at REAL NOT NULL,
    body        TEXT NOT NULL
);
-- One row per alert identity and status; repeats only bump times_seen / last_seen.
CREATE TABLE IF NOT EXISTS alerts (
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
) WITHOUT ROWID;
CREATE VIEW IF NOT EXISTS alert_log AS
    SELECT a.*, json_extract(d.body, '$.alerts[' || a.idx || '].labels') AS labels,
           json_extract(d.body, '$.alerts[' || a.idx || '].annotations') AS annotations
    FROM alerts a LEFT JOIN deliveries d ON d.id = a.delivery_id;
CREATE TABLE IF NOT EXISTS heals (
    id           TEXT PRIMARY KEY,
    created_at   REAL NOT NULL,
    updated_at   REAL NOT NULL,
    source       TEXT NOT NULL,
    rule         TEXT,
    handler      TEXT NOT NULL,
    fingerprint  TEXT,
    alert_starts_at TEXT,
    labels       TEXT NOT NULL,
    annotations  TEXT NOT NULL,
    params       TEXT NOT NULL,
    verify       TEXT NOT NULL,
    dry_run      INTEGER NOT NULL,
    targets      TEXT NOT NULL DEFAULT '[]',
    phase        TEXT NOT NULL,
    outcome      TEXT,
    reason       TEXT,
    finished_at  REAL,
    durations    TEXT NOT NULL DEFAULT '{}'
);
CREATE INDEX IF NOT EXISTS heals_by_time ON heals (created_at DESC);
CREATE INDEX IF NOT EXISTS heals_open ON heals (phase) WHERE phase != 'done';
CREATE TABLE IF NOT EXISTS events (
    heal_id TEXT NOT NULL,
    seq     INTEGER NOT NULL,
    at      REAL NOT NULL,
    phase   TEXT NOT NULL,
    kind    TEXT NOT NULL,
    data    TEXT NOT NULL,
    PRIMARY KEY (heal_id, seq)
);
-- Safety state (healer/safety_state.py): what the gates decide from, kept here so that a
-- restart forgets no cooldown, budget, open circuit, escalation or pause.
CREATE TABLE IF NOT EXISTS safety_actions (
    rule    TEXT NOT NULL,
    target  TEXT NOT NULL,
    at      REAL NOT NULL,
    heal_id TEXT NOT NULL,
    PRIMARY KEY (rule, target, heal_id)
);
CREATE INDEX IF NOT EXISTS safety_actions_by_time ON safety_actions (rule, target, at);
CREATE TABLE IF NOT EXISTS safety_circuits (
    rule          TEXT NOT NULL,
    target        TEXT NOT NULL,
    state         TEXT NOT NULL,
    opened_at     REAL NOT NULL,
    opened_by     TEXT NOT NULL,
    reason        TEXT NOT NULL,
    last_alert_at REAL NOT NULL,
    suppressed    INTEGER NOT NULL DEFAULT 0,
    escalated_by  TEXT,
    escalation    TEXT,
    closed_at     REAL,
    closed_by     TEXT,
    PRIMARY KEY (rule, target)
);
CREATE TABLE IF NOT EXISTS safety_pause (
    id     INTEGER PRIMARY KEY CHECK (id = 1),
    since  REAL NOT NULL,
    until  REAL NOT NULL,
    reason TEXT NOT NULL
);
-- What followed a heal that ended not_recovered while its alert kept firing
-- (healer/followup.py): one row per such heal, written once, whoever races for it.
CREATE TABLE IF NOT EXISTS follow_ups (
    heal_id     TEXT PRIMARY KEY,
    fingerprint TEXT NOT NULL,
    starts_at   TEXT NOT NULL,
    kind        TEXT NOT NULL,
    at          REAL NOT NULL,
    run_id      TEXT NOT NULL,
    retry_id    TEXT,
    deliveries  TEXT
);
CREATE INDEX IF NOT EXISTS follow_ups_by_alert ON follow_ups (fingerprint, starts_at);
CREATE TABLE IF NOT EXISTS probe (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    at REAL NOT NULL
);
"""
SCHEMA_VERSION = 2

# Version 1 stored each alert's labels and annotations as JSON in its own row. Its rows
# move to the new table (exactly-once must remember them); their labels stay readable
# in alerts_v1.
_MIGRATE_1_TO_2 = """
ALTER TABLE alerts RENAME TO alerts_v1;
DROP VIEW IF EXISTS alert_log;
"""
_COPY_V1_ROWS = """
INSERT INTO alerts (fingerprint, starts_at, status, alertname, delivery_id, idx, first_seen,
                    last_seen, times_seen, disposition, heal_id)
SELECT fingerprint, starts_at, status, alertname, NULL, id, first_seen, last_seen,
       times_seen, disposition, heal_id FROM alerts_v1;
"""


class ReceivedAlert(Protocol):
    """What ingest reads of an alert: :class:`healer.api.Alert`, or the webhook's parsed
    alert itself (the receiver builds an ``Alert`` only for the alerts that start a heal)."""

    @property
    def fingerprint(self) -> str: ...
    @property
    def status(self) -> str: ...
    @property
    def labels(self) -> Mapping[str, str]: ...
    @property
    def annotations(self) -> Mapping[str, str]: ...
    @property
    def starts_at(self) -> datetime: ...
    @property
    def ends_at(self) -> datetime | None: ...
    @property
    def name(self) -> str: ...


@dataclass(frozen=True, slots=True)
class HealPlan:
    """What a matched alert (or a manual trigger) should run."""

    rule: str | None
    handler: str
    params: dict[str, Any]
    verify: dict[str, Any]
    dry_run: bool


class Disposition(NamedTuple):
    """What happened to one alert of a webhook POST (a tuple: one is made per alert)."""

    fingerprint: str
    status: str  # started | duplicate | ignored | resolved
    heal_id: str | None = None
    rule: str | None = None
    reason: str = ""
    plan: HealPlan | None = None


def alert_key_time(moment: datetime) -> str:
    """``startsAt`` as part of an alert's identity, in whole UTC seconds.

    Alertmanager 0.25 sends a firing alert's startsAt with nanoseconds and the
    same alert's resolved notification truncated to seconds (see the shared
    fixtures); a firing alert cannot resolve and fire again within one second.
    """
    return moment.astimezone(UTC).replace(microsecond=0).isoformat()


# Fingerprints per lookup query, well under SQLite's 32,766-parameter limit.
_LOOKUP_CHUNK = 500


# A POST larger than this is matched against the rules on a worker thread.
_MATCH_INLINE_MAX = 64 * 1024


def _plans(alerts: Sequence[ReceivedAlert],
           match: Callable[[ReceivedAlert], HealPlan | None]) -> list[HealPlan | None]:
    """Each firing alert's plan (a resolved one starts nothing), computed outside any
    transaction; a duplicate's plan is simply not used."""
    return [match(a) if a.status == "firing" else None for a in alerts]


def new_heal_id() -> str:
    return uuid.uuid4().hex[:16]


def _dumps(value: Any) -> str:
    return json.dumps(value, default=str, separators=(",", ":"))


# What sqlite3 reports for a damaged file (SQLITE_CORRUPT) or one that is not a
# database at all (SQLITE_NOTADB).
_CORRUPTION = (sqlite3.SQLITE_CORRUPT, sqlite3.SQLITE_NOTADB)


def _is_corruption(exc: BaseException) -> bool:
    return isinstance(exc, sqlite3.DatabaseError) and \
        getattr(exc, "sqlite_errorcode", None) in _CORRUPTION


def check_hint(path: Path) -> str:
    return f"run `healer journal check {path}` for details"


def open_error(path: Path, exc: BaseException) -> str:
    """Why ``path`` cannot be used as a journal, in one line naming the file."""
    if path.is_dir():
        why = "is a directory, not a journal file"
    elif isinstance(exc, PermissionError) or (
            path.exists() and not os.access(path, os.R_OK | os.W_OK)):
        why = f"permission denied (healer runs as uid {os.getuid()})"
    elif not path.exists() and path.parent.is_dir() and not os.access(path.parent, os.W_OK):
        why = f"cannot create it: permission denied on {path.parent}"
    elif _is_corruption(exc):
        why = f"the file is corrupt or not a healer journal ({exc})"
    else:
        why = str(exc)
    return f"journal {path}: cannot open: {why}; {check_hint(path)}"


_Identity = tuple[int, int]


def _identity(path: Path | str) -> _Identity | None:
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return None
    return st.st_dev, st.st_ino


class Journal:
    def __init__(self, path: Path) -> None:
        self.path = path
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="healer-journal")
        self._db: sqlite3.Connection | None = None
        self._closed = False
        # The files this journal was opened on (the database and its WAL): a write goes
        # only where the next start will read it.
        self._files: dict[str, _Identity] = {}
        self._broken: str | None = None  # why it is refused until restart; never cleared
        self._queued: list[tuple[Callable[[sqlite3.Connection], Any], asyncio.Future[Any]]] = []
        self._committer: asyncio.Task[None] | None = None

    @classmethod
    async def open(cls, path: Path) -> Journal:
        """Open (or create) the journal, migrate it and check its pages
        (``PRAGMA quick_check``); any problem is a JournalUnavailable naming the file."""
        journal = cls(path)
        try:
            await journal._call(journal._open)
        except BaseException:
            journal._pool.shutdown(wait=False)
            raise
        return journal

    @classmethod
    def check_can_open(cls, path: Path) -> None:
        """Open, migrate and check the journal once, synchronously, then close it:
        ``healer serve`` does this before listening, so that a bad journal is one line
        naming the file and exit 1, not a traceback. Raises JournalUnavailable."""
        journal = cls(path)
        try:
            journal._open()
        finally:
            if journal._db is not None:
                journal._db.close()
            journal._pool.shutdown(wait=False)

    def _open(self) -> None:
        try:
            if self.path.is_dir():
                raise IsADirectoryError(str(self.path))
            self.path.parent.mkdir(parents=True, exist_ok=True)
            db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        except (sqlite3.Error, OSError) as exc:
            raise JournalUnavailable(open_error(self.path, exc)) from exc
        try:
            db.row_factory = sqlite3.Row
            self._refuse_unknown(db)
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=FULL")
            db.execute("PRAGMA busy_timeout=5000")
            self._migrate(db)
            if not self._files:  # the first open: are all pages sound?
                problem = " ".join(db.execute("PRAGMA quick_check(1)").fetchone()[0].split())
                if problem != "ok":
                    raise JournalUnavailable(
                        f"journal {self.path}: cannot open: the file is corrupt ({problem});"
                        f" {check_hint(self.path)}")
            self._note_files()
        except (sqlite3.Error, OSError) as exc:
            db.close()
            raise JournalUnavailable(open_error(self.path, exc)) from exc
        except BaseException:
            db.close()
            raise
        self._db = db

    def _note_files(self) -> None:
        """Remember the files just opened; a reopen must find the same database file
        (its WAL may be new: closing the last connection deletes it)."""
        db_file = _identity(self.path)
        if db_file is None or self._files.get("db", db_file) != db_file:
            raise self._break("was deleted or replaced while healer ran")
        self._files["db"] = db_file
        wal = _identity(f"{self.path}-wal")
        if wal is not None:
            self._files["wal"] = wal
        else:
            self._files.pop("wal", None)

    def _check_files(self) -> None:
        """Cheap (two stat calls, once per write batch and per readiness probe): the
        database and WAL files at the journal's path are still the ones healer writes.
        After ``rm journal.db*``, a restore from backup or a moved directory, what
        healer wrote would be lost at the next start, so it stops acknowledging."""
        for kind, suffix in (("db", ""), ("wal", "-wal")):
            expected = self._files.get(kind)
            if expected is None:
                continue
            found = _identity(f"{self.path}{suffix}")
            if found != expected:
                what = "database" if kind == "db" else "write-ahead log"
                how = "was deleted" if found is None else "was replaced by another file"
                raise self._break(f"{what} file {self.path}{suffix} {how} while healer ran")

    def _break(self, why: str, then: str = "") -> JournalBroken:
        """Refuse every further read and write until restart, logging it once."""
        if self._broken is None:
            self._broken = f"journal {self.path}: {why}; refused until healer restarts{then}"
            log.error("journal broken", error=self._broken, journal=str(self.path))
        return JournalBroken(self._broken)

    def _storage_error(self, exc: sqlite3.Error) -> JournalUnavailable:
        """A storage error as JournalUnavailable naming the file; corruption breaks the
        journal for good (until restart)."""
        if _is_corruption(exc):
            return self._break(f"corrupt ({exc})", f"; {check_hint(self.path)}")
        return JournalUnavailable(f"journal {self.path}: {exc}")

    def _refuse_unknown(self, db: sqlite3.Connection) -> None:
        """Before anything is written (even the switch to WAL): a journal of a newer
        healer, or another application's database, is refused as it is."""
        version = db.execute("PRAGMA user_version").fetchone()[0]
        if version > SCHEMA_VERSION:
            raise JournalUnavailable(
                f"journal {self.path}: cannot open: its schema {version} is newer than this"
                f" healer's ({SCHEMA_VERSION}): upgrade healer")
        if (foreign := _foreign_tables(db)) is not None:
            raise JournalUnavailable(
                f"journal {self.path}: cannot open: not a healer journal (another "
                f"application's SQLite database? tables: {foreign}); {check_hint(self.path)}")

    @staticmethod
    def _migrate(db: sqlite3.Connection) -> None:
        version = db.execute("PRAGMA user_version").fetchone()[0]
        if version == SCHEMA_VERSION:
            return
        columns = {r[1] for r in db.execute("PRAGMA table_info(alerts)")}
        db.execute("BEGIN IMMEDIATE")
        try:
            legacy = "labels" in columns  # a version-1 journal
            # One statement at a time: executescript() would commit half-way.
            script = (_MIGRATE_1_TO_2 if legacy else "") + _SCHEMA + (
                _COPY_V1_ROWS if legacy else "")
            for statement in script.split(";\n"):
                if statement.strip():
                    db.execute(statement)
            db.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise

    async def close(self) -> None:
        if self._committer is not None:  # let queued writes reach the disk first
            await asyncio.wait([self._committer])

        def _close() -> None:
            self._closed = True
            if self._db is not None:
                self._db.close()
                self._db = None

        await self._call(_close)
        self._pool.shutdown(wait=True)

    async def _call(self, fn: Callable[[], T]) -> T:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._pool, partial(self._guarded, fn))

    def _guarded(self, fn: Callable[[], T]) -> T:
        try:
            return fn()
        except sqlite3.Error as exc:  # a read (writes convert their own): name the file
            raise self._storage_error(exc) from exc

    def _conn(self) -> sqlite3.Connection:
        if self._closed:
            raise JournalUnavailable("journal is closed")
        if self._broken is not None:
            raise JournalBroken(self._broken)
        if self._db is None:  # dropped after a failure that left it unusable: reopen
            self._open()
        assert self._db is not None
        return self._db

    def _write(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """Run ``fn`` in one IMMEDIATE transaction; any storage error -> JournalUnavailable.

        A failed write leaves the journal usable: once the disk has room again (or is
        writable again) the next call succeeds, without a restart.
        """
        db = self._conn()
        self._check_files()
        try:
            db.execute("BEGIN IMMEDIATE")
            try:
                result = fn(db)
                db.execute("COMMIT")
            except BaseException:
                self._abandon(db)
                raise
            return result
        except sqlite3.Error as exc:
            raise self._storage_error(exc) from exc

    async def read(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """Run ``fn(db)`` on the journal's thread (for modules owning their own tables)."""
        return await self._call(lambda: fn(self._conn()))

    async def transaction(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """Run ``fn(db)`` as one write on the journal's thread: what it reads and writes is
        atomic against every other journal write, and durable when this returns.

        Writes queued meanwhile share one transaction (group commit), each in a
        savepoint: an exception from ``fn`` undoes ``fn``'s writes only and is raised
        here (``sqlite3.Error`` as JournalUnavailable); a failed COMMIT fails them all.
        """
        return await self.submit(fn)

    def submit(self, fn: Callable[[sqlite3.Connection], T]) -> asyncio.Future[T]:
        """Queue ``fn`` as a write now, in order with every other write; the future is
        done once it is durable (as :meth:`transaction`, for a caller that has other
        work to do meanwhile and awaits the future before depending on the write)."""
        future: asyncio.Future[T] = asyncio.get_running_loop().create_future()
        self._queued.append((fn, future))
        if self._committer is None or self._committer.done():
            self._committer = asyncio.create_task(self._commit_queued(),
                                                  name="healer-journal-commit")
        return future

    async def _commit_queued(self) -> None:
        while self._queued:
            batch, self._queued = self._queued, []
            try:
                outcomes = await self._call(partial(self._write, partial(
                    self._savepoints, [fn for fn, _ in batch])))
            except BaseException as exc:  # the COMMIT (or BEGIN) failed: nothing was stored
                for _, future in batch:
                    if not future.done():
                        future.set_exception(exc)
                if isinstance(exc, asyncio.CancelledError):
                    raise
                continue
            for (_, future), (ok, value) in zip(batch, outcomes, strict=True):
                if future.done():  # its caller was cancelled; the write stands
                    continue
                if ok:
                    future.set_result(value)
                else:
                    future.set_exception(value)

    def _savepoints(self, fns: list[Callable[[sqlite3.Connection], Any]],
                    db: sqlite3.Connection) -> list[tuple[bool, Any]]:
        return [self._savepoint(db, fn) for fn in fns]

    def _savepoint(self, db: sqlite3.Connection,
                   fn: Callable[[sqlite3.Connection], Any]) -> tuple[bool, Any]:
        db.execute("SAVEPOINT w")
        try:
            value = fn(db)
        except Exception as exc:
            # Undo this write alone. If even that fails, the transaction is unusable:
            # raising fails the whole batch, and _write rolls it back.
            db.execute("ROLLBACK TO w")
            db.execute("RELEASE w")
            if isinstance(exc, sqlite3.Error):
                exc = self._storage_error(exc)
            return False, exc
        db.execute("RELEASE w")
        return True, value

    def _abandon(self, db: sqlite3.Connection) -> None:
        """Undo a failed transaction. SQLite may keep it open after a failed COMMIT (disk
        full, I/O error), and every later BEGIN would then fail: roll back, and if even
        that fails, drop the connection so that the next call opens a fresh one."""
        if not db.in_transaction:
            return
        try:
            db.execute("ROLLBACK")
        except sqlite3.Error:
            self._db = None
            with contextlib.suppress(sqlite3.Error):
                db.close()

    # ---- ingest -------------------------------------------------------------

    async def ingest(
        self, alerts: Sequence[ReceivedAlert],
        match: Callable[[ReceivedAlert], HealPlan | None], *,
        body: str | None = None, received_at: float | None = None,
    ) -> list[Disposition]:
        """Store a webhook's alerts; create a heal for each *new* firing alert that matches.

        ``body`` is the POST as received, kept once (when it brings a new alert) as the
        record of every new alert's labels and annotations; ``alerts[i]`` must be its
        ``alerts[i]``. ``received_at`` (when the request arrived) goes into each new
        heal's ``matched`` event, so a timeline shows the whole path from the webhook on.
        """
        if body is None:
            body = _dumps({"alerts": [{"labels": a.labels, "annotations": a.annotations}
                                      for a in alerts]})
        # Matching is done here, before the write is queued: inside the transaction one
        # slow match would hold up every other post and heal write. A large POST is
        # matched on a worker thread (RE2 releases the GIL), so the loop serves others.
        if len(body) > _MATCH_INLINE_MAX:
            plans = await asyncio.to_thread(_plans, alerts, match)
        else:
            plans = _plans(alerts, match)
        now = time.time()
        return await self.transaction(
            lambda db: self._ingest_batch(db, alerts, plans, now, received_at, body))

    def _ingest_batch(self, db: sqlite3.Connection, alerts: Sequence[ReceivedAlert],
                      plans: Sequence[HealPlan | None], now: float,
                      received_at: float | None, body: str) -> list[Disposition]:
        """One query finds which alerts were seen before; new ones are inserted and
        repeats counted with one ``executemany`` each (no per-alert round trips)."""
        starts_cache: dict[datetime, str] = {}
        keyed = []
        for alert in alerts:
            starts = starts_cache.get(alert.starts_at)
            if starts is None:
                starts = starts_cache[alert.starts_at] = alert_key_time(alert.starts_at)
            keyed.append((alert, starts))
        known = self._known_alerts(db, {(a.fingerprint, starts) for a, starts in keyed})
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
                self._note_resolved(db, alert, now)
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
                heal_id = self._insert_heal(db, plan, alert, "alert", now,
                                            received_at=received_at)
                disposition = "started"
                result = Disposition(alert.fingerprint, "started", heal_id, plan.rule,
                                     plan=plan)
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

    @staticmethod
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

    def _note_resolved(self, db: sqlite3.Connection, alert: ReceivedAlert, now: float) -> None:
        open_heals = db.execute(
            "SELECT id, phase FROM heals WHERE fingerprint=? AND phase != 'done'",
            (alert.fingerprint,)).fetchall()
        for heal in open_heals:
            self._event(db, heal["id"], heal["phase"], "alert_resolved",
                        {"ends_at": alert.ends_at}, now)

    def _insert_heal(self, db: sqlite3.Connection, plan: HealPlan, alert: ReceivedAlert | None,
                     source: str, now: float, labels: dict[str, str] | None = None,
                     annotations: dict[str, str] | None = None,
                     received_at: float | None = None) -> str:
        heal_id = new_heal_id()
        if alert is not None:
            labels, annotations = dict(alert.labels), dict(alert.annotations)
        # created_at is the history's page cursor (before=<created_at>): keep it unique and
        # increasing, or heals created in one instant (one webhook POST) fall between pages.
        last = db.execute("SELECT MAX(created_at) FROM heals").fetchone()[0]
        created = now if last is None or now > last else math.nextafter(last, math.inf)
        db.execute(
            "INSERT INTO heals (id, created_at, updated_at, source, rule, handler, fingerprint,"
            " alert_starts_at, labels, annotations, params, verify, dry_run, phase)"
            " VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,'pending')",
            (heal_id, created, now, source, plan.rule, plan.handler,
             alert.fingerprint if alert else None,
             alert.starts_at.isoformat() if alert else None,
             _dumps(labels or {}), _dumps(annotations or {}),
             _dumps(plan.params), _dumps(plan.verify), int(plan.dry_run)),
        )
        data: dict[str, Any] = {"rule": plan.rule, "handler": plan.handler,
                                "dry_run": plan.dry_run}
        if received_at is not None:
            data["received_at"] = received_at
        self._event(db, heal_id, Phase.PENDING, "matched" if alert else "manual_trigger",
                    data, now)
        return heal_id

    def insert_heal(self, db: sqlite3.Connection, plan: HealPlan, alert: ReceivedAlert,
                    source: str, now: float) -> str:
        """A new pending heal of ``alert``, inside the caller's write (``transaction(fn)``):
        a follow-up heal of an alert already received (healer/followup.py)."""
        return self._insert_heal(db, plan, alert, source, now)

    def event(self, db: sqlite3.Connection, heal_id: str, phase: str, kind: str,
              data: dict[str, Any], now: float) -> None:
        """A timeline entry, inside the caller's write (``transaction(fn)``)."""
        self._event(db, heal_id, phase, kind, data, now)

    async def create_manual_heal(self, plan: HealPlan, labels: dict[str, str],
                                 annotations: dict[str, str]) -> str:
        now = time.time()
        return await self.transaction(
            lambda db: self._insert_heal(db, plan, None, "manual", now, labels, annotations))

    # ---- timeline -----------------------------------------------------------

    def _event(self, db: sqlite3.Connection, heal_id: str, phase: str, kind: str,
               data: dict[str, Any], now: float) -> None:
        db.execute(
            "INSERT INTO events (heal_id, seq, at, phase, kind, data) VALUES"
            " (?, (SELECT COALESCE(MAX(seq), 0) + 1 FROM events WHERE heal_id=?), ?, ?, ?, ?)",
            # Timeline data quotes handler output and errors: no password lands on disk.
            (heal_id, heal_id, now, str(phase), kind, _dumps(redact_data(data))))
        db.execute("UPDATE heals SET updated_at=? WHERE id=?", (now, heal_id))

    async def add_event(self, heal_id: str, phase: str, kind: str, data: dict[str, Any]) -> None:
        await self.event_soon(heal_id, phase, kind, data)

    def event_soon(self, heal_id: str, phase: str, kind: str,
                   data: dict[str, Any]) -> asyncio.Future[None]:
        """:meth:`add_event`, queued now (many queued at once share one commit)."""
        now = time.time()
        return self.submit(lambda db: self._event(db, heal_id, phase, kind, data, now))

    async def set_phase(self, heal_id: str, phase: Phase, *,
                        targets: list[str] | None = None) -> None:
        await self.set_phase_soon(heal_id, phase, targets=targets)

    def set_phase_soon(self, heal_id: str, phase: Phase, *,
                       targets: list[str] | None = None) -> asyncio.Future[None]:
        """:meth:`set_phase`, queued now and awaited by the caller when it matters."""
        def _set(db: sqlite3.Connection) -> None:
            if targets is None:
                db.execute("UPDATE heals SET phase=? WHERE id=?", (str(phase), heal_id))
            else:
                db.execute("UPDATE heals SET phase=?, targets=? WHERE id=?",
                           (str(phase), _dumps(targets), heal_id))

        return self.submit(_set)

    async def interrupt(self, heal_id: str, phase: Phase, reason: str,
                        durations: dict[str, float]) -> None:
        """Healer stopped mid-heal: outcome ``interrupted`` with the phase kept (not done),
        so that the next start finds the heal and resumes it from that phase."""
        now = time.time()

        def _interrupt(db: sqlite3.Connection) -> None:
            db.execute(
                "UPDATE heals SET phase=?, outcome=?, reason=?, finished_at=?, durations=?"
                " WHERE id=?", (str(phase), str(Outcome.INTERRUPTED), reason, now,
                                _dumps(durations), heal_id))
            self._event(db, heal_id, phase, "interrupted",
                        {"reason": reason, "durations": durations}, now)

        await self.transaction(_interrupt)

    async def finish(self, heal_id: str, outcome: Outcome, reason: str,
                     durations: dict[str, float]) -> None:
        await self.finish_soon(heal_id, outcome, reason, durations)

    def finish_soon(self, heal_id: str, outcome: Outcome, reason: str,
                    durations: dict[str, float]) -> asyncio.Future[None]:
        """:meth:`finish`, queued now (many queued at once share one commit)."""
        now = time.time()
        reason = redact_dsn(reason)

        def _finish(db: sqlite3.Connection) -> None:
            db.execute(
                "UPDATE heals SET phase='done', outcome=?, reason=?, finished_at=?, durations=?"
                " WHERE id=?", (str(outcome), reason, now, _dumps(durations), heal_id))
            self._event(db, heal_id, Phase.DONE, "outcome",
                        {"outcome": str(outcome), "reason": reason, "durations": durations}, now)

        return self.submit(_finish)

    # ---- reads --------------------------------------------------------------

    async def get_heal(self, heal_id: str) -> dict[str, Any] | None:
        def _get() -> dict[str, Any] | None:
            db = self._conn()
            row = db.execute("SELECT * FROM heals WHERE id=?", (heal_id,)).fetchone()
            if row is None:
                return None
            heal = _heal_dict(row)
            heal["timeline"] = [
                {"seq": e["seq"], "at": e["at"], "phase": e["phase"], "kind": e["kind"],
                 "data": json.loads(e["data"])}
                for e in db.execute("SELECT * FROM events WHERE heal_id=? ORDER BY seq",
                                    (heal_id,))
            ]
            return heal

        return await self._call(_get)

    async def list_heals(self, *, rule: str | None = None, outcome: str | None = None,
                         target: str | None = None, limit: int = 50,
                         before: float | None = None) -> list[dict[str, Any]]:
        """Newest first; page with ``before=<created_at of the last row>``."""
        clauses: list[str] = []
        args: list[str | float] = []
        if rule is not None:
            clauses.append("rule = ?")
            args.append(rule)
        if outcome is not None:
            clauses.append("outcome = ?")
            args.append(outcome)
        if target is not None:
            clauses.append("EXISTS (SELECT 1 FROM json_each(heals.targets) WHERE value = ?)")
            args.append(target)
        if before is not None:
            clauses.append("created_at < ?")
            args.append(before)
        where = f"WHERE {' AND '.join(clauses)}" if clauses else ""
        sql = f"SELECT * FROM heals {where} ORDER BY created_at DESC LIMIT ?"

        def _list() -> list[dict[str, Any]]:
            return [_heal_dict(r) for r in self._conn().execute(sql, (*args, limit))]

        return await self._call(_list)

    async def unfinished(self) -> list[dict[str, Any]]:
        def _open() -> list[dict[str, Any]]:
            return [_heal_dict(r) for r in self._conn().execute(
                "SELECT * FROM heals WHERE phase != 'done' ORDER BY created_at")]

        return await self._call(_open)

    async def alert_counts(self) -> dict[str, int]:
        def _counts() -> dict[str, int]:
            return {r[0]: r[1] for r in self._conn().execute(
                "SELECT disposition, COUNT(*) FROM alerts GROUP BY disposition")}

        return await self._call(_counts)

    async def ping(self) -> None:
        """Raise JournalUnavailable unless the journal answers and accepts a write.

        It really writes (one row): an empty transaction succeeds on a full disk."""
        now = time.time()
        await self.transaction(lambda db: db.execute(
            "INSERT INTO probe (id, at) VALUES (1, ?) ON CONFLICT (id) DO UPDATE SET"
            " at = excluded.at", (now,)))


def _heal_dict(row: sqlite3.Row) -> dict[str, Any]:
    heal = dict(row)
    for key in ("labels", "annotations", "params", "verify", "targets", "durations"):
        heal[key] = json.loads(heal[key])
    heal["dry_run"] = bool(heal["dry_run"])
    return heal


# ---- healer journal check --------------------------------------------------------------

_TABLES = ("deliveries", "alerts", "heals", "events", "safety_actions", "safety_circuits",
           "safety_pause")


def _foreign_tables(db: sqlite3.Connection) -> str | None:
    """The tables of a SQLite file that is not a healer journal, or None: it is one (a
    version-1 journal carries user_version 0, and an ``alerts`` table), or it is empty."""
    tables = sorted(r[0] for r in db.execute(
        "SELECT name FROM sqlite_master WHERE type='table' AND name NOT LIKE 'sqlite_%'"))
    if not tables or "alerts" in tables:
        return None
    return ", ".join(tables[:5]) + (f" and {len(tables) - 5} more" if len(tables) > 5 else "")


def check_file(path: Path) -> list[str]:
    """What is wrong with the journal file at ``path`` (empty: nothing), read-only:
    ``PRAGMA integrity_check``, then whether it is a healer journal this healer reads."""
    if not path.exists():
        return [f"{path}: no such file"]
    if path.is_dir():
        return [f"{path}: is a directory, not a journal file"]
    try:
        db = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True)
    except sqlite3.Error as exc:
        return [open_error(path, exc).removesuffix(f"; {check_hint(path)}")]
    try:
        problems = [row[0] for row in db.execute("PRAGMA integrity_check(100)")
                    if row[0] != "ok"]
        if problems:
            return problems
        version = db.execute("PRAGMA user_version").fetchone()[0]
        foreign = _foreign_tables(db)
        empty = db.execute("SELECT COUNT(*) FROM sqlite_master").fetchone()[0] == 0
    except sqlite3.Error as exc:
        why = "corrupt or not a SQLite database" if _is_corruption(exc) else "unreadable"
        return [f"{path}: {why}: {exc}"]
    finally:
        db.close()
    if version > SCHEMA_VERSION:
        return [f"schema version {version} is newer than this healer's ({SCHEMA_VERSION})"]
    if empty:
        return ["an empty SQLite file, not a healer journal yet (healer serve would "
                "initialise it)"]
    if foreign is not None:
        return [f"not a healer journal: another application's SQLite database? "
                f"(tables: {foreign})"]
    return []
