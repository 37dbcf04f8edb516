"""Admission and settlement against the limits one caller is held to: request windows, token windows, a daily
token quota and concurrency.

``Limiter.admit`` lets a request in only when every limit has room, all or nothing, and hands out a ``Ticket``;
``Limiter.settle`` charges the tokens it used and frees its slot when it ends; a running request is never cut.
Counters live in this process (the ``limits`` library's storage and strategies) or in Redis (``redisstore``),
shared and exact across processes. When Redis fails, LIMITS_FAIL_OPEN decides: admit without limits or 503.
"""
from __future__ import annotations

import datetime as dt
import logging
import math
import threading
import time
from collections import Counter
from collections.abc import Callable

from limits import RateLimitItem, RateLimitItemPerDay
from limits.storage import MemoryStorage
from limits.strategies import FixedWindowRateLimiter, MovingWindowRateLimiter
from redis.exceptions import RedisError

from ..errors import ProxyError, RateLimited
from ..values import mask_url
from .counting import Full, Rules, Store, Ticket
from .redisstore import RedisCounters

log = logging.getLogger(__name__)
DOWN_PAUSE = 1.0  # seconds Redis is left alone after a failure (requests are decided by LIMITS_FAIL_OPEN)
STORE_ERRORS = (RedisError, OSError)  # the store's own failures; anything else must surface


class StoreUnavailable(ProxyError):
    status = 503


class MemoryCounters:
    """This process's counters: the ``limits`` library's windows, and a count of running requests per caller.
    A lock makes test-then-hit of several windows all or nothing."""

    def __init__(self, moving: bool) -> None:
        self.storage = MemoryStorage()
        self.window = (MovingWindowRateLimiter if moving else FixedWindowRateLimiter)(self.storage)
        self.counter = FixedWindowRateLimiter(self.storage)
        self._running: Counter[str] = Counter()
        self._lock = threading.Lock()

    def _wait(self, limiter: FixedWindowRateLimiter | MovingWindowRateLimiter, item: RateLimitItem,
              *ids: str) -> float:
        return limiter.get_window_stats(item, *ids).reset_time - time.time()

    def admit(self, ticket: Ticket, day: str) -> Full | None:
        who, rules = ticket.who, ticket.rules
        with self._lock:
            for i, item in enumerate(rules.tokens):
                if not self.counter.test(item, who, "tokens"):
                    return Full("tokens", i, self._wait(self.counter, item, who, "tokens"))
            if rules.daily_tokens and not self.counter.test(RateLimitItemPerDay(rules.daily_tokens), who,
                                                            "daily-tokens", day):
                return Full("daily")
            for i, item in enumerate(rules.rate):
                if not self.window.test(item, who, "requests"):
                    return Full("rate", i, self._wait(self.window, item, who, "requests"))
            if rules.concurrency:
                if self._running[who] >= rules.concurrency:
                    return Full("concurrency")
                self._running[who] += 1
                ticket.slot = who
            for item in rules.rate:
                self.window.hit(item, who, "requests")
        return None

    def settle(self, ticket: Ticket, tokens: int, day: str) -> None:
        who, rules = ticket.who, ticket.rules
        with self._lock:
            if ticket.slot:
                self._running[who] -= 1
                if self._running[who] <= 0:
                    del self._running[who]
            if tokens:
                for item in rules.tokens:
                    self.counter.hit(item, who, "tokens", cost=tokens)
                if rules.daily_tokens:
                    self.counter.hit(RateLimitItemPerDay(rules.daily_tokens), who, "daily-tokens", day, cost=tokens)

    def running(self, who: str) -> int:
        return self._running.get(who, 0)


class Limiter:
    """Admission and settlement against one store, deciding by LIMITS_FAIL_OPEN when Redis fails."""

    def __init__(self, redis_url: str = "", strategy: str = "moving-window", fail_open: bool = True,
                 timeout: float = 1.0, clock: Callable[[], float] = time.time):
        self.clock = clock
        self.fail_open = fail_open
        self.redis_url = redis_url
        moving = strategy != "fixed-window"
        if redis_url:
            self.store: Store = RedisCounters(redis_url, timeout, moving, clock)
        else:
            self.store = MemoryCounters(moving)
        self._down_until = 0.0
        self._down_since: float | None = None

    def describe(self) -> str:
        return f"Redis at {mask_url(self.redis_url)}" if self.redis_url else "memory"

    def _day(self) -> tuple[str, float]:
        """Today's UTC date and the epoch second it ends."""
        today = dt.datetime.fromtimestamp(self.clock(), dt.UTC).date()
        return today.isoformat(), dt.datetime.combine(today + dt.timedelta(days=1), dt.time(), dt.UTC).timestamp()

    def admit(self, who: str, label: str, rules: Rules) -> Ticket:
        """Room for one more request of ``who``? A Ticket, or RateLimited / StoreUnavailable."""
        ticket = Ticket(who, rules)
        if not rules:
            ticket.settled = True
            return ticket
        if self.redis_url and self.clock() < self._down_until:
            return self._store_failed(ticket, None)
        day = self._day()[0] if rules.daily_tokens else ""
        try:
            full = self.store.admit(ticket, day)
        except STORE_ERRORS as exc:
            return self._store_failed(ticket, exc)
        if self._down_since is not None:
            log.warning("limits store %s answers again after %.1f s; limits enforced", self.describe(),
                        self.clock() - self._down_since)
            self._down_since = None
        if full is not None:
            raise self._refusal(full, label, rules)
        ticket.settled = not (ticket.slot or rules.tokens or rules.daily_tokens)  # nothing to give back
        return ticket

    def settle(self, ticket: Ticket, tokens: int) -> None:
        """The request ended: charge its tokens, free its slot. Safe to call twice (the second does nothing)."""
        if ticket.settled:
            return
        ticket.settled = True
        rules = ticket.rules
        charge = tokens if tokens > 0 and (rules.tokens or rules.daily_tokens) else 0
        if not charge and not ticket.slot:
            return
        try:
            self.store.settle(ticket, charge, self._day()[0] if rules.daily_tokens else "")
        except STORE_ERRORS as exc:
            log.warning("could not settle the limits of %s in %s (%s); a concurrency slot lapses after its lease",
                        ticket.who, self.describe(), exc)

    # --- refusals ----------------------------------------------------------------------------------
    def _refusal(self, full: Full, label: str, rules: Rules) -> RateLimited:
        if full.kind == "concurrency":
            return RateLimited(f"concurrency limit reached for {label}: {rules.concurrency} request(s) at once; "
                               "retry when one of them has finished", code="concurrency_exceeded", retry_after=1)
        if full.kind == "daily":
            end = self._day()[1]
            wait = max(1, math.ceil(end - self.clock()))
            stamp = dt.datetime.fromtimestamp(end, dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
            return RateLimited(f"daily token quota used up for {label}: {rules.daily_tokens} tokens per day (UTC); "
                               f"resets at {stamp} (in {_wait(wait)})", code="insufficient_quota", retry_after=wait)
        wait = max(1, math.ceil(full.wait))
        if full.kind == "tokens":
            item = rules.tokens[full.index]
            return RateLimited(f"token limit reached for {label}: {item.amount} tokens per {_per(item)}; "
                               f"resets in {_wait(wait)}", code="tokens_exceeded", retry_after=wait)
        item = rules.rate[full.index]
        return RateLimited(f"rate limit reached for {label}: {item.amount} requests per {_per(item)}; "
                           f"resets in {_wait(wait)}", code="rate_limit_exceeded", retry_after=wait)

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


def _per(item: RateLimitItem) -> str:
    unit = item.GRANULARITY.name
    return f"{item.multiples} {unit}s" if item.multiples != 1 else unit


def _wait(seconds: int) -> str:
    if seconds < 120:
        return f"{seconds} s"
    if seconds < 7200:
        return f"{seconds // 60} min {seconds % 60} s"
    return f"{seconds // 3600} h {seconds % 3600 // 60} min"
