"""Concurrency slots: how many requests of one caller are running at once, in memory or in Redis.

In Redis a caller's slots are a sorted set of leases (member = slot id, score = lease end). Leases of a
process that died run out after ``LEASE`` seconds; a background thread renews the leases this process
holds, so a stream longer than ``LEASE`` keeps its slot. Acquiring is part of the admission script
(``limits.ADMIT_LUA``, one round trip with the other checks); releasing is a ZREM.
"""
from __future__ import annotations

import logging
import os
import threading
import time
from typing import Any, Callable

log = logging.getLogger(__name__)
LEASE = 60.0  # seconds a slot lives in Redis without renewal
RENEW_EVERY = LEASE / 3



def new_slot_id() -> str:
    return os.urandom(16).hex()


class MemorySlots:
    """Per-process counters (one gunicorn worker = its own counts; use Redis to share)."""

    def __init__(self) -> None:
        self._running: dict[str, int] = {}
        self._lock = threading.Lock()

    def acquire(self, key: str, limit: int) -> str | None:
        with self._lock:
            running = self._running.get(key, 0)
            if running >= limit:
                return None
            self._running[key] = running + 1
        return key

    def release(self, key: str) -> None:
        with self._lock:
            running = self._running.get(key, 0) - 1
            if running > 0:
                self._running[key] = running
            else:
                self._running.pop(key, None)

    def running(self, key: str) -> int:
        return self._running.get(key, 0)


class RedisSlots:
    """Leases in Redis sorted sets; acquire/release are commands the limiter sends with its others."""

    def __init__(self, client: Any, prefix: str, clock: Callable[[], float] = time.time):
        self.client = client
        self.prefix = prefix
        self.clock = clock
        self._held: dict[str, str] = {}  # slot id -> redis key, for lease renewal
        self._lock = threading.Lock()    # for starting the renewer only
        self._renewer_pid = 0  # the process whose renewer thread runs (it loops until the process ends)

    def key(self, who: str) -> str:
        return f"{self.prefix}:slots:{who}"

    def held(self, who: str, slot_id: str) -> None:
        """Note a slot the admission script acquired, so its lease is renewed until release. (The map is changed
        by single dict operations, atomic as they are; a lock here is costly under gevent.)"""
        self._held[slot_id] = self.key(who)
        if self._renewer_pid != os.getpid():  # (Thread.is_alive may switch greenlets under gevent: not asked)
            with self._lock:
                if self._renewer_pid != os.getpid():
                    self._renewer_pid = os.getpid()
                    threading.Thread(target=self._renew_forever, name="slot-lease-renewer", daemon=True).start()

    def release_command(self, who: str, slot_id: str) -> tuple:
        self._held.pop(slot_id, None)
        return ("ZREM", self.key(who), slot_id)

    def running(self, who: str) -> int:
        return int(self.client.zcount(self.key(who), self.clock(), "+inf"))

    def _renew_forever(self) -> None:
        while True:
            time.sleep(RENEW_EVERY)
            held = list(self._held.copy().items())
            if not held:
                continue
            try:
                self.renew(held)
            except Exception as exc:  # noqa: BLE001 - a thread must not die; leases then lapse after LEASE s
                log.warning("could not renew %d concurrency lease(s) in Redis: %s", len(held), exc)

    def renew(self, held: list[tuple[str, str]]) -> None:
        until = self.clock() + LEASE
        pipe = self.client.pipeline(transaction=False)
        for slot_id, key in held:
            pipe.zadd(key, {slot_id: until}, xx=True)
            pipe.expire(key, int(LEASE) + 1)
        pipe.execute()
