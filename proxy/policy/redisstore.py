"""Limit counters in Redis, shared by every process that uses the same REDIS_URL.

An admission is one call of the ``ADMIT`` Lua script: it checks every limit of the caller and counts the request
only when all have room, so no two processes ever admit past a limit. A settlement is one call of ``SETTLE``.
Both go over one connection of this process's own; lease renewals and look-ups use redis-py's pool.
Request windows keep the ``limits`` library's layout; token windows and the daily quota are counters charged
with finished requests' tokens. Concurrency slots are leases in a sorted set (score = lease end): those of a
dead process run out after ``LEASE`` seconds, and a thread renews the leases this process holds.
"""
from __future__ import annotations

import functools
import logging
import os
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

import redis
from redis.commands.core import Script

from .counting import Full, Rules, Ticket

log = logging.getLogger(__name__)
PREFIX = "llm-proxy"
LEASE = 60  # seconds a slot lives in Redis without renewal
KINDS = {1: "tokens", 2: "daily", 3: "rate", 4: "concurrency"}

# KEYS: token counters..., [daily counter], request windows..., [slot set]
# ARGV: now, n_tokens, has_daily, n_rate, moving (1/0), token limits..., [daily quota], (limit, expiry) per
#       window..., [lease, slot limit, slot id]
# Reply: {0} admitted, else {kind, index (1-based), milliseconds until that limit has room}; see KINDS.
ADMIT = """
local now, n_tokens, has_daily, n_rate = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4])
local moving = ARGV[5] == '1'
local k, a = 1, 6
for i = 1, n_tokens do
    if tonumber(redis.call('get', KEYS[k]) or '0') >= tonumber(ARGV[a]) then
        return {1, i, redis.call('pttl', KEYS[k])}
    end
    k, a = k + 1, a + 1
end
if has_daily == 1 then
    if tonumber(redis.call('get', KEYS[k]) or '0') >= tonumber(ARGV[a]) then return {2, 0, 0} end
    k, a = k + 1, a + 1
end
local first_k, first_a = k, a
for i = 1, n_rate do
    local limit, expiry = tonumber(ARGV[a]), tonumber(ARGV[a + 1])
    if moving then
        local oldest = redis.call('lindex', KEYS[k], limit - 1)
        if limit < 1 or (oldest and tonumber(oldest) > now - expiry) then
            return {3, i, math.ceil(((tonumber(oldest) or now) + expiry - now) * 1000)}
        end
    elseif tonumber(redis.call('get', KEYS[k]) or '0') >= limit then
        return {3, i, redis.call('pttl', KEYS[k])}
    end
    k, a = k + 1, a + 2
end
if ARGV[a] then
    local lease, limit = tonumber(ARGV[a]), tonumber(ARGV[a + 1])
    if redis.call('zcount', KEYS[k], '(' .. ARGV[1], '+inf') >= limit then return {4, 0, 1000} end
    redis.call('zadd', KEYS[k], now + lease, ARGV[a + 2])
    redis.call('expire', KEYS[k], lease + 1)
end
k, a = first_k, first_a
for i = 1, n_rate do
    local limit, expiry = tonumber(ARGV[a]), tonumber(ARGV[a + 1])
    if moving then
        if redis.call('lpush', KEYS[k], now) > limit then redis.call('ltrim', KEYS[k], 0, limit - 1) end
        redis.call('expire', KEYS[k], expiry)
    elseif redis.call('incr', KEYS[k]) == 1 then
        redis.call('expire', KEYS[k], expiry)
    end
    k, a = k + 1, a + 2
end
return {0}
"""
# KEYS: slot set, counters to charge...   ARGV: slot id ('' = none), now, tokens, expiry per counter...
# A slot's settlement also drops lapsed leases (of processes that died), off the admission's path.
SETTLE = """
if ARGV[1] ~= '' then
    redis.call('zrem', KEYS[1], ARGV[1])
    redis.call('zremrangebyscore', KEYS[1], '-inf', ARGV[2])
end
local tokens = tonumber(ARGV[3])
for i = 2, #KEYS do
    if redis.call('incrby', KEYS[i], tokens) == tokens then redis.call('expire', KEYS[i], ARGV[i + 2]) end
end
"""


@functools.lru_cache(maxsize=4096)
def _plan(who: str, rules: Rules, day: str, moving: bool) -> tuple[tuple[str, ...], tuple[Any, ...],
                                                                     tuple[str, ...], tuple[int, ...]]:
    """The keys and arguments of one caller's admission (after ``now``), and of its token charge: formatted once
    per caller, rule set and day."""
    tokens = [f"{PREFIX}:{item.key_for(who, 'tokens')}" for item in rules.tokens]
    expiries = [item.get_expiry() for item in rules.tokens]
    args: list[Any] = [len(rules.tokens), 1 if rules.daily_tokens else 0, len(rules.rate), 1 if moving else 0]
    args += [item.amount for item in rules.tokens]
    if rules.daily_tokens:
        tokens.append(f"{PREFIX}:LIMITER/{who}/daily-tokens/{day}")
        expiries.append(2 * 86400)
        args.append(rules.daily_tokens)
    windows = "requests" if moving else "requests-fixed"  # the two layouts differ: a switch must not meet the other
    keys = [*tokens, *(f"{PREFIX}:{item.key_for(who, windows)}" for item in rules.rate)]
    for item in rules.rate:
        args += (item.amount, item.get_expiry())
    if rules.concurrency:
        keys.append(slot_key(who))
        args += (LEASE, rules.concurrency)
    return tuple(keys), tuple(args), tuple(tokens), tuple(expiries)


def slot_key(who: str) -> str:
    return f"{PREFIX}:slots:{who}"


class ScriptLine:
    """A Redis client and this process's own connection for script calls, one call at a time: the pool polls a
    connection at every checkout, under gevent one more trip through the event loop per call. A call that
    cannot have the connection within the timeout fails as a slow Redis would, so a hung Redis holds none for
    longer. Other calls (renewals, look-ups, pub/sub) use ``client`` and its pool."""

    def __init__(self, url: str, timeout: float):
        self.client = redis.Redis.from_url(url, socket_timeout=timeout, socket_connect_timeout=timeout)
        self.timeout = timeout
        self._line: tuple[int, redis.Redis] | None = None
        self._busy = threading.Lock()

    def run(self, script: Script, keys: Sequence[str], args: Sequence[Any]) -> Any:
        if not self._busy.acquire(timeout=self.timeout):
            raise redis.TimeoutError("the connection to Redis stayed busy")
        try:
            if self._line is None or self._line[0] != os.getpid():  # made on first use: a forked worker has its own
                self._line = (os.getpid(), redis.Redis(connection_pool=self.client.connection_pool,
                                                       single_connection_client=True))
            return script(keys, args, client=self._line[1])
        finally:
            self._busy.release()


class RedisCounters:
    def __init__(self, url: str, timeout: float, moving: bool, clock: Callable[[], float] = time.time):
        self.line = ScriptLine(url, timeout)
        self.client = self.line.client
        self.moving = moving
        self.clock = clock
        self.timeout = timeout
        self._admit = self.client.register_script(ADMIT)
        self._settle = self.client.register_script(SETTLE)
        self._held: dict[str, str] = {}  # slot id -> its set, for lease renewal
        self._renewer_pid = 0

    def _run(self, script: Script, keys: Sequence[str], args: Sequence[Any]) -> Any:
        return self.line.run(script, keys, args)

    def admit(self, ticket: Ticket, day: str) -> Full | None:
        who, rules = ticket.who, ticket.rules
        keys, args, _, _ = _plan(who, rules, day, self.moving)
        slot = os.urandom(12).hex() if rules.concurrency else None
        reply = self._run(self._admit, keys, (self.clock(), *args, slot) if slot else (self.clock(), *args))
        if reply[0]:
            return Full(KINDS[reply[0]], reply[1] - 1, max(reply[2], 0) / 1000)
        if slot:
            ticket.slot, self._held[slot] = slot, slot_key(who)
            if self._renewer_pid != os.getpid():  # once per process (a forked worker starts its own)
                self._renewer_pid = os.getpid()
                threading.Thread(target=self._renew_forever, name="slot-lease-renewer", daemon=True).start()
        return None

    def settle(self, ticket: Ticket, tokens: int, day: str) -> None:
        who = ticket.who
        _, _, counters, expiries = _plan(who, ticket.rules, day, self.moving)
        if ticket.slot:
            self._held.pop(ticket.slot, None)
        if not tokens:
            counters, expiries = (), ()
        self._run(self._settle, (slot_key(who), *counters), (ticket.slot or "", self.clock(), tokens, *expiries))

    def running(self, who: str) -> int:
        return int(self.client.zcount(slot_key(who), self.clock(), "+inf"))

    # --- leases --------------------------------------------------------------------------------------
    def _renew_forever(self) -> None:
        while True:
            time.sleep(LEASE / 3)
            try:
                self.renew()
            except Exception as exc:  # noqa: BLE001 - the thread must not die; leases then lapse after LEASE s
                log.warning("could not renew %d concurrency lease(s) in Redis: %s", len(self._held), exc)

    def renew(self) -> None:
        """Extend the lease of every slot this process holds."""
        held = list(self._held.items())
        if not held:
            return
        until = self.clock() + LEASE
        pipe = self.client.pipeline(transaction=False)
        for slot, key in held:
            pipe.zadd(key, {slot: until}, xx=True)
            pipe.expire(key, LEASE + 1)
        pipe.execute()
