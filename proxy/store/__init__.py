"""The exchange log: a peewee database written off the request path, read by the log view.

``LogStore`` owns the database, the writer thread and retention for one app. ``sink`` is what
``Exchange.finish`` calls (a reference copy and a deque append); ``read`` runs a query function
off the gevent hub for the UI; ``close`` flushes the queue on shutdown.
"""
from __future__ import annotations

import atexit
import logging
import os
import weakref
from typing import Any, Callable, TypeVar

import peewee as pw

from ..config import Settings, mask_url
from .db import kind_of_database, offload, open_database
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
        self.retention = Retention(self.models, settings.log_max_requests, settings.log_max_age_days,
                                   max_refused=settings.log_max_refused)
        self.writer = LogWriter(self.models, queue_size=settings.log_queue_size, retention=self.retention,
                                cleanup_minutes=settings.log_cleanup_minutes)
        self._pid = os.getpid()
        self.start_error: str | None = None

    def open(self) -> "LogStore":
        """Create or migrate the schema now (so the UI works at once), then start the writer.

        A database that cannot be reached is not fatal: the proxy serves, the writer keeps trying."""
        try:
            ensure_schema(self.models)
            self.writer.schema_ready = True
        except pw.PeeweeException as exc:
            self.start_error = str(exc).strip() or type(exc).__name__
            log.error("log database %s is not usable yet (%s); the proxy serves on and the writer retries",
                      self.describe(), self.start_error)
        finally:
            self._close_quietly()
        self.writer.start()
        ref = weakref.ref(self)
        atexit.register(lambda: ref() is not None and ref().close())
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
        """``fn(models, *args)`` with its own connection, off the gevent hub."""
        return offload(self._read, fn, args)

    def _read(self, fn: Callable[..., T], args: tuple) -> T:
        with self.db.connection_context():
            return fn(self.models, *args)

    # --- the end -----------------------------------------------------------------------------------
    def close(self) -> None:
        self.writer.close()


def init_app(app: Any, services: Any) -> LogStore | None:
    """Wire the store into an app: the sink, the shutdown flush and the recording hooks."""
    from .hooks import install_hooks

    settings: Settings = services.settings
    if not settings.log_enabled:
        services.extras["log_store"] = None
        return None
    store = LogStore(settings).open()
    services.sinks.append(store.sink)
    services.extras["log_store"] = store
    previous = services.extras.get("shutdown")

    def shutdown() -> None:
        try:
            if previous is not None:
                previous()
        finally:
            store.close()

    services.extras["shutdown"] = shutdown
    install_hooks(app, store, settings)
    return store
