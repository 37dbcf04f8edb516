"""Refusals of the limiter: each message names the limit, the caller, and when the limit resets; Retry-After
comes with it. Windows are read back with the ``limits`` library's own ``get_window_stats``."""
from __future__ import annotations

import datetime as dt
import math
import time
from typing import Any

from limits import RateLimitItem

from ..errors import RateLimited


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
    return dt.datetime.fromtimestamp(epoch, dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class Refusals:
    """Mixed into ``Limiter``, which provides ``window``, ``counter``, ``requests_id``, ``clock`` and ``_day``."""

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
