"""Opening the log database from DATABASE_URL, and running blocking database calls off the gevent hub.

SQLite gets WAL mode, a busy timeout and ``BEGIN IMMEDIATE`` writes, so several gunicorn workers can
share one file. Database drivers block the thread they run in; under gevent, ``Readers`` runs the log
view's queries in a native thread pool of their own, with a time limit, so streams keep flowing and
nothing on the request path ever waits for the database. Nothing here knows the schema.
"""
from __future__ import annotations

import os
import time
from collections.abc import Callable
from typing import Any, TypeVar
from urllib.parse import urlsplit

import peewee
from playhouse import db_url

from ..greenlets import captured, gevent_patched

T = TypeVar("T")

BUSY_TIMEOUT_S = 10
# MySQL's TEXT is smaller than LOG_MAX_BODY_BYTES' default: bodies go into LONGTEXT there.
FIELD_TYPES = {"sqlite": {"BIGTEXT": "TEXT"}, "postgres": {"BIGTEXT": "TEXT"}, "mysql": {"BIGTEXT": "LONGTEXT"}}


def kind_of(url: str) -> str:
    scheme = urlsplit(url).scheme.split("+", 1)[0]
    if scheme.startswith("sqlite"):
        return "sqlite"
    if scheme in ("postgres", "postgresql", "postgresext", "postgresqlext", "psycopg3"):
        return "postgres"
    if scheme in ("mysql", "mariadb", "mysqlconnector", "mariadbconnector"):
        return "mysql"
    raise ValueError(f"unsupported database URL scheme {scheme!r}")


def sqlite_path(url: str) -> str:
    """The file of a sqlite:/// URL (relative to the working directory), or ':memory:'."""
    parsed = urlsplit(url)
    path = parsed.path[1:] if parsed.path.startswith("/") else parsed.path
    if parsed.netloc and parsed.netloc not in ("", "localhost"):
        path = parsed.netloc + "/" + path  # sqlite://data/x.db (two slashes) read as a relative path
    return path or ":memory:"


class _SqliteDatabase(peewee.SqliteDatabase):
    """SQLite whose connection set-up waits out a writer: switching a new file to WAL takes a lock that
    SQLite reports as busy at once (no busy handler) while another worker creates the schema."""

    def _set_pragmas(self, conn: Any) -> None:
        deadline = time.monotonic() + BUSY_TIMEOUT_S
        while True:
            try:
                return super()._set_pragmas(conn)  # type: ignore[misc]  # peewee's private hook, untyped
            except peewee.sqlite3.OperationalError as exc:  # type: ignore[attr-defined]  # peewee's driver module
                if "locked" not in str(exc) or time.monotonic() > deadline:
                    raise
                time.sleep(0.02)


def open_database(url: str) -> peewee.Database:
    """A peewee database for ``url``; not connected yet. Raises ValueError for an unusable URL."""
    kind = kind_of(url)
    if kind == "sqlite":
        path = sqlite_path(url)
        if path != ":memory:":
            try:
                os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
            except OSError:
                pass  # connecting fails with SQLite's own message; the writer reports it and retries
        pragmas = {"busy_timeout": BUSY_TIMEOUT_S * 1000, "journal_mode": "wal", "synchronous": "normal",
                   "foreign_keys": 0, "temp_store": "memory"}
        return _SqliteDatabase(path, pragmas=pragmas, timeout=BUSY_TIMEOUT_S, lock_type="IMMEDIATE",
                                     check_same_thread=False, field_types=FIELD_TYPES["sqlite"])
    extra: dict[str, Any] = {"field_types": FIELD_TYPES[kind]}
    if kind == "postgres" and "connect_timeout" not in url:
        extra["connect_timeout"] = 5
    if kind == "mysql" and "connect_timeout" not in url:
        extra["connect_timeout"] = 5
    return db_url.connect(url, unquote_password=True, unquote_user=True, **extra)


def kind_of_database(db: peewee.Database) -> str:
    if isinstance(db, peewee.SqliteDatabase):
        return "sqlite"
    if isinstance(db, peewee.PostgresqlDatabase):
        return "postgres"
    return "mysql"


class DatabaseBusy(peewee.OperationalError):
    """The log database did not answer a read in time: stalled, locked, or every reader thread is waiting."""


READ_THREADS = 4
READ_TIMEOUT_S = 10.0


class Readers:
    """The log view's database reads. Under gevent they run in a small native thread pool of their own, never
    in the hub's pool, which also resolves host names for backend connections (a stalled database once held
    every one of its threads, and API requests waited); each read is waited for at most READ_TIMEOUT_S,
    then ``DatabaseBusy`` is raised, and a read that waited in the queue past its time is not started at all.
    Without gevent a read runs in the calling thread (each request has its own)."""

    def __init__(self) -> None:
        self._pool: Any = None
        self._pid = 0

    def run(self, fn: Callable[..., T], *args: Any) -> T:
        if not gevent_patched():
            return fn(*args)
        import gevent
        from gevent.threadpool import ThreadPool

        if self._pid != os.getpid():  # first use, or a forked worker: the parent's threads are not here
            self._pool, self._pid = ThreadPool(READ_THREADS), os.getpid()
        deadline = time.monotonic() + READ_TIMEOUT_S
        busy = DatabaseBusy(f"the log database did not answer within {READ_TIMEOUT_S:g} s")

        def task() -> tuple[bool, Any]:
            if time.monotonic() > deadline:
                return False, busy
            return captured(fn, args)

        with gevent.Timeout(READ_TIMEOUT_S, busy):  # spawn itself waits while every reader thread is busy
            ok, value = self._pool.spawn(task).get()
        if not ok:
            raise value
        return value

    def close(self) -> None:
        if self._pool is not None and self._pid == os.getpid():
            self._pool.kill()
        self._pool = None

