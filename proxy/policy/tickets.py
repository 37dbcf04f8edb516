"""What the limiter hands out: the rules one caller is held to, the ticket of an admitted request, an admission
whose verdict may still be on its way from Redis, and the refusal when the store is unreachable and the proxy
fails closed."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from limits import RateLimitItem
from limits.errors import StorageError
from redis.exceptions import RedisError

from ..errors import ProxyError

if TYPE_CHECKING:
    from .limits import Limiter

STORE_ERRORS = (StorageError, RedisError, OSError)  # the store's own failures; anything else must surface


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
    ahead: bool = False           # admitted ahead of Redis's verdict, whose reply is still to be read
    settle_after: int | None = None  # settle asked for before that reply came: the tokens to charge then


class Admission:
    """An admission whose verdict may still be on its way from Redis (``Limiter.begin``)."""

    __slots__ = ("limiter", "_ticket", "label", "slot", "call", "_refusal")

    def __init__(self, limiter: "Limiter", ticket: Ticket, label: str = "", slot: str | None = None,
                 call: Any = None):
        self.limiter = limiter
        self._ticket = ticket
        self.label = label
        self.slot = slot
        self.call = call
        self._refusal: ProxyError | None = None

    @property
    def pending(self) -> bool:
        return self.call is not None

    def ticket(self) -> Ticket:
        """The admitted request's Ticket, or RateLimited / StoreUnavailable; asking again gives the same."""
        if self.call is not None:
            call, self.call = self.call, None
            limiter, ticket = self.limiter, self._ticket
            try:
                [reply] = limiter.link.finish(call)
                limiter._verdict(ticket, self.label, self.slot, reply)
                limiter._store_ok()
            except ProxyError as exc:
                self._refusal = exc
            except STORE_ERRORS as exc:
                try:
                    limiter._store_failed(ticket, exc)
                except ProxyError as refusal:
                    self._refusal = refusal
        if self._refusal is not None:
            raise self._refusal
        return self._ticket

    def abandon(self) -> None:
        """Nobody will ask for the verdict (the request failed first): read it anyway, so that a slot it took
        is given back and its connection reused."""
        if self.call is not None:
            try:
                ticket = self.ticket()
            except ProxyError:
                return
            self.limiter.settle(ticket, 0)


class StoreUnavailable(ProxyError):
    status = 503
