"""The log database's state as this process sees it, up or down and why, logged once per change.

The writer and the log view's reads both report here, so a database that is down at start or goes away
later gives the console one line saying so, with the reason, and one line when it works again: never a
traceback per retry or per page.
"""
from __future__ import annotations

import logging
import threading
import time

log = logging.getLogger("proxy.store")


def reason_of(exc: BaseException) -> str:
    """An exception as one short line (drivers' messages span lines: psycopg2 adds a hint on the next)."""
    text = " ".join(str(exc).split())
    return (text[:300] + "…" if len(text) > 300 else text) or type(exc).__name__


class DatabaseHealth:
    def __init__(self, where: str):
        self.where = where  # the database URL without its password
        self.down_since: float | None = None
        self.reason: str | None = None
        self._lock = threading.Lock()

    def failed(self, exc: BaseException, doing: str = "") -> str:
        """Note a failure; the first after a success is logged. Returns the reason."""
        reason = reason_of(exc)
        with self._lock:
            changed = self.down_since is None
            if changed:
                self.down_since = time.monotonic()
            self.reason = reason
        if changed:
            log.error("log database %s unavailable%s: %s; the proxy serves on, records wait in the queue and "
                      "the writer retries", self.where, f" ({doing})" if doing else "", reason)
        return reason

    def ok(self) -> None:
        """Note a success; the first after a failure is logged."""
        if self.down_since is None:
            return
        with self._lock:
            since, self.down_since = self.down_since, None
        if since is not None:
            log.warning("log database %s available again after %.0f s", self.where, time.monotonic() - since)
