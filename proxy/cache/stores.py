"""Where entries live: this process's memory (least recently used evicted past a byte budget) or Redis
(shared by workers and hosts). Both hold bytes under a key and forget them after the TTL (0: never).

A Redis read is one GET on the request's path, before anything is sent. A write never is: ``RedisStore.put``
queues the entry and a writer thread (a greenlet under gevent) sends it with SET ... EX; a full queue drops it.
"""
from __future__ import annotations

import logging
import os
import queue
import threading
import time
from collections import OrderedDict
from collections.abc import Callable

import redis

log = logging.getLogger(__name__)
PREFIX = "llm-proxy:cache:"
WRITE_QUEUE = 1000  # entries waiting for the Redis writer; more are dropped


def _nothing(*_: object) -> None:
    pass


class MemoryStore:
    """An LRU of bytes: an entry costs the length of its key and value; past ``max_bytes`` the least recently
    used go (``on_evict``). An entry larger than the whole budget is not kept."""

    def __init__(self, max_bytes: int, ttl: float, clock: Callable[[], float] = time.monotonic,
                 on_evict: Callable[[int], None] = _nothing, on_store: Callable[[], None] = _nothing):
        self.max_bytes = max_bytes
        self.ttl = ttl
        self.clock = clock
        self.on_evict = on_evict
        self.on_store = on_store
        self.bytes = 0
        self._items: OrderedDict[str, tuple[float, bytes]] = OrderedDict()
        self._lock = threading.Lock()  # no I/O and no yield while it is held

    def __len__(self) -> int:
        return len(self._items)

    def describe(self) -> str:
        return f"memory ({self.max_bytes} bytes at most)"

    def get(self, key: str) -> bytes | None:
        with self._lock:
            item = self._items.get(key)
            if item is None:
                return None
            expires, value = item
            if expires and self.clock() >= expires:
                del self._items[key]
                self.bytes -= len(key) + len(value)
                return None
            self._items.move_to_end(key)
            return value

    def put(self, key: str, value: bytes) -> None:
        size = len(key) + len(value)
        if size > self.max_bytes:
            return
        evicted = 0
        with self._lock:
            old = self._items.pop(key, None)
            if old is not None:
                self.bytes -= size - len(value) + len(old[1])
            self._items[key] = (self.clock() + self.ttl if self.ttl else 0.0, value)
            self.bytes += size
            while self.bytes > self.max_bytes:
                gone, (_, dropped) = self._items.popitem(last=False)
                self.bytes -= len(gone) + len(dropped)
                evicted += 1
        self.on_store()
        if evicted:
            self.on_evict(evicted)


class RedisStore:
    """Entries in Redis under ``llm-proxy:cache:<key>``, written off the request's path."""

    def __init__(self, url: str, ttl: float, timeout: float, on_store: Callable[[], None] = _nothing,
                 on_error: Callable[[], None] = _nothing):
        self.client = redis.Redis.from_url(url, socket_timeout=timeout, socket_connect_timeout=timeout)
        self.timeout = timeout
        self.ttl = ttl
        self._line: tuple[int, redis.Redis] | None = None
        self._busy = threading.Lock()
        self.on_store = on_store
        self.on_error = on_error
        self.bytes = 0  # not known here: Redis keeps them
        self._queue: queue.Queue[tuple[str, bytes]] = queue.Queue(WRITE_QUEUE)
        self._writer_pid = 0
        self._dropped_warned = False

    def describe(self) -> str:
        return "Redis"

    def get(self, key: str) -> bytes | None:
        """One GET on this process's own connection, one at a time (as the limits' scripts go: redis-py's pool
        polls a connection at every checkout, under gevent one more trip through the event loop); a read
        that cannot have the connection within the timeout fails as a slow Redis would."""
        if not self._busy.acquire(timeout=self.timeout):
            raise redis.TimeoutError("the connection to Redis stayed busy")
        try:
            if self._line is None or self._line[0] != os.getpid():  # a forked worker makes its own
                self._line = (os.getpid(), redis.Redis(connection_pool=self.client.connection_pool,
                                                       single_connection_client=True))
            value = self._line[1].get(PREFIX + key)
        finally:
            self._busy.release()
        return value if isinstance(value, bytes) else None

    def put(self, key: str, value: bytes) -> None:
        if self._writer_pid != os.getpid():  # once per process: a forked worker starts its own
            self._writer_pid = os.getpid()
            threading.Thread(target=self._write_forever, name="cache-writer", daemon=True).start()
        try:
            self._queue.put_nowait((key, value))
        except queue.Full:
            self.on_error()
            if not self._dropped_warned:
                self._dropped_warned = True
                log.warning("the response cache's Redis writer is behind (%d entries waiting): entries are "
                            "dropped", WRITE_QUEUE)

    def flush(self, timeout: float = 5.0) -> bool:
        """Wait until every queued entry was written (shutdown, tests); False if that took too long."""
        deadline = time.monotonic() + timeout
        while self._queue.unfinished_tasks:
            if time.monotonic() > deadline:
                return False
            time.sleep(0.005)
        return True

    def _write_forever(self) -> None:
        while True:
            key, value = self._queue.get()
            try:
                self.client.set(PREFIX + key, value, ex=int(self.ttl + 0.999) if self.ttl else None)
                self.on_store()
            except redis.RedisError as exc:
                self.on_error()
                log.warning("could not write a response cache entry to Redis: %s", exc)
            finally:
                self._queue.task_done()
