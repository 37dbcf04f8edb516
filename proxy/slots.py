"""Slots of backends with ``max_concurrency``, and the fair queue of the requests waiting for one.

An attempt takes a slot on the first of its candidate members with one free (a member without a cap always
has one). When all are full it waits, once for all of them: the first slot freed on any of them is its. A
freed slot is handed to a waiter directly, under the lock, so a request arriving later never takes a slot
someone is waiting for. Waiters are kept in a FIFO per fairness key (the API key's name, else the client's
address) and the keys are served in turn, so a client that sends a hundred requests waits behind its own,
not in front of everyone else's. The wait is bounded by each member's ``queue``: a request may wait while
one of its members has fewer than ``max_waiting`` waiting, for the longest of their ``max_wait_s``; beyond
either it is refused with ``Overloaded`` (503, Retry-After). The counts are this process's own.
"""
from __future__ import annotations

import math
import threading
import time
from collections import deque
from collections.abc import Callable, Hashable, Sequence
from typing import Any, Protocol, TypeVar, cast

from .errors import ClientGone, Overloaded

POLL_S = 0.25  # how often a waiting request looks whether its client is still connected
HOLD_WEIGHT = 0.2  # of the newest slot holding time in a member's average (for Retry-After)
RETRY_AFTER_MAX = 300


class Member(Protocol):
    """What the queue reads and counts of a pool member (``routing.Member``)."""

    name: str
    spec: Any  # its BackendSpec: max_concurrency and queue
    in_flight: int
    queued: int
    hold_s: float | None


M = TypeVar("M", bound=Member)


class Waiter:
    __slots__ = ("key", "members", "granted", "event", "since")

    def __init__(self, key: Hashable, members: tuple[Any, ...], since: float):
        self.since = since
        self.key = key
        self.members = members
        self.granted: Member | None = None
        self.event = threading.Event()


class SlotQueue:
    """The slots of one pool's members and the requests waiting for them."""

    def __init__(self, clock: Callable[[], float] = time.monotonic, poll_s: float = POLL_S):
        self._lock = threading.Lock()
        self._keys: dict[Hashable, deque[Waiter]] = {}  # in serving order: a key served goes to the end
        self.clock = clock
        self.poll_s = poll_s

    def acquire(self, members: Sequence[M], key: Hashable, gone: Callable[[], bool] | None = None,
                waited: Callable[[float], None] | None = None) -> M:
        """A member of ``members`` (the first free in their order) with a slot taken for the caller, waiting
        when all are full. ``gone()`` says the client left (ClientGone); ``waited(seconds)`` is told how
        long it waited, whatever the end. Overloaded when the queue is full or the wait ran out."""
        with self._lock:
            for member in members:
                cap = member.spec.max_concurrency
                if not cap or member.in_flight < cap:
                    member.in_flight += 1
                    return member
            if not any(m.queued < m.spec.queue.max_waiting for m in members):
                raise self._overloaded(members, "their queues are full (queue.max_waiting)")
            waiter = Waiter(key, tuple(members), self.clock())
            for member in members:
                member.queued += 1
            self._keys.setdefault(key, deque()).append(waiter)
        clock = self.clock
        started = clock()
        deadline = started + max(m.spec.queue.max_wait_s for m in members)
        left_because: str | None = None
        try:
            while not waiter.event.wait(max(0.0, min(self.poll_s, deadline - clock()))):
                if clock() >= deadline:
                    left_because = "expired"
                    break
                if gone is not None and gone():
                    left_because = "gone"
                    break
        except BaseException:  # a stopping server's ShuttingDown, or anything else: out of the queue first
            self._leave(waiter, release=True)
            raise
        finally:
            if waited is not None:
                waited(clock() - started)
        granted = self._leave(waiter, release=left_because == "gone")
        if left_because == "gone":
            raise ClientGone("the client closed the connection while the request waited for a free backend")
        if granted is None:
            raise self._overloaded(members, f"no slot came free within {deadline - started:g} s (queue.max_wait_s)")
        return cast(M, granted)  # one of ``members``

    def release(self, member: Member, held_s: float | None = None) -> None:
        """The slot taken on ``member`` is free: handed to the next waiter in turn, or counted free.
        ``held_s``: how long it was held (its average estimates Retry-After)."""
        with self._lock:
            if held_s is not None:
                hold = member.hold_s
                member.hold_s = held_s if hold is None else hold + HOLD_WEIGHT * (held_s - hold)
            if member.queued and self._hand_over(member):
                return
            member.in_flight -= 1

    # --- under the lock ---------------------------------------------------------------------
    def _hand_over(self, member: Member) -> bool:
        """Give ``member``'s slot to the first waiter for it of the first key in turn; that key goes last."""
        for key, waiting in self._keys.items():
            for waiter in waiting:
                if member in waiter.members:
                    break
            else:
                continue
            waiting.remove(waiter)
            del self._keys[key]
            if waiting:
                self._keys[key] = waiting
            self._dequeued(waiter)
            waiter.granted = member
            waiter.event.set()
            return True
        return False

    def _dequeued(self, waiter: Waiter) -> None:
        for member in waiter.members:
            member.queued -= 1

    def _leave(self, waiter: Waiter, release: bool) -> Member | None:
        """Out of the queue: the member granted meanwhile (its slot released again when ``release``)."""
        with self._lock:
            granted = waiter.granted
            if granted is None:
                waiting = self._keys.get(waiter.key)
                if waiting is not None and waiter in waiting:
                    waiting.remove(waiter)
                    if not waiting:
                        del self._keys[waiter.key]
                    self._dequeued(waiter)
                return None
        if release:
            self.release(granted)
            return None
        return granted

    def _overloaded(self, members: Sequence[Member], why: str) -> Overloaded:
        busy = ", ".join(f"{m.name} ({m.in_flight} of {m.spec.max_concurrency} in flight, {m.queued} waiting)"
                         for m in members)
        return Overloaded(f"every backend for this model is busy: {busy}; {why}", retry_after=retry_after(members))

    def longest_wait(self, member: Any) -> float:
        """How long the longest-waiting request for ``member`` has waited, in seconds (0: none waits)."""
        with self._lock:
            since = [w.since for waiting in self._keys.values() for w in waiting if member in w.members]
        return self.clock() - min(since) if since else 0.0

    def waiting(self) -> int:
        with self._lock:
            return sum(len(q) for q in self._keys.values())


def retry_after(members: Sequence[Member]) -> int:
    """Seconds until a slot is likely free: a member's average holding time per round of its waiting queue."""
    estimates = [m.hold_s * (1 + m.queued // max(1, m.spec.max_concurrency)) for m in members if m.hold_s]
    return max(1, min(RETRY_AFTER_MAX, math.ceil(min(estimates)))) if estimates else 1
