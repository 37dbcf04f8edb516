"""The slots and the fair queue (proxy.slots) without sockets: waiters in threads, a slot handed over in turn
across keys and first come first served within one, the first free slot among several members, the bounds,
a waiter killed while waiting, and the Retry-After estimate."""
from __future__ import annotations

import threading
import time

import pytest

from proxy import slots
from proxy.backendsfile import BackendSpec, QueueBounds
from proxy.errors import ClientGone, Overloaded
from proxy.slots import SlotQueue


class Member:
    """What the queue reads of a pool member."""

    def __init__(self, name: str, cap: int, max_waiting: int = 100, max_wait_s: float = 5.0):
        self.name = name
        self.spec = BackendSpec(name, "stub", "", max_concurrency=cap, queue=QueueBounds(max_waiting, max_wait_s))
        self.in_flight = self.queued = 0
        self.hold_s: float | None = None


def waiting_for(queue: SlotQueue, members: list, key: str, got: list, **kw) -> threading.Thread:
    """A thread that waits for a slot and appends (key, member name) or the error to ``got``."""
    def run() -> None:
        try:
            got.append((key, queue.acquire(members, key, **kw).name))
        except Exception as exc:  # noqa: BLE001 - the test reads it
            got.append(exc)

    thread = threading.Thread(target=run)
    thread.start()
    return thread


def settle(check, timeout: float = 5.0) -> None:
    end = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < end
        time.sleep(0.005)


def test_no_cap_never_waits_and_still_counts_in_flight():
    queue, free = SlotQueue(), Member("free", 0)
    taken = [queue.acquire([free], "k") for _ in range(50)]
    assert free.in_flight == 50 and all(m is free for m in taken)
    for member in taken:
        queue.release(member)
    assert free.in_flight == 0


def test_the_first_member_with_room_is_taken_in_plan_order():
    queue, a, b = SlotQueue(), Member("a", 1), Member("b", 2)
    assert [queue.acquire([a, b], "k").name for _ in range(3)] == ["a", "b", "b"]


def test_freed_slots_go_round_robin_across_keys_and_in_order_within_a_key():
    queue, gpu = SlotQueue(), Member("gpu", 1)
    holder = queue.acquire([gpu], "alice")
    got: list = []
    threads = []
    for key in ["alice"] * 4 + ["bob", "carol"]:
        count = len(threads)
        threads.append(waiting_for(queue, [gpu], key, got))
        settle(lambda count=count: gpu.queued == count + 1)  # each in line before the next
    order = []
    for _ in range(6):
        queue.release(holder)
        settle(lambda: len(got) == len(order) + 1)
        order.append(got[-1][0])
        holder = gpu
    assert order == ["alice", "bob", "carol", "alice", "alice", "alice"]
    assert gpu.queued == 0 and gpu.in_flight == 1  # the last one still holds it


def test_a_waiter_takes_the_first_slot_freed_on_any_of_its_members():
    queue, a, b = SlotQueue(), Member("a", 1), Member("b", 1)
    queue.acquire([a], "x")
    held_b = queue.acquire([b], "x")
    got: list = []
    thread = waiting_for(queue, [a, b], "k", got)
    settle(lambda: a.queued == b.queued == 1)
    queue.release(held_b)
    thread.join(timeout=5)
    assert got == [("k", "b")] and a.queued == b.queued == 0 and (a.in_flight, b.in_flight) == (1, 1)


def test_a_full_queue_is_refused_at_once_and_a_long_wait_after_max_wait_s():
    queue, gpu = SlotQueue(), Member("gpu", 1, max_waiting=1, max_wait_s=0.2)
    queue.acquire([gpu], "k")
    got: list = []
    waited: list[float] = []
    thread = waiting_for(queue, [gpu], "k", got, waited=waited.append)
    settle(lambda: gpu.queued == 1)
    with pytest.raises(Overloaded, match="max_waiting") as full:
        queue.acquire([gpu], "other")
    assert full.value.status == 503 and full.value.retry_after == 1
    thread.join(timeout=5)
    assert isinstance(got[0], Overloaded) and "max_wait_s" in got[0].message
    assert waited and waited[0] >= 0.2 and gpu.queued == 0 and gpu.in_flight == 1


def test_a_client_gone_leaves_the_queue_and_its_slot_goes_to_the_next():
    queue, gpu = SlotQueue(poll_s=0.01), Member("gpu", 1)
    holder = queue.acquire([gpu], "k")
    left = threading.Event()
    got: list = []
    leaving = waiting_for(queue, [gpu], "a", got, gone=left.is_set)
    settle(lambda: gpu.queued == 1)
    staying = waiting_for(queue, [gpu], "b", got)
    settle(lambda: gpu.queued == 2)
    left.set()
    leaving.join(timeout=5)
    assert isinstance(got[0], ClientGone) and got[0].outcome == "cancelled" and gpu.queued == 1
    queue.release(holder)
    staying.join(timeout=5)
    assert got[1] == ("b", "gpu") and gpu.in_flight == 1 and gpu.queued == 0


def test_a_waiter_killed_while_waiting_leaves_no_trace():
    queue, gpu = SlotQueue(poll_s=0.01), Member("gpu", 1)
    holder = queue.acquire([gpu], "k")

    class Stop(BaseException):
        pass

    def stop() -> bool:
        raise Stop

    got: list = []

    def run() -> None:
        try:
            queue.acquire([gpu], "k", gone=stop)
        except Stop:
            got.append("stopped")

    thread = threading.Thread(target=run)
    thread.start()
    thread.join(timeout=5)
    assert got == ["stopped"] and gpu.queued == 0 and queue.waiting() == 0
    queue.release(holder)
    assert gpu.in_flight == 0


def test_retry_after_estimates_a_round_of_the_queue_from_the_time_slots_are_held():
    gpu = Member("gpu", 2)
    assert slots.retry_after([gpu]) == 1  # nothing measured yet
    queue = SlotQueue()
    for held in (10.0, 10.0):
        queue.release(queue.acquire([gpu], "k"), held)
    gpu.queued = 4
    assert slots.retry_after([gpu]) == 30  # 10 s a slot, two rounds of two ahead, then one's own
    gpu.hold_s = 1000.0
    assert slots.retry_after([gpu]) == slots.RETRY_AFTER_MAX
