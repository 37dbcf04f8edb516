"""Counters behind the limits: request rate, tokens per window, daily token quota, concurrency.

Windows come from the ``limits`` library (MemoryStorage, or RedisStorage when REDIS_URL is set, so that
workers and hosts share them): requests use a moving (or fixed) window, tokens a fixed window charged
with the real usage of each finished request, the daily quota a fixed window per UTC date. Admission
asks only "is there room now?" — a running stream is never cut. With Redis, all admission checks travel
in one script (one round trip, all or nothing) that keeps the library's own key layout, so its
``get_window_stats`` reads them back for Retry-After. If the store is unreachable the request is admitted
(``LIMITS_FAIL_OPEN``, with a warning) or refused with 503 — never a 500.
"""
from __future__ import annotations

import datetime as dt
import hashlib
import logging
import math
import os
import time
from dataclasses import dataclass, field
from typing import Any, Callable
from urllib.parse import urlsplit, urlunsplit

import limits
from limits import RateLimitItem, RateLimitItemPerDay, RateLimitItemPerMinute
from limits.errors import StorageError
from limits.storage import MemoryStorage, RedisStorage
from limits.strategies import FixedWindowRateLimiter, MovingWindowRateLimiter

from ..errors import ProxyError, RateLimited
from .slots import LEASE, MemorySlots, RedisSlots, new_slot_id

log = logging.getLogger(__name__)
KEY_PREFIX = "llm-proxy"
MAX_IDLE = 64  # Redis connections kept open for the next admissions
DOWN_PAUSE = 1.0  # seconds Redis is left alone after a failure (requests are decided by LIMITS_FAIL_OPEN)
STRATEGIES = ("moving-window", "fixed-window")

from redis.exceptions import ConnectionError, NoScriptError, RedisError, ResponseError

try:
    import hiredis
except ImportError:  # pragma: no cover - a requirement; redis-py's own parser serves without it
    hiredis = None

STORE_ERRORS = (StorageError, RedisError, OSError)  # the store's own failures; anything else must surface

# All admission checks of one request in one script: one command, one reply, all or nothing. It reads and
# writes the same keys, in the same layout, as the limits library's own scripts (a moving window is a list of
# hit times, newest first, as SCRIPT_ACQUIRE_MOVING_WINDOW keeps it; a fixed window a counter with an expiry,
# as SCRIPT_INCR_EXPIRE keeps it), so the library's get_window_stats reads them back for Retry-After.
# KEYS: token counters..., [daily counter], request windows..., [slot set]
# ARGV: n_tokens, has_daily, n_rate, moving (1/0), has_slot, now,
#       token limits..., [daily quota], (limit, expiry) per window..., [lease, slot limit, slot id]
# Reply: {0, 0} admitted; {1, i} token window i full; {2, 0} daily quota used; {3, i} request window i full;
#        {4, 0} no concurrency slot.
ADMIT_LUA = """
local n_tokens, has_daily, n_rate = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local moving, has_slot, now = tonumber(ARGV[4]), tonumber(ARGV[5]), tonumber(ARGV[6])
local k, a = 1, 7
for i = 1, n_tokens do
    if tonumber(redis.call('get', KEYS[k]) or '0') >= tonumber(ARGV[a]) then return {1, i} end
    k, a = k + 1, a + 1
end
if has_daily == 1 then
    if tonumber(redis.call('get', KEYS[k]) or '0') >= tonumber(ARGV[a]) then return {2, 0} end
    k, a = k + 1, a + 1
end
local first_rate, first_arg = k, a
for i = 1, n_rate do
    local limit, expiry = tonumber(ARGV[a]), tonumber(ARGV[a + 1])
    if moving == 1 then
        local entry = redis.call('lindex', KEYS[k], limit - 1)
        if limit < 1 or (entry and tonumber(entry) >= now - expiry) then return {3, i} end
    else
        if tonumber(redis.call('get', KEYS[k]) or '0') + 1 > limit then return {3, i} end
    end
    k, a = k + 1, a + 2
end
if has_slot == 1 then
    local lease, slot_limit = tonumber(ARGV[a + 0]), tonumber(ARGV[a + 1])
    redis.call('zremrangebyscore', KEYS[k], '-inf', now)
    if redis.call('zcard', KEYS[k]) >= slot_limit then return {4, 0} end
    redis.call('zadd', KEYS[k], now + lease, ARGV[a + 2])
    redis.call('expire', KEYS[k], math.ceil(lease) + 1)
end
k, a = first_rate, first_arg
for i = 1, n_rate do
    local limit, expiry = tonumber(ARGV[a]), tonumber(ARGV[a + 1])
    if moving == 1 then
        redis.call('lpush', KEYS[k], now)
        redis.call('ltrim', KEYS[k], 0, limit - 1)
        redis.call('expire', KEYS[k], expiry)
    else
        if redis.call('incrby', KEYS[k], 1) == 1 then redis.call('expire', KEYS[k], expiry) end
    end
    k, a = k + 1, a + 2
end
return {0, 0}
"""
# Lua sent by SHA1: the limits library's own scripts (so its get_window_stats reads what they write) and ours
SCRIPTS = {name: text if isinstance(text, bytes) else text.encode()
           for name, text in (("incr", RedisStorage.SCRIPT_INCR_EXPIRE), ("admit", ADMIT_LUA))}
SHA_INCR, SHA_ADMIT = (hashlib.sha1(SCRIPTS[k]).hexdigest() for k in ("incr", "admit"))


def pack_commands(commands: list[tuple]) -> bytes:
    """Commands in RESP, as redis-py encodes them (str as UTF-8, float by repr), in a quarter of the time."""
    out = []
    for command in commands:
        out.append(b"*%d\r\n" % len(command))
        for arg in command:
            if isinstance(arg, bytes):
                data = arg
            elif isinstance(arg, str):
                data = arg.encode()
            elif isinstance(arg, float):
                data = repr(arg).encode()
            else:
                data = str(arg).encode()
            out.append(b"$%d\r\n%s\r\n" % (len(data), data))
    return b"".join(out)


# --- settings parsers --------------------------------------------------------------------------

def parse_rate(raw: str) -> tuple[RateLimitItem, ...]:
    """`60/minute`, `10/second;1000/hour`, `100 per 2 seconds`…, parsed by the limits library."""
    text = raw.strip()
    if not text:
        return ()
    try:
        return tuple(limits.parse_many(text))
    except ValueError:
        raise ValueError("a rate such as 60/minute or 10/second;1000/hour") from None


def check_rate(raw: str) -> str:
    parse_rate(raw)
    return raw.strip()


def check_redis_url(raw: str) -> str:
    value = raw.strip()
    if value and urlsplit(value).scheme not in ("redis", "rediss", "unix", "redis+unix"):
        raise ValueError("a redis://[:password@]host:port[/db], rediss://… or unix://… URL")
    return value


def mask_url(url: str) -> str:
    """The URL with its password (if any) replaced by ***."""
    if not url:
        return "(not set)"
    parts = urlsplit(url)
    if parts.password is None:
        return url
    host = parts.hostname or ""
    netloc = f"{parts.username or ''}:***@{host}" + (f":{parts.port}" if parts.port else "")
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))


# --- what one caller may do ------------------------------------------------------------------------

@dataclass(frozen=True)
class Rules:
    rate: tuple[RateLimitItem, ...] = ()      # request windows
    tokens: tuple[RateLimitItem, ...] = ()    # token windows (tokens per minute…)
    daily_tokens: int = 0                     # tokens per UTC day; 0 = none
    concurrency: int = 0                      # requests at once; 0 = none

    def __bool__(self) -> bool:
        return bool(self.rate or self.tokens or self.daily_tokens or self.concurrency)


@dataclass
class Ticket:
    """An admitted request: what to charge and release when it ends (``Limiter.settle``)."""

    who: str
    rules: Rules
    slot: str | None = None
    settled: bool = False
    extra: dict = field(default_factory=dict)


class StoreUnavailable(ProxyError):
    status = 503


def _per(item: RateLimitItem) -> str:
    unit = item.GRANULARITY.name
    return f"{item.multiples} {unit}s" if item.multiples != 1 else unit


def _wait(seconds: float) -> str:
    seconds = max(1, math.ceil(seconds))
    if seconds < 120:
        return f"{seconds} s"
    if seconds < 7200:
        return f"{seconds // 60} min {seconds % 60} s"
    return f"{seconds // 3600} h {seconds % 3600 // 60} min"


def _stamp(epoch: float) -> str:
    return dt.datetime.fromtimestamp(epoch, dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


class Limiter:
    """Admission (``admit``) and settlement (``settle``) against one store."""

    def __init__(self, redis_url: str = "", strategy: str = "moving-window", fail_open: bool = True,
                 timeout: float = 1.0, clock: Callable[[], float] = time.time):
        self.clock = clock
        self.fail_open = fail_open
        self.redis_url = redis_url
        if redis_url:
            self.storage: Any = RedisStorage(redis_url, key_prefix=KEY_PREFIX, wrap_exceptions=True,
                                             socket_timeout=timeout, socket_connect_timeout=timeout)
            self.redis = self.storage.get_connection()
            self._idle: list[Any] = []  # connections for admission and settlement (see _send)
            self._pid = os.getpid()
            self.slots: Any = RedisSlots(self.redis, KEY_PREFIX, clock)
        else:
            self.storage = MemoryStorage()
            self.redis = None
            self.slots = MemorySlots()
        self.window = (FixedWindowRateLimiter if strategy == "fixed-window" else MovingWindowRateLimiter)(self.storage)
        self.moving = not isinstance(self.window, FixedWindowRateLimiter)
        # the two strategies keep different Redis types under their keys: a switch must not meet the other's data
        self.requests_id = "requests" if self.moving else "requests-fixed"
        self.counter = FixedWindowRateLimiter(self.storage)
        self._down_until = 0.0
        self._down_since: float | None = None
        self._today: tuple[str, float, float] | None = None
        self._admit_plans: dict[tuple, tuple[list[str], list[Any]]] = {}

    def describe(self) -> str:
        return f"Redis at {mask_url(self.redis_url)}" if self.redis_url else "memory"

    # --- keys -------------------------------------------------------------------------------------
    def _day(self) -> tuple[str, float]:
        """Today's UTC date and the epoch second it ends (computed once a day)."""
        now = self.clock()
        cached = self._today
        if cached is not None and cached[2] <= now < cached[1]:
            return cached[0], cached[1]
        today = dt.datetime.fromtimestamp(now, dt.timezone.utc).date()
        start = dt.datetime.combine(today, dt.time(), dt.timezone.utc).timestamp()
        end = dt.datetime.combine(today + dt.timedelta(days=1), dt.time(), dt.timezone.utc).timestamp()
        self._today = (today.isoformat(), end, start)
        return today.isoformat(), end

    @staticmethod
    def _day_item(quota: int) -> RateLimitItem:
        return RateLimitItemPerDay(quota)

    @staticmethod
    def per_minute(amount: int) -> RateLimitItem:
        return RateLimitItemPerMinute(amount)

    # --- admission ----------------------------------------------------------------------------------
    def admit(self, who: str, label: str, rules: Rules) -> Ticket:
        """Room for one more request of ``who``? A Ticket, or RateLimited / StoreUnavailable."""
        ticket = Ticket(who, rules)
        if not rules:
            return ticket
        if self.redis is not None and self.clock() < self._down_until:
            return self._store_failed(ticket, None)
        try:
            if self.redis is not None:
                self._admit_redis(ticket, label)
            else:
                self._admit_memory(ticket, label)
        except STORE_ERRORS as exc:
            return self._store_failed(ticket, exc)
        self._store_ok()
        return ticket

    def _admit_memory(self, ticket: Ticket, label: str) -> None:
        who, rules = ticket.who, ticket.rules
        for item in rules.tokens:
            if not self.counter.test(item, who, "tokens"):
                raise self._tokens_denied(label, who, item)
        if rules.daily_tokens:
            day, _ = self._day()
            if not self.counter.test(self._day_item(rules.daily_tokens), who, "daily-tokens", day):
                raise self._daily_denied(label, rules.daily_tokens)
        for item in rules.rate:  # all or nothing, as in Redis: test every window before counting in any
            if not self.window.test(item, who, self.requests_id):
                raise self._rate_denied(label, who, item)
        if rules.concurrency:
            ticket.slot = self.slots.acquire(who, rules.concurrency)
            if ticket.slot is None:
                raise self._concurrency_denied(label, rules.concurrency)
        for item in rules.rate:
            self.window.hit(item, who, self.requests_id)

    def _admit_plan(self, who: str, rules: Rules, day: str) -> tuple[list[str], list[Any]]:
        """The admission script's keys and fixed arguments for one caller and rule set, built once (the
        limits library's key formatting costs ~20 µs a request); the slot id is added per request."""
        plan_key = (who, rules, day, self.moving)
        plan = self._admit_plans.get(plan_key)
        if plan is not None:
            return plan
        store = self.storage
        keys = [store.prefixed_key(item.key_for(who, "tokens")) for item in rules.tokens]
        args: list[Any] = [item.amount for item in rules.tokens]
        if rules.daily_tokens:
            keys.append(store.prefixed_key(self._day_item(rules.daily_tokens).key_for(who, "daily-tokens", day)))
            args.append(rules.daily_tokens)
        for item in rules.rate:
            keys.append(store.prefixed_key(item.key_for(who, self.requests_id)))
            args += (item.amount, item.get_expiry())
        if rules.concurrency:
            keys.append(self.slots.key(who))
            args += (LEASE, rules.concurrency)
        if len(self._admit_plans) >= 4096:  # callers are keys and client addresses: bounded, but be safe
            self._admit_plans.clear()
        self._admit_plans[plan_key] = plan = (keys, args)
        return plan

    def _roundtrip(self, commands: list[tuple]) -> list:
        """Send ``commands`` in one write and read their replies: one round trip. (A redis-py pipeline does the
        same with ~60 µs more bookkeeping per call, which matters inside the 0.2 ms budget.) Scripts go by
        their SHA1; when Redis lost its script cache (a restart) they are loaded and the batch sent again —
        safe, since then every script in it failed and the other commands (GET, ZREM) are idempotent."""
        try:
            return self._send(commands)
        except NoScriptError:
            self._send([("SCRIPT", "LOAD", text) for text in SCRIPTS.values()])
            return self._send(commands)

    def _send(self, commands: list[tuple]) -> list:
        """One write, then the replies, on an idle connection of our own. redis-py connects (URL, auth, TLS,
        database); the write and the reply parsing go straight to its socket and a hiredis reader, because
        redis-py's pool and response layers cost ~25 µs a call, a tenth of the 0.2 ms budget. A connection
        that failed is closed and dropped; after a fork (gunicorn) the parent's connections are never reused."""
        if self._pid != os.getpid():
            self._pid, self._idle = os.getpid(), []
        try:
            conn, reader = self._idle.pop()
        except IndexError:
            pool = self.redis.connection_pool
            conn = pool.connection_class(**pool.connection_kwargs)
            conn.connect()
            reader = hiredis.Reader() if hiredis is not None else None
        try:
            if reader is None:  # no hiredis: redis-py's own parser
                conn.send_packed_command([pack_commands(commands)], check_health=False)
                replies = [conn.read_response() for _ in commands]
            else:
                sock = conn._sock
                if sock is None:
                    raise ConnectionError("the Redis connection is closed")
                sock.sendall(pack_commands(commands))
                replies = []
                while len(replies) < len(commands):
                    reply = reader.gets()
                    if reply is False:
                        data = sock.recv(65536)
                        if not data:
                            raise ConnectionError("Redis closed the connection")
                        reader.feed(data)
                        continue
                    replies.append(reply)
                for reply in replies:
                    if isinstance(reply, hiredis.ReplyError):
                        message = str(reply)
                        raise NoScriptError(message) if message.startswith("NOSCRIPT") else ResponseError(message)
        except BaseException:
            conn.disconnect()  # replies may be left unread: this connection cannot be reused
            raise
        if len(self._idle) < MAX_IDLE:
            self._idle.append((conn, reader))
        else:
            conn.disconnect()
        return replies

    def _admit_redis(self, ticket: Ticket, label: str) -> None:
        """Every check in one EVALSHA (ADMIT_LUA): one round trip, and nothing is counted unless all pass."""
        who, rules = ticket.who, ticket.rules
        day = self._day()[0] if rules.daily_tokens else ""
        keys, args = self._admit_plan(who, rules, day)
        slot = new_slot_id() if rules.concurrency else None
        head = (len(rules.tokens), 1 if rules.daily_tokens else 0, len(rules.rate), 1 if self.moving else 0,
                1 if slot else 0, self.clock())
        command = ("EVALSHA", SHA_ADMIT, len(keys), *keys, *head, *args, slot) if slot else \
            ("EVALSHA", SHA_ADMIT, len(keys), *keys, *head, *args)
        [(code, index)] = self._roundtrip([command])
        code, index = int(code), int(index)
        if code == 0:
            if slot:
                ticket.slot = slot
                self.slots.held(who, slot)
            return
        if code == 1:
            raise self._tokens_denied(label, who, rules.tokens[index - 1])
        if code == 2:
            raise self._daily_denied(label, rules.daily_tokens)
        if code == 3:
            raise self._rate_denied(label, who, rules.rate[index - 1])
        raise self._concurrency_denied(label, rules.concurrency)

    # --- refusals: the message names the limit and when it resets ---------------------------------
    def _reset_in(self, limiter: Any, item: RateLimitItem, *ids: str) -> float:
        stats = limiter.get_window_stats(item, *ids)
        return max(1.0, stats.reset_time - time.time())

    def _rate_denied(self, label: str, who: str, item: RateLimitItem) -> RateLimited:
        wait = self._reset_in(self.window, item, who, self.requests_id)
        return RateLimited(f"rate limit reached for {label}: {item.amount} requests per {_per(item)}; "
                           f"resets in {_wait(wait)}", code="rate_limit_exceeded", retry_after=math.ceil(wait))

    def _tokens_denied(self, label: str, who: str, item: RateLimitItem) -> RateLimited:
        wait = self._reset_in(self.counter, item, who, "tokens")
        return RateLimited(f"token limit reached for {label}: {item.amount} tokens per {_per(item)}; "
                           f"resets in {_wait(wait)}", code="tokens_exceeded", retry_after=math.ceil(wait))

    def _daily_denied(self, label: str, quota: int) -> RateLimited:
        _, end = self._day()
        wait = max(1.0, end - self.clock())
        return RateLimited(f"daily token quota used up for {label}: {quota} tokens per day (UTC); "
                           f"resets at {_stamp(end)} (in {_wait(wait)})", code="insufficient_quota",
                           retry_after=math.ceil(wait))

    def _concurrency_denied(self, label: str, limit: int) -> RateLimited:
        return RateLimited(f"concurrency limit reached for {label}: {limit} request(s) at once; "
                           "retry when one of them has finished", code="concurrency_exceeded", retry_after=1)

    # --- settlement -----------------------------------------------------------------------------------
    def settle(self, ticket: Ticket, tokens: int) -> None:
        """The request ended: charge its tokens, free its slot. Safe to call twice (the second does nothing)."""
        if ticket.settled:
            return
        ticket.settled = True
        rules, who = ticket.rules, ticket.who
        charge = tokens > 0 and bool(rules.tokens or rules.daily_tokens)
        if not charge and not ticket.slot:
            return
        try:
            if self.redis is not None:
                self._settle_redis(ticket, tokens if charge else 0)
            else:
                if ticket.slot:
                    self.slots.release(ticket.slot)
                if charge:
                    for item in rules.tokens:
                        self.counter.hit(item, who, "tokens", cost=tokens)
                    if rules.daily_tokens:
                        day, _ = self._day()
                        self.counter.hit(self._day_item(rules.daily_tokens), who, "daily-tokens", day, cost=tokens)
        except STORE_ERRORS as exc:
            log.warning("could not settle the limits of %s in %s (%s); a concurrency slot lapses after its lease",
                        who, self.describe(), exc)

    def _settle_redis(self, ticket: Ticket, tokens: int) -> None:
        store, rules, who = self.storage, ticket.rules, ticket.who
        commands: list[tuple] = []
        if ticket.slot:
            commands.append(self.slots.release_command(who, ticket.slot))
        if tokens:
            for item in rules.tokens:
                commands.append(("EVALSHA", SHA_INCR, 1, store.prefixed_key(item.key_for(who, "tokens")),
                                 item.get_expiry(), tokens))
            if rules.daily_tokens:
                day, _ = self._day()
                key = store.prefixed_key(self._day_item(rules.daily_tokens).key_for(who, "daily-tokens", day))
                commands.append(("EVALSHA", SHA_INCR, 1, key, 2 * 86400, tokens))
        self._roundtrip(commands)

    # --- the store going away and coming back -------------------------------------------------------
    def _store_failed(self, ticket: Ticket, exc: Exception | None) -> Ticket:
        now = self.clock()
        if exc is not None:
            self._down_until = now + DOWN_PAUSE
            if self._down_since is None:
                self._down_since = now
                log.warning("limits store %s unreachable (%s): requests are %s until it answers again "
                            "(LIMITS_FAIL_OPEN=%s)", self.describe(), exc,
                            "admitted without limits" if self.fail_open else "refused with 503",
                            "true" if self.fail_open else "false")
        if self.fail_open:
            ticket.settled = True  # nothing was taken: nothing to give back
            return ticket
        raise StoreUnavailable("the limits store is unreachable and this proxy is set to refuse requests then "
                               "(LIMITS_FAIL_OPEN=false); retry shortly", retry_after=math.ceil(DOWN_PAUSE))

    def _store_ok(self) -> None:
        if self._down_since is not None:
            log.warning("limits store %s answers again after %.1f s; limits enforced", self.describe(),
                        self.clock() - self._down_since)
            self._down_since = None
