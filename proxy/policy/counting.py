"""What the limiter and its counter stores (memory in ``limits``, Redis in ``redisstore``) share."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from limits import RateLimitItem


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
    """An admitted request: what to charge and release when it ends. ``settled``: nothing (more) to do."""

    who: str
    rules: Rules
    slot: str | None = None
    settled: bool = False


@dataclass(frozen=True)
class Full:
    """A store's refusal: which limit (its kind and place among the caller's windows), and when it has room."""

    kind: str  # "tokens", "daily", "rate" or "concurrency"
    index: int = 0
    wait: float = 1.0


class Store(Protocol):
    def admit(self, ticket: Ticket, day: str) -> Full | None: ...
    def settle(self, ticket: Ticket, tokens: int, day: str) -> None: ...
    def running(self, who: str) -> int: ...
