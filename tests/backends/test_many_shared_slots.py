"""``max_concurrency`` shared through Redis (REDIS_URL with BACKENDS_FILE; proxy.sharedslots) against a real
server (TEST_REDIS_URL): two slot queues (as two processes would have) never hold more than the cap together, a
slot freed in one reaches a waiter in the other, a held lease is renewed, a killed holder's lease lapses, a
Redis that cannot be reached (or dies mid-run behind a proxy) leaves each process counting alone; and two
`python wsgi.py` processes in front of one fake backend with ``max_concurrency = 2`` never have more than 2
requests there at once, every request answered."""
from __future__ import annotations

import logging
import os
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
import requests

from proxy.backendsfile import BackendSpec, QueueBounds
from proxy.errors import Overloaded
from proxy.sharedslots import SharedSlots, slot_set
from proxy.slots import SlotQueue
from tests.support import REPO_ROOT, fakes
from tests.support.fakes import FakeUpstream
from tests.support.pool_proxy import CHAT, WsgiPoolProxy, backend


@pytest.fixture
def redis_url() -> str:
    url = os.environ.get("TEST_REDIS_URL")
    if not url:
        pytest.skip("TEST_REDIS_URL is not set (e.g. redis://127.0.0.1:6379/7); shared backend slots not tested")
    return url


class Member:
    """What the queue reads of a pool member; its URL makes its slot set this test's own."""

    def __init__(self, name: str, cap: int, max_wait_s: float = 5.0):
        self.name = name
        url = f"http://test-{os.urandom(6).hex()}"
        self.spec = BackendSpec(name, "openai", url, max_concurrency=cap, queue=QueueBounds(100, max_wait_s))
        self.in_flight = self.queued = 0
        self.hold_s: float | None = None


def twin(member: Member) -> Member:
    """The same backend as another process's pool has it: its own object, the same name and URL."""
    other = Member(member.name, member.spec.max_concurrency, member.spec.queue.max_wait_s)
    other.spec = member.spec
    return other


def queues(url: str, lease_s: float = 20.0) -> tuple[SlotQueue, SlotQueue]:
    return (SlotQueue(shared=SharedSlots(url, 1.0, lease_s), poll_s=0.25),
            SlotQueue(shared=SharedSlots(url, 1.0, lease_s), poll_s=0.25))


def test_two_queues_never_hold_more_than_the_cap_together(redis_url):
    one, two = queues(redis_url)
    here = Member("gpu", 2, max_wait_s=0.3)
    there = twin(here)
    assert one.acquire([here], "k") is here and two.acquire([there], "k") is there
    with pytest.raises(Overloaded, match="no slot came free"):
        one.acquire([here], "k")
    with pytest.raises(Overloaded):
        two.acquire([there], "k")
    assert here.in_flight == 1 and there.in_flight == 1 and here.queued == 0
    one.release(here)
    assert two.acquire([there], "k") is there
    two.release(there)
    two.release(there)
    one.shared.stop()
    two.shared.stop()


def test_a_slot_freed_in_one_process_goes_to_a_waiter_in_the_other(redis_url):
    one, two = queues(redis_url)
    one.poll_s = two.poll_s = 30.0  # no polling: only the announcement can wake the waiter in time
    here = Member("gpu", 1, max_wait_s=10)
    there = twin(here)
    one.acquire([here], "k")
    got: list[Any] = []
    started = time.monotonic()
    waiter = threading.Thread(target=lambda: got.append(two.acquire([there], "k")))
    waiter.start()
    fakes_wait(lambda: there.queued == 1)
    time.sleep(0.3)  # the listener subscribes (a slot freed before that is found by the next look)
    one.release(here)
    waiter.join(timeout=10)
    assert got == [there] and time.monotonic() - started < 5
    two.release(there)
    one.shared.stop()
    two.shared.stop()


def test_waiters_of_one_process_are_served_in_turn_across_keys(redis_url):
    one, two = queues(redis_url)
    here = Member("gpu", 1, max_wait_s=10)
    there = twin(here)
    two.acquire([there], "holder")  # the slot is held in the other process
    got: list[str] = []
    threads = []
    for count, key in enumerate(("a", "a", "a", "b"), 1):
        threads.append(threading.Thread(target=lambda k=key: (one.acquire([here], k), got.append(k))))
        threads[-1].start()
        fakes_wait(lambda n=count: here.queued == n)
    two.release(there)
    for count in range(1, 5):
        fakes_wait(lambda n=count: len(got) == n)  # one granted at a time: the cap is 1
        one.release(here)
    for thread in threads:
        thread.join(timeout=10)
    assert got[:2] == ["a", "b"]  # b, arriving last, is served second: keys in turn
    one.shared.stop()
    two.shared.stop()


def test_a_lease_held_longer_than_its_life_is_renewed(redis_url):
    one, two = queues(redis_url, lease_s=0.6)
    here = Member("gpu", 1, max_wait_s=0.05)
    there = twin(here)
    assert one.acquire([here], "k") is here  # taken at once, no wait: the renewals start with it
    time.sleep(1.5)  # two and a half lease lives: renewed every 0.2 s
    with pytest.raises(Overloaded):
        two.acquire([there], "k")
    one.release(here)
    assert two.acquire([there], "k") is there
    two.release(there)
    one.shared.stop()
    two.shared.stop()


HOLDER = """
import sys, time
from proxy.sharedslots import SharedSlots
shared = SharedSlots(sys.argv[1], 1.0, lease_s=1.0)
assert shared.take([sys.argv[2]], [1]) == 0
print("held", flush=True)
time.sleep(60)
"""


def test_a_killed_holders_lease_lapses(redis_url):
    impatient = Member("gpu", 1, max_wait_s=0.05)
    patient = twin(impatient)
    patient.spec = BackendSpec("gpu", "openai", impatient.spec.url, max_concurrency=1, queue=QueueBounds(10, 10))
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, redis_url, slot_set(impatient)], cwd=REPO_ROOT,
                              stdout=subprocess.PIPE, text=True)
    queue = SlotQueue(shared=SharedSlots(redis_url, 1.0), poll_s=0.1)
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
        with pytest.raises(Overloaded):  # the holder's slot is taken while it lives (its lease renewed or not)
            queue.acquire([impatient], "k")
        holder.kill()
        holder.wait(timeout=10)
        started = time.monotonic()
        assert queue.acquire([patient], "k") is patient  # within its 1 s lease and a look of the waiter
        assert time.monotonic() - started < 5
        queue.release(patient)
    finally:
        holder.kill()
        holder.wait(timeout=10)
        queue.shared.stop()


def test_redis_unreachable_counts_in_the_process_with_a_warning(caplog):
    queue = SlotQueue(shared=SharedSlots("redis://127.0.0.1:1/0", 0.2), poll_s=0.05)
    member = Member("gpu", 2, max_wait_s=0.2)
    with caplog.at_level(logging.WARNING, logger="proxy.slots"):
        assert queue.acquire([member], "k") is member and queue.acquire([member], "k") is member
        with pytest.raises(Overloaded):
            queue.acquire([member], "k")
    assert "Redis unreachable" in caplog.text and "counted in this process alone" in caplog.text
    queue.release(member)
    assert queue.acquire([member], "k") is member
    queue.shared.stop()


def fakes_wait(check: Any, timeout: float = 5.0) -> None:
    end = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < end, "condition not met in time"
        time.sleep(0.005)


class Counting:
    """A fake OpenAI backend that counts the requests it is answering at once."""

    def __init__(self) -> None:
        self.fake = FakeUpstream().start()
        self.fake.serve_openai_models("m")
        self.now = self.most = self.served = 0
        self._lock = threading.Lock()
        answer = fakes.openai_chat_responder(["ok"])

        def respond(request: Any) -> Any:
            with self._lock:
                self.now += 1
                self.most = max(self.most, self.now)
            time.sleep(0.15)
            with self._lock:
                self.now -= 1
                self.served += 1
            return answer(request)

        self.fake.default("POST", "/v1/chat/completions", respond)


def test_two_proxy_processes_share_one_backends_max_concurrency(redis_url, tmp_path):
    counting = Counting()
    name = f"gpu{os.urandom(4).hex()}"
    text = backend(name, counting.fake, "max_concurrency = 2\nqueue = { max_waiting = 100, max_wait_s = 30 }\n")
    proxies = []
    try:
        for i in range(2):
            path = tmp_path / f"p{i}"
            path.mkdir()
            proxies.append(WsgiPoolProxy(path, text, REDIS_URL=redis_url))

        def ask(i: int) -> int:
            r = requests.post(proxies[i % 2].url + "/v1/chat/completions", json=CHAT, timeout=60)
            return r.status_code

        with ThreadPoolExecutor(12) as pool:
            statuses = list(pool.map(ask, range(24)))
        logs = "\n".join(running.output()[-2000:] for running in proxies)
        assert statuses == [200] * 24, logs
        assert counting.served == 24 and counting.most <= 2, logs  # 4 if each process counted alone
    finally:
        for running in proxies:
            running.stop()
        counting.fake.stop()


def test_redis_going_away_mid_run_leaves_the_cap_per_process_and_every_request_answered(
        redis_url, tmp_path, caplog):
    import shutil

    from tests.policy.conftest import PrivateRedis
    from tests.support.pool_proxy import PoolProxy

    binary = shutil.which("redis-server")
    if binary is None:
        pytest.fail("TEST_REDIS_URL is set but the redis-server program is not installed")
    private = PrivateRedis(binary, tmp_path).start()
    counting = Counting()
    text = backend("gpu", counting.fake, "max_concurrency = 1\nqueue = { max_waiting = 100, max_wait_s = 30 }\n")
    running = PoolProxy.start(tmp_path, text, REDIS_URL=private.url, REDIS_TIMEOUT="0.5")

    def burst() -> list[int]:
        with ThreadPoolExecutor(4) as pool:
            return list(pool.map(lambda _: requests.post(running.url + "/v1/chat/completions", json=CHAT,
                                                         timeout=60).status_code, range(4)))
    try:
        with caplog.at_level(logging.WARNING, logger="proxy.slots"):
            assert burst() == [200] * 4 and counting.most == 1  # through Redis
            private.stop()
            assert burst() == [200] * 4 and counting.most == 1  # counted in the process, still one at a time
        assert "Redis unreachable" in caplog.text
    finally:
        running.stop()
        private.stop()
        counting.fake.stop()
