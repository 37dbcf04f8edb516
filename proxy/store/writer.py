"""The log writer: one per process, batching finished records into the database.

``submit`` is what the request path calls: an append to a bounded deque, or — when it is full — a
counted drop with a warning; it never blocks and never touches the database. The writer loop drains
the deque in batches (one transaction, multi-row INSERTs), counts polling requests per minute,
retries while the database is unavailable and runs retention between batches. ``close`` writes what
is left (SIGTERM, worker exit, atexit).

Under gevent the loop is a greenlet that prepares rows and hands each database call to a one-thread
pool: the driver blocks a native thread (with the GIL released), never the hub, and no Python code
of the writer runs outside the hub (a second Python thread would fight the hub for the GIL on every
socket call). Without gevent (tests, threaded servers) the loop is a plain daemon thread.
"""
from __future__ import annotations

import collections
import logging
import sqlite3
import threading
import time
from collections.abc import Callable
from itertools import chain
from typing import Any

import peewee as pw

from ..greenlets import gevent_patched, in_pool, start_native_thread
from .db import kind_of_database
from .health import DatabaseHealth, reason_of
from .models import BODY_COLUMNS, EXCHANGE_COLUMNS, POLL_COLUMNS, Models
from .record import REFUSED, Record
from .schema import FTS_TABLE, SEARCH_TABLE, ensure_schema

log = logging.getLogger(__name__)

BATCH = 1000
PREPARE_SLICE_S = 0.002  # preparing yields to the hub at least this often (streams wait meanwhile)
WRITE_BYTES = 256 << 10  # prepared text per transaction (see _write)
WRITER_SQLITE_CACHE_KIB = 256  # the writer's own SQLite page cache: it appends, it rarely reads a page twice
CHUNKS = (64, 16, 4, 1)  # rows per INSERT statement
IDLE_S = 0.5  # pause between batches unless a full batch waits: big transactions cost far less per row
POLL_FLUSH_S = 10.0
RETRY_MAX_S = 30.0
WARN_EVERY_S = 60.0
UNAVAILABLE = (pw.OperationalError, pw.InterfaceError)
REFUSED_SHARE = 4  # refusals may hold at most a quarter of LOG_QUEUE_SIZE


class LogWriter:
    def __init__(self, models: Models, *, queue_size: int, retention: Any = None, cleanup_minutes: int = 0,
                 clock: Callable[[], float] = time.time, health: DatabaseHealth | None = None):
        self.models = models
        self.health = health or DatabaseHealth("(the log database)")
        self.db = models.database
        self.kind = kind_of_database(self.db)
        self._tuned: Any = None  # the connection the writer's pragmas were set on
        self.queue_size = queue_size
        self.retention = retention
        self.cleanup_s = cleanup_minutes * 60
        self.clock = clock
        self._queue: collections.deque = collections.deque()
        self._refused_queued = 0  # refusals in the queue: they may fill only REFUSED_SHARE of it
        self._polls: collections.deque = collections.deque()
        self._poll_counts: dict[tuple[int, str, str], int] = {}
        self._lock = threading.Lock()
        self._gevent = gevent_patched()
        self._pool: Any = None
        self._stop = False
        self._running = False
        self._done = False
        self._last_warning = 0.0
        self._last_poll_flush = 0.0
        self._next_cleanup = 0.0
        self.schema_ready = False
        self.written = 0
        self.dropped_full = 0
        self.dropped_failed = 0
        self.dropped_refused = 0
        self.write_errors = 0
        self.last_error: str | None = None
        self._insert_sql = self._statements()
        self._sql_cache: dict[tuple[str, int], str] = {}

    # --- the request path -----------------------------------------------------------------------
    def submit(self, record: Record) -> bool:
        refused = record.outcome == REFUSED
        if refused and self._refused_queued >= max(1, self.queue_size // REFUSED_SHARE):
            self.dropped_refused += 1  # a flood of refusals never takes the room of admitted exchanges
            return False
        if len(self._queue) >= self.queue_size or self._done:
            with self._lock:
                self.dropped_full += 1
            self._warn(f"log queue full ({self.queue_size} records): record {record.request_id} dropped; "
                       f"{self.dropped_full} dropped so far")
            return False
        self._queue.append(record)
        if refused:
            self._refused_queued += 1
        return True

    def count_poll(self, endpoint: str, client: str, at: float) -> None:
        if len(self._polls) >= self.queue_size * 10:
            return  # the writer is far behind: a poll is only a count, and this one goes uncounted
        self._polls.append((int(at // 60), endpoint, client or ""))

    def pending(self) -> int:
        return len(self._queue)

    def stats(self) -> dict[str, Any]:
        return {"queued": len(self._queue), "written": self.written, "dropped_queue_full": self.dropped_full,
                "dropped_write_failed": self.dropped_failed,
                "dropped_refused": self.dropped_refused, "write_errors": self.write_errors,
                "last_error": self.last_error, "schema_ready": self.schema_ready, "running": self._running}

    def _warn(self, message: str) -> None:
        now = time.monotonic()
        if now - self._last_warning >= WARN_EVERY_S or self._last_warning == 0.0:
            self._last_warning = now
            log.warning(message)

    # --- the thread -----------------------------------------------------------------------------
    def start(self) -> None:
        if self._running:
            return
        self._running = True
        self._stop = False
        if self._gevent:
            import gevent
            from gevent.threadpool import ThreadPool

            self._pool = ThreadPool(1)  # one native thread: one connection, calls in order
            gevent.spawn(self._run)
        else:
            start_native_thread(self._run, "llm-proxy-log-writer")

    def _sleep(self, seconds: float) -> None:
        if self._gevent:
            import gevent
            gevent.sleep(seconds)
        else:
            time.sleep(seconds)

    def _blocking(self, fn: Callable[..., Any], *args: Any) -> Any:
        """Run a database call where blocking is harmless (the writer's own native thread under gevent)."""
        if self._pool is not None:
            return in_pool(self._pool, fn, *args)
        return fn(*args)

    def close(self, timeout: float = 10.0) -> None:
        """Stop the loop and write everything still queued (one attempt if the database fails)."""
        if self._done:
            return
        self._stop = True
        deadline = time.monotonic() + timeout
        while self._running and time.monotonic() < deadline:
            self._sleep(0.01)
        self._done = True
        try:
            if not self.schema_ready:
                self._prepare()
            while self._queue:
                batch = self._take(BATCH)
                try:
                    self._write(batch)
                except Exception as exc:  # noqa: BLE001 - counted and logged: the process is exiting
                    self._lost(batch, exc)
            self._flush_polls(force=True)
        except Exception as exc:  # noqa: BLE001
            self._lost(list(self._queue), exc)
            self._queue.clear()
            self._refused_queued = 0
        finally:
            self._close_connection()
            if self._pool is not None:
                self._pool.kill()
                self._pool = None

    def _run(self) -> None:
        delay = 0.5
        batch: list[Record] = []
        try:
            while not self._stop:
                try:
                    if not self.schema_ready:
                        self._prepare()
                    if not batch:
                        batch = self._take(BATCH)
                    if batch:
                        self._write(batch)
                        batch = []
                        self.health.ok()
                    self._flush_polls()
                    if self._cleanup_step() or len(self._queue) >= BATCH:
                        continue
                    delay = 0.5
                    self._sleep(IDLE_S)
                except UNAVAILABLE as exc:
                    self._unavailable(exc)
                    self._pause(delay)
                    delay = min(delay * 2, RETRY_MAX_S)
                except Exception as exc:  # noqa: BLE001 - a bad record must not stop the writer
                    self.last_error = str(exc)
                    if not self.schema_ready or not batch:  # the database refuses us (rights, disk): one line
                        self.health.failed(exc, "preparing the schema" if not self.schema_ready else "cleaning up")
                        self._close_connection()
                        self._pause(delay)
                        delay = min(delay * 2, RETRY_MAX_S)
                        continue
                    log.exception("log writer: batch failed; writing its records one by one")
                    self._one_by_one(batch)
                    batch = []
        finally:
            if batch:
                self._queue.extendleft(reversed(batch))
                self._refused_queued += sum(1 for record in batch if record.outcome == REFUSED)
            self._close_connection()
            self._running = False

    def _pause(self, seconds: float) -> None:
        end = time.monotonic() + seconds
        while not self._stop and time.monotonic() < end:
            self._sleep(min(0.05, seconds))

    def _close_connection(self) -> None:
        def close() -> None:
            try:
                self.db.close()
            except pw.PeeweeException:
                pass
        try:
            self._blocking(close)
        except Exception:  # noqa: BLE001 - the pool itself may be gone at exit
            close()

    def _unavailable(self, exc: Exception) -> None:
        self.write_errors += 1
        self.last_error = self.health.failed(exc)
        self._close_connection()

    def _prepare(self) -> None:
        self._blocking(ensure_schema, self.models)
        self.schema_ready = True
        self.health.ok()
        self._next_cleanup = 0.0

    def _take(self, n: int) -> list[Record]:
        out: list[Record] = []
        queue = self._queue
        while queue and len(out) < n:
            out.append(queue.popleft())
        refused = sum(1 for record in out if record.outcome == REFUSED)
        if refused:
            self._refused_queued -= refused
        return out

    def _lost(self, batch: list, exc: Exception) -> None:
        if batch:
            self.dropped_failed += len(batch)
            log.error("log writer: %d records could not be written and are lost: %s", len(batch), reason_of(exc))

    def _one_by_one(self, batch: list[Record]) -> None:
        for index, record in enumerate(batch):
            try:
                self._write([record])
            except UNAVAILABLE as exc:  # the database went away meanwhile: the rest waits, nothing is lost
                self.health.failed(exc)
                rest = batch[index:]
                self._queue.extendleft(reversed(rest))
                self._refused_queued += sum(1 for r in rest if r.outcome == REFUSED)
                self._close_connection()
                return
            except Exception as exc:  # noqa: BLE001
                self._lost([record], exc)
                self._close_connection()

    # --- writing --------------------------------------------------------------------------------
    def _statements(self) -> dict[str, tuple[str, str, int]]:
        """(INSERT head, one row's placeholders, rows per statement) per table."""
        p = self.db.param
        limit = 999 if self.kind == "sqlite" and sqlite3.sqlite_version_info < (3, 32, 0) else 30000

        def spec(table: str, columns: tuple[str, ...], row: str | None = None) -> tuple[str, str, int]:
            row = row or "(" + ", ".join([p] * len(columns)) + ")"
            return f"INSERT INTO {table} ({', '.join(columns)}) VALUES ", row, max(1, limit // len(columns))

        out = {"exchange": spec("exchanges", EXCHANGE_COLUMNS),
               "exchange_auto_id": spec("exchanges", EXCHANGE_COLUMNS[1:]),
               "body": spec("exchange_bodies", BODY_COLUMNS),
               "poll": spec("poll_counts", POLL_COLUMNS)}
        if self.kind == "sqlite":
            out["search"] = spec(FTS_TABLE, ("rowid", "body"))
        elif self.kind == "postgres":
            out["search"] = spec(SEARCH_TABLE, ("exchange_id", "doc"), "(%s, to_tsvector('simple', %s))")
        return out

    def _insert_rows(self, cursor: Any, name: str, rows: list[tuple]) -> None:
        """Multi-row INSERTs: one statement (one driver round trip) per chunk instead of one per row.
        Chunks have a few fixed sizes, so the driver's statement cache keeps them parsed."""
        head, one, per = self._insert_sql[name]
        start = 0
        while start < len(rows):
            left = len(rows) - start
            size = next(n for n in CHUNKS if n <= per and n <= left)
            cursor.execute(self._sql_for(name, head, one, size), list(chain.from_iterable(rows[start:start + size])))
            start += size

    def _sql_for(self, name: str, head: str, one: str, size: int) -> str:
        key = (name, size)
        sql = self._sql_cache.get(key)
        if sql is None:
            sql = self._sql_cache[key] = head + ", ".join([one] * size)
        return sql

    def _write(self, batch: list[Record]) -> None:
        """Prepare and insert ``batch``; records written are removed from it as each transaction commits.

        A transaction holds at most WRITE_BYTES of prepared text: when a thousand long streams end
        together, their decoded bodies would otherwise all be in memory at once."""
        nul_free = self.kind == "postgres"
        prepared: list[tuple] = []
        size = 0
        slice_end = time.perf_counter() + PREPARE_SLICE_S
        for record in tuple(batch):  # a copy: each commit removes the records it wrote from ``batch``
            if time.perf_counter() > slice_end:  # under gevent: let streams run between slices (a long
                self._sleep(0)                     # stream's record takes a while to prepare)
                slice_end = time.perf_counter() + PREPARE_SLICE_S
            rows = record.rows(nul_free)
            prepared.append(rows)
            size += len(rows[2]) + sum(len(text) for text in rows[1][:4] if text)
            if size >= WRITE_BYTES:
                self._commit(batch, prepared)
                prepared, size = [], 0
        if prepared:
            self._commit(batch, prepared)

    def _small_page_cache(self) -> None:
        """Give the writer's connection a small page cache (SQLite's default one fills up with pages written
        once and stays in the process for good; readers keep the default)."""
        conn = self.db.connection()
        if conn is not self._tuned:
            conn.execute(f"PRAGMA cache_size = -{WRITER_SQLITE_CACHE_KIB}")
            self._tuned = conn

    def _commit(self, batch: list[Record], prepared: list[tuple]) -> None:
        self._blocking(self._insert, prepared)
        del batch[:len(prepared)]
        self.written += len(prepared)

    def _insert(self, prepared: list[tuple]) -> None:
        try:
            if self.kind == "sqlite":
                self._small_page_cache()
            with self.db.atomic():
                ids = self._allocate_ids(len(prepared))
                cursor = self.db.cursor()
                if ids is None:  # MySQL: one insert at a time, ids from the driver
                    ids = []
                    head, one, _ = self._insert_sql["exchange_auto_id"]
                    for entry, _, _ in prepared:
                        cursor.execute(head + one, entry)
                        ids.append(cursor.lastrowid)
                else:
                    self._insert_rows(cursor, "exchange",
                                      [(i, *entry) for i, (entry, _, _) in zip(ids, prepared, strict=False)])
                self._insert_rows(cursor, "body", [(i, *body) for i, (_, body, _) in zip(ids, prepared, strict=False)])
                if "search" in self._insert_sql:
                    self._insert_rows(cursor, "search",
                                      [(i, text) for i, (_, _, text) in zip(ids, prepared, strict=False)])
        except UNAVAILABLE:
            self.db.close()  # in this thread: the next call reconnects
            raise

    def _allocate_ids(self, n: int) -> list[int] | None:
        """Ids for ``n`` new rows, inside the write transaction (SQLite holds its write lock there)."""
        if self.kind == "sqlite":
            top = self.db.execute_sql("SELECT COALESCE(MAX(id), 0) FROM exchanges").fetchone()[0]
            return list(range(top + 1, top + 1 + n))
        if self.kind == "postgres":
            rows = self.db.execute_sql("SELECT nextval(pg_get_serial_sequence('exchanges', 'id')) "
                                       "FROM generate_series(1, %s)", (n,)).fetchall()
            return [row[0] for row in rows]
        return None

    def _flush_polls(self, force: bool = False) -> None:
        polls = self._polls
        counts = self._poll_counts
        while polls:
            key = polls.popleft()
            counts[key] = counts.get(key, 0) + 1
        now = time.monotonic()
        if not counts or (not force and now - self._last_poll_flush < POLL_FLUSH_S):
            return
        rows = [(minute, endpoint[:100], client[:64], n) for (minute, endpoint, client), n in counts.items()]
        self._blocking(self._insert_polls, rows)
        counts.clear()
        self._last_poll_flush = now

    def _insert_polls(self, rows: list[tuple]) -> None:
        with self.db.atomic():
            self._insert_rows(self.db.cursor(), "poll", rows)

    def _cleanup_step(self) -> bool:
        """One small retention batch when one is due; True while there is more to delete."""
        if self.retention is None or self.cleanup_s <= 0:
            return False
        now = time.monotonic()
        if now < self._next_cleanup:
            return False
        more = self._blocking(self.retention.step, self.clock())
        if not more:
            self._next_cleanup = now + self.cleanup_s if self.cleanup_s > 0 else float("inf")
        return more
