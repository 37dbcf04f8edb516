"""Counters behind the limits: request rate, tokens per window, daily token quota, concurrency.

Windows come from the ``limits`` library (MemoryStorage, or RedisStorage when REDIS_URL is set, so that
workers and hosts share them): requests use a moving (or fixed) window, tokens a fixed window charged
with the real usage of each finished request, the daily quota a fixed window per UTC date. Admission
asks only "is there room now?" — a running stream is never cut. With Redis, all admission checks travel
in one script (one round trip, all or nothing) that keeps the library's own key layout, so its
``get_window_stats`` reads them back for Retry-After. If the store is unreachable the request is admitted
(``LIMITS_FAIL_OPEN``, with a warning) or refused with 503 — never a 500. With Redis, a caller far from every
limit is admitted ahead of the verdict (``mirror.py``; not with ``LIMITS_EXACT`` or failing closed).
The types it hands out are in ``tickets.py``, its refusal messages in ``refusals.py``.
"""
from __future__ import annotations

import datetime as dt
import logging
import math
import threading
import time
from typing import Any, Callable

from limits import RateLimitItem, RateLimitItemPerDay, RateLimitItemPerMinute
from limits.storage import RedisStorage
from limits.strategies import FixedWindowRateLimiter, MovingWindowRateLimiter

from .background import defer
from .memstore import SweptMemoryStorage
from .mirror import Mirror
from .refusals import Refusals
from .rates import mask_url
from .redisio import SHA_ADMIT, SHA_INCR, Link, pack_args, pack_commands
from .slots import LEASE, MemorySlots, RedisSlots, new_slot_id
from .tickets import STORE_ERRORS, Admission, Rules, StoreUnavailable, Ticket

__all__ = ["Admission", "Limiter", "Rules", "StoreUnavailable", "Ticket"]

log = logging.getLogger(__name__)
KEY_PREFIX = "llm-proxy"
DOWN_PAUSE = 1.0  # seconds Redis is left alone after a failure (requests are decided by LIMITS_FAIL_OPEN)
STRATEGIES = ("moving-window", "fixed-window")


class Limiter(Refusals):
    """Admission (``admit``) and settlement (``settle``) against one store."""

    def __init__(self, redis_url: str = "", strategy: str = "moving-window", fail_open: bool = True,
                 timeout: float = 1.0, clock: Callable[[], float] = time.time, exact: bool = True):
        """``exact=False`` (LIMITS_EXACT=false, the gate's default) lets ``begin`` admit a request far from every
        limit ahead of Redis's verdict (proxy/policy/mirror.py) when ``fail_open``; ``admit`` always waits."""
        self.clock = clock
        self._lock = threading.Lock()
        self._settle_plans: dict[tuple, tuple[bytes, ...]] = {}
        self._memory_plans: dict[tuple, tuple] = {}
        self.fail_open = fail_open
        self.redis_url = redis_url
        if redis_url:
            self.storage: Any = RedisStorage(redis_url, key_prefix=KEY_PREFIX, wrap_exceptions=True,
                                             socket_timeout=timeout, socket_connect_timeout=timeout)
            self.redis = self.storage.get_connection()
            self.link = Link(self.redis)
            self.slots: Any = RedisSlots(self.redis, KEY_PREFIX, clock)
            # ahead of the verdict only where a request may be admitted without Redis anyway (LIMITS_FAIL_OPEN)
            self.mirror: Mirror | None = None if exact or not fail_open else Mirror(self.redis, KEY_PREFIX)
        else:
            self.storage = SweptMemoryStorage()
            self.redis = None
            self.slots = MemorySlots()
            self.mirror = None
        self.window = (FixedWindowRateLimiter if strategy == "fixed-window" else MovingWindowRateLimiter)(self.storage)
        self.moving = not isinstance(self.window, FixedWindowRateLimiter)
        # the two strategies keep different Redis types under their keys: a switch must not meet the other's data
        self.requests_id = "requests" if self.moving else "requests-fixed"
        self.counter = FixedWindowRateLimiter(self.storage)
        self._down_until = 0.0
        self._down_since: float | None = None
        self._today: tuple[str, float, float] | None = None
        self._admit_plans: dict[tuple, tuple[bytes, bytes]] = {}

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

    def _memory_plan(self, who: str, rules: Rules, day: str) -> tuple:
        """The storage keys of one caller and rule set, formatted once (the library formats them on every call
        otherwise, on every call): (token keys, daily key or "", request window keys)."""
        plan_key = (who, rules, day)
        plan = self._memory_plans.get(plan_key)
        if plan is None:
            tokens = tuple(item.key_for(who, "tokens") for item in rules.tokens)
            daily = self._day_item(rules.daily_tokens).key_for(who, "daily-tokens", day) if rules.daily_tokens else ""
            rate = tuple(item.key_for(who, self.requests_id) for item in rules.rate)
            plan = (tokens, daily, rate)
            if len(self._memory_plans) >= 4096:
                self._memory_plans.clear()
            self._memory_plans[plan_key] = plan
        return plan

    def _admit_memory(self, ticket: Ticket, label: str) -> None:
        """The library's storage calls its strategies make (``test`` then ``hit``), on keys formatted once."""
        who, rules = ticket.who, ticket.rules
        token_keys, daily_key, rate_keys = self._memory_plan(who, rules, self._day()[0] if rules.daily_tokens else "")
        store = self.storage
        for item, key in zip(rules.tokens, token_keys):
            if store.get(key) >= item.amount:
                raise self._tokens_denied(label, who, item)
        if daily_key and store.get(daily_key) >= rules.daily_tokens:
            raise self._daily_denied(label, rules.daily_tokens)
        moving = self.moving
        for item, key in zip(rules.rate, rate_keys):  # all or nothing, as in Redis: test every window first
            if moving:
                full = store.get_moving_window(key, item.amount, item.get_expiry())[1] >= item.amount
            else:
                full = store.get(key) >= item.amount
            if full:
                raise self._rate_denied(label, who, item)
        if rules.concurrency:
            ticket.slot = self.slots.acquire(who, rules.concurrency)
            if ticket.slot is None:
                raise self._concurrency_denied(label, rules.concurrency)
        for item, key in zip(rules.rate, rate_keys):
            if moving:
                store.acquire_entry(key, item.amount, item.get_expiry())
            else:
                store.incr(key, item.get_expiry())

    def _admit_plan(self, who: str, rules: Rules, day: str) -> tuple[bytes, bytes]:
        """The admission command for one caller and rule set, packed once in two parts: what comes before the
        force flag and the time, and what comes after them (the limits library's key formatting and the packing
        would otherwise run on every request); those two and, with a concurrency limit, the slot id are packed per
        request."""
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
        head = (len(rules.tokens), 1 if rules.daily_tokens else 0, len(rules.rate), 1 if self.moving else 0,
                1 if rules.concurrency else 0)
        count = 3 + len(keys) + len(head) + 2 + len(args) + (1 if rules.concurrency else 0)
        before = b"*%d\r\n" % count + pack_args(("EVALSHA", SHA_ADMIT, len(keys), *keys, *head))
        plan = (before, pack_args(args))
        if len(self._admit_plans) >= 4096:  # callers are keys and client addresses: bounded, but be safe
            self._admit_plans.clear()
        self._admit_plans[plan_key] = plan
        return plan

    def _admit_redis(self, ticket: Ticket, label: str) -> None:
        """Every check in one EVALSHA (ADMIT_LUA): one round trip, and nothing is counted unless all pass."""
        data, slot = self._admit_command(ticket)
        [reply] = self.link.roundtrip_packed(data, 1)
        self._verdict(ticket, label, slot, reply)

    def _admit_command(self, ticket: Ticket, ahead_at: float | None = None) -> tuple[bytes, str | None]:
        """The packed admission of ``ticket``; ``ahead_at``: it was admitted ahead of the verdict at that time
        (with that slot id, if any): count it whatever Redis finds."""
        who, rules = ticket.who, ticket.rules
        day = self._day()[0] if rules.daily_tokens else ""
        before_now, after_now = self._admit_plan(who, rules, day)
        if ahead_at is None:
            slot = new_slot_id() if rules.concurrency else None
            now = pack_args((0, self.clock()))
        else:
            slot, now = ticket.slot, pack_args((1, ahead_at))
        return before_now + now + after_now + (pack_args((slot,)) if slot else b""), slot

    def _verdict(self, ticket: Ticket, label: str, slot: str | None, reply: Any) -> None:
        who, rules = ticket.who, ticket.rules
        code, index = int(reply[0]), int(reply[1])
        if self.mirror is not None:
            self.mirror.record(who, rules, int(reply[2]), int(reply[3]))
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

    def begin(self, who: str, label: str, rules: Rules) -> "Admission":
        """``admit`` in two halves: with Redis the admission command is sent now and its verdict read by
        ``Admission.ticket()``, so that the round trip overlaps whatever the request does in between (parsing,
        translating; the gate reads the verdict before anything reaches the backend). A caller the mirror knows
        to be far from every limit is admitted at once, and its admission sent off the clock (``_confirm``).
        In memory, or with nothing to check, the verdict is known at once (a refusal raises here)."""
        ticket = Ticket(who, rules)
        if not rules or self.redis is None or self.clock() < self._down_until:
            return Admission(self, self.admit(who, label, rules) if rules else ticket)
        if self.mirror is not None and self.mirror.ahead(who, rules):
            # admitted: the admission is sent and its reply read in the background (even the send is off the clock);
            # Redis counts it whatever it finds there
            ticket.ahead = True
            if rules.concurrency:
                ticket.slot = new_slot_id()
                self.slots.held(who, ticket.slot)
            now = self.clock()
            defer(lambda: self._confirm(ticket, label, now))
            return Admission(self, ticket)
        try:
            data, slot = self._admit_command(ticket)
            call = self.link.start(data, 1)
        except STORE_ERRORS as exc:
            return Admission(self, self._store_failed(ticket, exc))
        return Admission(self, ticket, label, slot, call)

    def _confirm(self, ticket: Ticket, label: str, at: float) -> None:
        """Send the admission of a request admitted ahead at ``at`` and read its reply, which refreshes the
        mirror. A settlement asked for already travels in the same write, behind the admission (one round trip
        for a short request; Redis runs one connection's commands in order, so a slot is released only once it
        is held); one asked for later runs when the reply is in."""
        who = ticket.who
        with self._lock:
            tokens = ticket.settle_after
            ticket.ahead = tokens is None
        parts: list[bytes] = []
        if tokens is not None:
            charge = tokens > 0 and bool(ticket.rules.tokens or ticket.rules.daily_tokens)
            parts = self._settle_parts(ticket, tokens if charge else 0)
        try:
            replies = self.link.roundtrip_packed(self._admit_command(ticket, at)[0] + b"".join(parts), 1 + len(parts))
        except STORE_ERRORS as exc:
            self._down_until = self.clock() + DOWN_PAUSE
            self.mirror.invalidate()
            log.warning("limits store %s failed after a request of %s was admitted ahead of its verdict (%s)",
                        self.describe(), label, exc)
        else:
            reply = replies[0]
            self.mirror.record(who, ticket.rules, int(reply[2]), int(reply[3]), answered_ahead=True)
            if int(reply[0]):
                log.info("%s was admitted ahead of Redis, which found its limits reached (other processes took "
                         "the room); it is counted, and the next request waits for Redis", label)
        finally:
            self.mirror.settled_ahead(who)
        if tokens is None:
            with self._lock:
                ticket.ahead = False
                tokens = ticket.settle_after
            if tokens is not None:
                ticket.settled = False
                self.settle(ticket, tokens)

    # --- settlement -----------------------------------------------------------------------------------
    def settle(self, ticket: Ticket, tokens: int) -> None:
        """The request ended: charge its tokens, free its slot. Safe to call twice (the second does nothing)."""
        if ticket.settled:
            return
        if ticket.ahead:
            with self._lock:
                if ticket.ahead:  # its admission is still on its way to Redis: settle after it
                    ticket.settle_after = tokens
                    ticket.settled = True
                    return
        ticket.settled = True
        rules, who = ticket.rules, ticket.who
        charge = tokens > 0 and bool(rules.tokens or rules.daily_tokens)
        if not charge and not ticket.slot:
            return
        try:
            if self.redis is not None:
                parts = self._settle_parts(ticket, tokens if charge else 0)
                self.link.roundtrip_packed(b"".join(parts), len(parts))
            else:
                if ticket.slot:
                    self.slots.release(ticket.slot)
                if charge:
                    token_keys, daily_key, _ = self._memory_plan(who, rules,
                                                                 self._day()[0] if rules.daily_tokens else "")
                    for item, key in zip(rules.tokens, token_keys):
                        self.storage.incr(key, item.get_expiry(), amount=tokens)
                    if daily_key:
                        self.storage.incr(daily_key, self._day_item(rules.daily_tokens).get_expiry(), amount=tokens)
        except STORE_ERRORS as exc:
            log.warning("could not settle the limits of %s in %s (%s); a concurrency slot lapses after its lease",
                        who, self.describe(), exc)

    def _settle_parts(self, ticket: Ticket, tokens: int) -> list[bytes]:
        """The packed commands that settle ``ticket``: release its slot, charge ``tokens`` (and say so on the
        mirror's channel)."""
        who = ticket.who
        parts: list[bytes] = []
        if ticket.slot:
            parts.append(pack_commands([self.slots.release_command(who, ticket.slot)]))
        if tokens:
            rules = ticket.rules
            day = self._day()[0] if rules.daily_tokens else ""
            amount = pack_args((tokens,))
            parts += [head + amount for head in self._settle_plan(who, rules, day)]
            mirror = self.mirror
            if mirror is not None:  # this process's view knows of the charge now, other processes' hear of it
                mirror.charged(who, tokens)
                if mirror.peers:
                    parts.append(pack_commands([("PUBLISH", mirror.channel, mirror.charge_message(who, tokens))]))
        return parts

    def _settle_plan(self, who: str, rules: Rules, day: str) -> tuple[bytes, ...]:
        """The token-charging commands of one caller and rule set, packed but for the amount."""
        plan_key = (who, rules, day)
        plan = self._settle_plans.get(plan_key)
        if plan is None:
            store = self.storage
            heads = [(store.prefixed_key(item.key_for(who, "tokens")), item.get_expiry()) for item in rules.tokens]
            if rules.daily_tokens:
                key = store.prefixed_key(self._day_item(rules.daily_tokens).key_for(who, "daily-tokens", day))
                heads.append((key, 2 * 86400))
            plan = tuple(b"*6\r\n" + pack_args(("EVALSHA", SHA_INCR, 1, key, expiry)) for key, expiry in heads)
            if len(self._settle_plans) >= 4096:
                self._settle_plans.clear()
            self._settle_plans[plan_key] = plan
        return plan

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
