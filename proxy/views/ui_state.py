"""What the token checks remember: failed guesses per client (the login throttle) and sessions ended by
logging out. Kept in process memory, or in Redis when REDIS_URL is set, so that every worker and host
shares them; if Redis cannot be reached, a revoked session counts as ended and guesses are counted here.
"""
from __future__ import annotations

import ipaddress
import logging
import math
import threading
import time
from collections import OrderedDict, deque
from collections.abc import Callable
from typing import Any

log = logging.getLogger(__name__)
GUESSES = 5          # failed token checks a client may make per window
GUESS_WINDOW_S = 60
MAX_CLIENTS = 10000  # clients whose failures are remembered at once (the oldest are forgotten first)
MAX_REVOKED = 10000  # sessions remembered as ended, until they would have expired anyway
PREFIX = "llm_proxy:ui:"


def client_key(address: str) -> str:
    """What guesses are counted against: the address, or its /64 for IPv6 (one host's usual allocation)."""
    try:
        ip = ipaddress.ip_address(address.split("%", 1)[0])
    except ValueError:
        return address or "-"
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return str(ip.ipv4_mapped)
        return str(ipaddress.IPv6Network((ip, 64), strict=False))
    return str(ip)


class MemoryState:
    def __init__(self, clock: Callable[[], float] = time.time):
        self.clock = clock
        self._lock = threading.Lock()
        self._failures: OrderedDict[str, deque[float]] = OrderedDict()
        self._revoked: OrderedDict[str, float] = OrderedDict()

    def locked_for(self, client: str) -> int:
        """Seconds until `client` may try a token again (0: now)."""
        with self._lock:
            times = self._failures.get(client)
            if not times:
                return 0
            now = self.clock()
            while times and times[0] <= now - GUESS_WINDOW_S:
                times.popleft()
            if len(times) < GUESSES:
                return 0
            return max(1, math.ceil(times[0] + GUESS_WINDOW_S - now))

    def failed(self, client: str) -> None:
        with self._lock:
            times = self._failures.pop(client, None) or deque(maxlen=GUESSES)
            times.append(self.clock())
            self._failures[client] = times  # most recent last
            while len(self._failures) > MAX_CLIENTS:
                self._failures.popitem(last=False)

    def succeeded(self, client: str) -> None:
        with self._lock:
            self._failures.pop(client, None)

    def revoke(self, session_id: str, until: float) -> None:
        with self._lock:
            now = self.clock()
            for sid, expiry in list(self._revoked.items())[:64]:  # forget a few that expired anyway
                if expiry <= now:
                    del self._revoked[sid]
            self._revoked[session_id] = until
            while len(self._revoked) > MAX_REVOKED:
                self._revoked.popitem(last=False)

    def revoked(self, session_id: str) -> bool:
        return session_id in self._revoked


class RedisState:
    """The same, in Redis: a fixed window counter per client and a key per ended session, both expiring."""

    def __init__(self, url: str, timeout: float, fallback: MemoryState):
        import redis

        self.client = redis.Redis.from_url(url, socket_timeout=timeout, socket_connect_timeout=timeout)
        self.fallback = fallback
        self.url = url

    def _call(self, what: str, fn: Callable[[], Any], default: Any) -> Any:
        try:
            return fn()
        except Exception as exc:  # redis errors of every kind: the memory state answers instead
            log.warning("log view sign-in state: Redis unavailable for %s (%s); using this process's memory",
                        what, type(exc).__name__)
            return default

    def locked_for(self, client: str) -> int:
        def check() -> int:
            pipe = self.client.pipeline()
            pipe.get(PREFIX + "guesses:" + client)
            pipe.ttl(PREFIX + "guesses:" + client)
            used, ttl = pipe.execute()
            return max(1, int(ttl)) if used is not None and int(used) >= GUESSES else 0
        return max(self._call("the login throttle", check, 0), self.fallback.locked_for(client))

    def failed(self, client: str) -> None:
        key = PREFIX + "guesses:" + client

        def count() -> bool:
            pipe = self.client.pipeline()
            pipe.set(key, 0, ex=GUESS_WINDOW_S, nx=True)
            pipe.incr(key)
            pipe.execute()
            return True
        if not self._call("the login throttle", count, False):
            self.fallback.failed(client)

    def succeeded(self, client: str) -> None:
        self._call("the login throttle", lambda: self.client.delete(PREFIX + "guesses:" + client), None)
        self.fallback.succeeded(client)

    def revoke(self, session_id: str, until: float) -> None:
        self.fallback.revoke(session_id, until)
        seconds = max(1, math.ceil(until - time.time()))
        self._call("logging out", lambda: self.client.set(PREFIX + "revoked:" + session_id, 1, ex=seconds), None)

    def revoked(self, session_id: str) -> bool:
        if self.fallback.revoked(session_id):
            return True
        return bool(self._call("a session check", lambda: self.client.exists(PREFIX + "revoked:" + session_id),
                               True))


def make_state(redis_url: str, timeout: float) -> MemoryState | RedisState:
    memory = MemoryState()
    if not redis_url:
        return memory
    try:
        return RedisState(redis_url, timeout, memory)
    except Exception as exc:  # an URL redis-py cannot use (the limiter may still can): memory only
        log.warning("log view sign-in state kept in memory: %s", exc)
        return memory
