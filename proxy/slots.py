"""Slots of backends with ``max_concurrency``, and the fair queue of the requests waiting for one.

An attempt takes a slot on the first of its candidate members with one free (a member without a cap always
has one). When all are full it waits, once for all of them: the first slot freed on any of them is its. A
freed slot is handed to a waiter directly, under the lock, so a request arriving later never takes a slot
someone is waiting for. Waiters are kept in a FIFO per fairness key (the API key's name, else the client's
address) and the keys are served in turn, so a client that sends a hundred requests waits behind its own,
not in front of everyone else's. The wait is bounded by each member's ``queue``: a request may wait while
one of its members has fewer than ``max_waiting`` waiting, for the longest of their ``max_wait_s``; beyond
either it is refused with ``Overloaded`` (503, Retry-After).

Without ``shared`` the counts are this process's own. With it (``sharedslots``: REDIS_URL) a capped member's
slot is also a lease in Redis, so the cap holds across processes: a slot freed is given back to Redis (never
handed over in the process, so waiters elsewhere have their chance), and ``_pump`` gives the slots Redis has
free to this process's waiters in their fair order, when a slot is announced freed and at most every
``poll_s`` while any waits. When Redis fails, the counts are this process's again until it answers.
"""
from __future__ import annotations

import logging
import math
import threading
import time
from collections import deque
from collections.abc import Callable, Hashable, Sequence
from typing import Any, Protocol, TypeVar, cast

from .errors import ClientGone, Overloaded
from .sharedslots import slot_set

log = logging.getLogger(__name__)

POLL_S = 0.25  # how often a waiting request looks whether its client is still connected
HOLD_WEIGHT = 0.2  # of the newest slot holding time in a member's average (for Retry-After)
RETRY_AFTER_MAX = 300
SHARED_PAUSE_S = 1.0  # after a Redis failure, slots are counted in this process for this long


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

    def __init__(self, clock: Callable[[], float] = time.monotonic, poll_s: float = POLL_S, shared: Any = None):
        self._lock = threading.Lock()
        self._keys: dict[Hashable, deque[Waiter]] = {}  # in serving order: a key served goes to the end
        self.clock = clock
        self.poll_s = poll_s
        self.shared = shared  # sharedslots.SharedSlots, or None: this process counts alone
        self._pumping = threading.Lock()
        self._pumped = 0.0
        self._again = False
        self._shared_down_until = 0.0
        self._shared_down_since: float | None = None

    def acquire(self, members: Sequence[M], key: Hashable, gone: Callable[[], bool] | None = None,
                waited: Callable[[float], None] | None = None) -> M:
        """A member of ``members`` (the first free in their order) with a slot taken for the caller, waiting
        when all are full. ``gone()`` says the client left (ClientGone); ``waited(seconds)`` is told how
        long it waited, whatever the end. Overloaded when the queue is full or the wait ran out."""
        shared = self._sharing()
        with self._lock:
            capped: list[M] = []
            for member in members:
                cap = member.spec.max_concurrency
                if not cap:
                    if not capped or not shared:
                        member.in_flight += 1
                        return member
                    break  # Redis is asked for the capped members before it
                if shared:
                    capped.append(member)
                elif member.in_flight < cap:
                    member.in_flight += 1
                    return member
            queue_first = shared and self._waited_for(members)  # a newcomer does not pass this process's waiters
            if queue_first and len(capped) < len(members):  # an uncapped member has room whatever waits
                members[len(capped)].in_flight += 1
                return members[len(capped)]
        if capped and not queue_first:
            taken = self._take(capped)
            if taken is not None:
                return taken
            if len(capped) < len(members):  # an uncapped member after the full capped ones
                with self._lock:
                    uncapped = members[len(capped)]
                    uncapped.in_flight += 1
                    return uncapped
        with self._lock:
            if not any(m.queued < m.spec.queue.max_waiting for m in members):
                raise self._overloaded(members, "their queues are full (queue.max_waiting)")
            waiter = Waiter(key, tuple(members), self.clock())
            for member in members:
                member.queued += 1
            self._keys.setdefault(key, deque()).append(waiter)
        return cast(M, self._wait(waiter, members, gone, waited))

    def _wait(self, waiter: Waiter, members: Sequence[Member], gone: Callable[[], bool] | None,
              waited: Callable[[float], None] | None) -> Member:
        clock = self.clock
        started = clock()
        deadline = started + max(m.spec.queue.max_wait_s for m in members)
        left_because: str | None = None
        try:
            if self.shared is not None:
                self.shared.listen(self._freed)
                self._pump()  # a slot freed between the look above and joining the queue
            while not waiter.event.wait(max(0.0, min(self.poll_s, deadline - clock()))):
                if clock() >= deadline:
                    left_because = "expired"
                    break
                if gone is not None and gone():
                    left_because = "gone"
                    break
                if self.shared is not None and clock() - self._pumped >= self.poll_s:
                    self._pump()  # slots lapsed or announcements lost: looked at every poll_s at most
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
        return granted

    def release(self, member: Member, held_s: float | None = None) -> None:
        """The slot taken on ``member`` is free: handed to the next waiter in turn, or counted free (with Redis:
        given back there, where every process's waiters may take it). ``held_s``: how long it was held (its
        average estimates Retry-After)."""
        with self._lock:
            if held_s is not None:
                hold = member.hold_s
                member.hold_s = held_s if hold is None else hold + HOLD_WEIGHT * (held_s - hold)
            shared = self.shared is not None and member.spec.max_concurrency
            if not shared and member.queued and self._hand_over(member):
                return
            member.in_flight -= 1
        if shared:
            self._give(member)

    # --- with Redis (``shared``) ---------------------------------------------------------------
    def _sharing(self) -> bool:
        return self.shared is not None and self.clock() >= self._shared_down_until

    def _take(self, capped: Sequence[M]) -> M | None:
        """The first of ``capped`` with a slot free in Redis, taken (in this process's count too); None when all
        are full. Redis failing: counted in this process."""
        try:
            index = self.shared.take([slot_set(m) for m in capped], [m.spec.max_concurrency for m in capped])
        except Exception as exc:  # noqa: BLE001 - redis-py's and the socket's errors alike: count here
            self._shared_failed(exc)
            index = next((i for i, m in enumerate(capped) if m.in_flight < m.spec.max_concurrency), None)
        else:
            self._shared_answers()
        if index is None:
            return None
        with self._lock:
            capped[index].in_flight += 1
        return capped[index]

    def _give(self, member: Member) -> None:
        if not self._sharing():  # Redis away: its lease (if any) lapses, the slot is free here
            self.shared.forget(slot_set(member))
            self._pump()
            return
        try:
            gave = self.shared.give(slot_set(member))
        except Exception as exc:  # noqa: BLE001 - the lease lapses after lease_s
            self._shared_failed(exc)
            gave = False
        if not gave or not self._sharing():  # a slot counted here only: a waiter here may have it
            self._pump()

    def _freed(self, key: str) -> None:
        """The listener heard a slot freed in ``key``: waiters for it here try for it."""
        with self._lock:
            wanted = any(slot_set(m) == key for waiting in self._keys.values() for w in waiting for m in w.members)
        if wanted:
            self._pump()

    def _pump(self) -> None:
        """Give the free slots to this process's waiters in their fair order (keys in turn, FIFO within one):
        the first waiter in turn whose members are not known full takes the first of them with room. One pump
        at a time: one asked for while another runs makes that one go round again."""
        self._again = True
        while self._again and self._pumping.acquire(blocking=False):  # else the running pump goes round again
            try:
                self._pump_round()
            finally:
                self._pumping.release()

    def _pump_round(self) -> None:
        self._pumped = self.clock()
        full: set[int] = set()
        while True:
            with self._lock:
                if self._again:
                    self._again = False
                    full.clear()
                waiter = self._next_waiter(full)
            if waiter is None:
                return
            candidates = [m for m in waiter.members if id(m) not in full]
            if self._sharing():
                taken = self._take(candidates)
            else:
                with self._lock:
                    taken = next((m for m in candidates if m.in_flight < m.spec.max_concurrency), None)
                    if taken is not None:
                        taken.in_flight += 1
            if taken is None:
                full.update(id(m) for m in candidates)
                continue
            with self._lock:
                if waiter.granted is None and self._dequeue(waiter):
                    waiter.granted = taken
                    waiter.event.set()
                    continue
            self.release(taken)  # it left meanwhile

    def _shared_failed(self, exc: Exception) -> None:
        now = self.clock()
        self._shared_down_until = now + SHARED_PAUSE_S
        if self._shared_down_since is None:
            self._shared_down_since = now
            log.warning("backend slots: Redis unreachable (%s); max_concurrency is counted in this process alone "
                        "until it answers again", exc)

    def _shared_answers(self) -> None:
        if self._shared_down_since is not None:
            log.warning("backend slots: Redis answers again after %.1f s; max_concurrency is shared again",
                        self.clock() - self._shared_down_since)
            self._shared_down_since = None

    # --- under the lock ---------------------------------------------------------------------
    def _hand_over(self, member: Member) -> bool:
        """Give ``member``'s slot to the first waiter for it of the first key in turn; that key goes last."""
        for waiting in self._keys.values():
            for waiter in waiting:
                if member in waiter.members:
                    self._dequeue(waiter)
                    waiter.granted = member
                    waiter.event.set()
                    return True
        return False

    def _dequeue(self, waiter: Waiter) -> bool:
        """``waiter`` out of its key's FIFO, the key to the end of the turn; False if it was not waiting."""
        waiting = self._keys.get(waiter.key)
        if waiting is None or waiter not in waiting:
            return False
        waiting.remove(waiter)
        del self._keys[waiter.key]
        if waiting:
            self._keys[waiter.key] = waiting
        self._dequeued(waiter)
        return True

    def _next_waiter(self, full: set[int]) -> Waiter | None:
        """The first waiter in turn (keys in turn, FIFO within one) with a member not in ``full``."""
        for waiting in self._keys.values():
            for waiter in waiting:
                if any(id(m) not in full for m in waiter.members):
                    return waiter
        return None

    def _waited_for(self, members: Sequence[Member]) -> bool:
        return any(m.queued for m in members)

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
