"""The exchange log: a peewee database written off the request path, read by the log view.

``LogStore`` owns the database, the writer thread and retention for one app. ``sink`` is what
``Exchange.finish`` calls (a reference copy and a deque append); ``read`` runs a query function
for the UI in a reader pool of its own, with a time limit; ``close`` flushes the queue on shutdown.
``health`` logs the database going down and coming back, once each.
"""
from __future__ import annotations

import atexit
import logging
import os
import weakref
from collections.abc import Callable
from typing import Any, TypeVar

import peewee as pw

from ..config import Settings
from ..values import mask_url
from .db import Readers, kind_of_database, open_database
from .health import DatabaseHealth
from .hooks import install_hooks
from .models import Models, build_models
from .record import REFUSED, Record
from .retention import Retention
from .schema import ensure_schema
from .writer import LogWriter

log = logging.getLogger(__name__)
T = TypeVar("T")


class LogStore:
    def __init__(self, settings: Settings):
        self.settings = settings
        self.url = settings.database_url
        self.db = open_database(self.url)
        self.kind = kind_of_database(self.db)
        self.models: Models = build_models(self.db)
        self.health = DatabaseHealth(self.describe())
        self.readers = Readers()
        self.retention = Retention(self.models, settings.log_max_requests, settings.log_max_age_days,
                                   max_refused=settings.log_max_refused)
        self.writer = LogWriter(self.models, queue_size=settings.log_queue_size, retention=self.retention,
                                cleanup_minutes=settings.log_cleanup_minutes, health=self.health)
        self._pid = os.getpid()

    def open(self) -> LogStore:
        """Create or migrate the schema now (so the UI works at once), then start the writer.

        A database that cannot be reached is not fatal: the proxy serves, the writer keeps trying."""
        try:
            ensure_schema(self.models)
            self.writer.schema_ready = True
        except pw.PeeweeException as exc:
            self.health.failed(exc, "at start")
        finally:
            self._close_quietly()
        self.writer.start()
        ref = weakref.ref(self)

        def close_at_exit() -> None:
            store = ref()
            if store is not None:
                store.close()

        atexit.register(close_at_exit)
        return self

    def describe(self) -> str:
        """The database URL with its credentials masked."""
        return mask_url(self.url)

    def _close_quietly(self) -> None:
        try:
            self.db.close()
        except pw.PeeweeException:
            pass

    # --- the request path -------------------------------------------------------------------------
    def sink(self, exchange: Any) -> None:
        if self._pid != os.getpid():  # forked (gunicorn --preload): this process needs its own writer
            self._pid = os.getpid()
            self.writer._running = False
            self.writer.start()
        record = Record.of(exchange)
        if record.outcome == REFUSED and not self.settings.log_max_refused:
            return  # LOG_MAX_REFUSED=0: refusals are counted (metrics, access line), not stored
        self.writer.submit(record)

    def count_poll(self, endpoint: str, client: str, at: float) -> None:
        self.writer.count_poll(endpoint, client, at)

    # --- reading (UI) ------------------------------------------------------------------------------
    def read(self, fn: Callable[..., T], *args: Any) -> T:
        """``fn(models, *args)`` with its own connection, in the reader pool; ``DatabaseBusy`` (an
        OperationalError) when the database does not answer in time."""
        try:
            value = self.readers.run(self._read, fn, args)
        except (pw.OperationalError, pw.InterfaceError) as exc:
            self.health.failed(exc, "reading for the log view")
            raise
        self.health.ok()
        return value

    def _read(self, fn: Callable[..., T], args: tuple) -> T:
        with self.db.connection_context():
            return fn(self.models, *args)

    # --- the end -----------------------------------------------------------------------------------
    def close(self) -> None:
        try:
            self.writer.close()
        finally:
            self.readers.close()


def init_app(app: Any, services: Any) -> LogStore | None:
    """Wire the store into an app: the sink, the shutdown flush and the recording hooks."""
    settings: Settings = services.settings
    if not settings.log_enabled:
        services.extras["log_store"] = None
        return None
    store = LogStore(settings).open()
    services.sinks.append(store.sink)
    services.extras["log_store"] = store
    services.on_shutdown(store.close)
    install_hooks(app, store, settings)
    return store
