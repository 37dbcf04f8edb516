"""Backend slots counted in Redis (``REDIS_URL`` with BACKENDS_FILE), so ``max_concurrency`` holds across
processes and hosts; the queue itself (``slots.SlotQueue``) stays in each process.

A slot is a lease in a sorted set per backend (score = lease end, Redis's own clock): ``TAKE`` gives the first
of several backends with room, atomically; ``GIVE`` drops a lease and announces it on one pub/sub channel, which
every process with waiters listens to. Leases this process holds are renewed by a thread (from its first
lease on, every third of ``lease_s``); a crashed process's lapse after ``lease_s``. Nothing here decides who
waits or in which order, and nothing falls back: callers see ``redis`` errors (``SlotQueue`` then counts in
its process).
"""
from __future__ import annotations

import hashlib
import logging
import os
import threading
from collections.abc import Callable, Sequence
from typing import Any

from .policy.redisstore import PREFIX, ScriptLine

log = logging.getLogger(__name__)
LEASE_S = 20.0  # a slot lives this long in Redis without renewal (a crashed holder's slots come back after it)
CHANNEL = f"{PREFIX}:backend-slots:freed"

# KEYS: the backends' slot sets, in the order to try them.  ARGV: lease seconds, slot id, cap per set...
# Reply: the 1-based index of the set a slot was taken in, 0 when all are full. Lapsed leases go first.
TAKE = """
local t = redis.call('time')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local lease = tonumber(ARGV[1])
for i = 1, #KEYS do
    redis.call('zremrangebyscore', KEYS[i], '-inf', now)
    if redis.call('zcard', KEYS[i]) < tonumber(ARGV[i + 2]) then
        redis.call('zadd', KEYS[i], now + lease, ARGV[2])
        redis.call('expire', KEYS[i], math.ceil(lease) + 1)
        return i
    end
end
return 0
"""
# KEYS: a slot set.  ARGV: slot id, channel.  The freed set's name goes to the channel.
GIVE = """
if redis.call('zrem', KEYS[1], ARGV[1]) == 1 then redis.call('publish', ARGV[2], KEYS[1]) end
"""
# KEYS: slot sets, one per slot.  ARGV: lease seconds, then the slot ids (in the order of KEYS).
RENEW = """
local t = redis.call('time')
local until_ = tonumber(t[1]) + tonumber(t[2]) / 1000000 + tonumber(ARGV[1])
for i = 1, #KEYS do
    redis.call('zadd', KEYS[i], 'XX', until_, ARGV[i + 1])
    redis.call('expire', KEYS[i], math.ceil(tonumber(ARGV[1])) + 1)
end
"""


def slot_set(member: Any) -> str:
    """A backend's slot set: its name in the file and its URL (two files naming different servers alike do not
    share slots)."""
    spec = member.spec
    url = hashlib.blake2b(spec.url.encode(), digest_size=6).hexdigest()
    return f"{PREFIX}:backend-slots:{spec.name}:{url}"


class SharedSlots:
    """This process's leases on backend slots in Redis, and the listener that hears slots freed elsewhere."""

    def __init__(self, url: str, timeout: float, lease_s: float = LEASE_S):
        self.line = ScriptLine(url, timeout)
        self.lease_s = lease_s
        self._take = self.line.client.register_script(TAKE)
        self._give = self.line.client.register_script(GIVE)
        self._renew = self.line.client.register_script(RENEW)
        self._held: dict[str, list[str]] = {}  # slot set -> the ids of the leases this process holds in it
        self._lock = threading.Lock()
        self._renewer_pid = self._listener_pid = 0  # the process the threads run in (0: none yet)
        self._stop = threading.Event()

    def take(self, sets: Sequence[str], caps: Sequence[int]) -> int | None:
        """The index in ``sets`` of the first with a slot free, taken by this process; None when all are full."""
        slot = os.urandom(9).hex()
        index = int(self.line.run(self._take, sets, (self.lease_s, slot, *caps)))
        if not index:
            return None
        with self._lock:
            self._held.setdefault(sets[index - 1], []).append(slot)
        if self._renewer_pid != os.getpid():  # once per process (a forked worker starts its own)
            self._renewer_pid = os.getpid()
            threading.Thread(target=self._renew_forever, name="backend-slot-leases", daemon=True).start()
        return index - 1

    def give(self, key: str) -> bool:
        """One of this process's leases in ``key`` back (announced to the listeners); False if it held none
        there (the slot was taken while Redis was away)."""
        with self._lock:
            held = self._held.get(key)
            if not held:
                return False
            slot = held.pop()
            if not held:
                del self._held[key]
        self.line.run(self._give, (key,), (slot, CHANNEL))
        return True

    def forget(self, key: str) -> None:
        """One of this process's leases in ``key`` is no longer renewed (Redis was away when its slot was
        freed): it lapses within ``lease_s``."""
        with self._lock:
            held = self._held.get(key)
            if held:
                held.pop()
                if not held:
                    del self._held[key]

    def held(self) -> int:
        with self._lock:
            return sum(len(v) for v in self._held.values())

    def renew(self) -> None:
        """Extend every lease this process holds."""
        with self._lock:
            pairs = [(key, slot) for key, slots in self._held.items() for slot in slots]
        if pairs:
            self.line.run(self._renew, [k for k, _ in pairs], (self.lease_s, *(s for _, s in pairs)))

    def listen(self, freed: Callable[[str], None]) -> None:
        """From the first wait on, once per process (a forked worker starts its own): call ``freed(slot set)``
        for each slot given back anywhere."""
        if self._listener_pid == os.getpid():
            return
        self._listener_pid = os.getpid()
        threading.Thread(target=self._listen, args=(freed,), name="backend-slot-listener", daemon=True).start()

    def stop(self) -> None:
        self._stop.set()

    def _renew_forever(self) -> None:
        while not self._stop.wait(self.lease_s / 3):
            try:
                self.renew()
            except Exception as exc:  # noqa: BLE001 - the thread must not die; leases then lapse after lease_s
                log.warning("could not renew %d backend slot lease(s) in Redis: %s", self.held(), exc)

    def _listen(self, freed: Callable[[str], None]) -> None:
        while not self._stop.is_set():
            pubsub = self.line.client.pubsub(ignore_subscribe_messages=True)
            try:
                pubsub.subscribe(CHANNEL)
                while not self._stop.is_set():
                    message = pubsub.get_message(timeout=1.0)
                    if message is not None and message.get("type") == "message":
                        freed(message["data"].decode("utf-8", "replace"))
            except Exception as exc:  # noqa: BLE001 - Redis away: waiters poll meanwhile; listen again later
                log.debug("backend slot listener: %s", exc)
                self._stop.wait(1.0)
            finally:
                pubsub.close()
