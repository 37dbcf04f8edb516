"""BACKENDS_FILE watched while the proxy runs, as KEYS_FILE is: its mtime, size and inode are looked at every
CHECK_EVERY seconds (in a thread of its own, a greenlet under gevent), and a changed file is read, checked and
swapped into the running pool (``Pool.replace``), so a change applies within two looks. Requests in flight
keep the backend they hold; unchanged backends keep their health and connections (``routing.rebuild``).

A file that turns bad (not TOML, a key at fault, gone, a backend that cannot be built) is not taken: the last
good configuration stays in force, ``problem`` says why (the UI's overview shows it), and one line is logged
per change of that state — not one per look.
"""
from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable
from typing import Any

from . import backendsfile
from .config import ConfigError, Settings
from .routing import Pool, build_pool, rebuild

log = logging.getLogger(__name__)
CHECK_EVERY = 1.0  # seconds between looks at the file: a change applies within 2 s
UNREAD = (-1, -1, -1)  # a signature no file has: the next look reads the file again

Signature = tuple[int, int, int] | None


def signature(path: str) -> Signature:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_mtime_ns, st.st_size, st.st_ino


class BackendsWatcher:
    """The pool built from the file, and the file's state since: ``problem`` is None while the file in force
    is the file on disk, else why the file on disk is not (the configuration in force is the last good one)."""

    def __init__(self, path: str, settings: Settings, make_backend: Callable[[Settings], Any],
                 interval: float = CHECK_EVERY):
        self.path = path
        self.make_backend = make_backend
        self.interval = interval
        self._signature = signature(path)  # before reading: a change while it is read is seen at the next look
        self.pool: Pool = build_pool(backendsfile.load(path), settings, make_backend)  # a bad file stops start-up
        self.problem: str | None = None
        self._stop = threading.Event()
        self.on_change: list[Callable[[Pool], None]] = []  # called after a new configuration is in force

    def start(self) -> None:
        threading.Thread(target=self._loop, name="backends-file", daemon=True).start()

    def stop(self) -> None:
        self._stop.set()

    def _loop(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                self.check()
            except Exception:  # noqa: BLE001 - the watcher must outlive anything one look runs into
                log.exception("BACKENDS_FILE %s: the look at the file failed", self.path)

    def check(self) -> bool:
        """One look: read the file again if it changed; True when a new configuration is now in force."""
        now = signature(self.path)
        if now == self._signature:
            return False
        self._signature = now
        if now is None:
            self._bad(f"BACKENDS_FILE={self.path!r} cannot be read (it is gone)")
            return False
        try:
            config = backendsfile.load(self.path)
            members = rebuild(self.pool, config, self.make_backend)
        except (ConfigError, ValueError, OSError) as exc:  # ValueError, OSError: a backend that cannot be built
            self._bad(str(exc))
            return False
        if signature(self.path) != now:  # written to while it was read: what was read may be half of it
            self._signature = UNREAD
            return False
        before = {m.name for m in self.pool.members}
        self.pool.replace(config, members)
        after = {m.name for m in members}
        was, self.problem = self.problem, None
        log.info("BACKENDS_FILE %s reloaded%s: %d backend(s)%s%s", self.path,
                    " (the file is good again)" if was else "", len(members),
                    f", added {', '.join(sorted(after - before))}" if after - before else "",
                    f", removed {', '.join(sorted(before - after))}" if before - after else "")
        for hook in self.on_change:
            hook(self.pool)
        return True

    def _bad(self, message: str) -> None:
        if message != self.problem:  # one line per change of state, not one per look
            log.error("BACKENDS_FILE not reloaded, the last good configuration stays in force: %s", message)
        self.problem = message
