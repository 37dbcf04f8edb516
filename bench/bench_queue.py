"""What the concurrency cap and its fair queue (``proxy.slots``) cost a request, under gevent as served.

- free: taking and giving back a slot on a backend with room (the path of every request below the cap);
- queued: CLIENTS greenlets (KEYS keys) each sending ROUNDS requests to one backend with
  ``max_concurrency = CAP``, each holding its slot across one switch to the hub; the same greenlets without
  the queue are the baseline, and the difference per request is the queue's own work (waiting in line,
  the hand-over, the wake-up). No request may fail: ``max_wait_s`` is ample.

- with a Redis URL as argument, the same with the slots shared through Redis (``sharedslots``).

    python bench/bench_queue.py [redis://127.0.0.1:6379/9]
"""
from __future__ import annotations

from gevent import monkey

monkey.patch_all()

import os  # noqa: E402
import statistics  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
import tomllib  # noqa: E402
from pathlib import Path  # noqa: E402

import gevent  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from proxy import backendsfile  # noqa: E402
from proxy.backends import make_backend  # noqa: E402
from proxy.config import Settings  # noqa: E402
from proxy.routing import build_pool  # noqa: E402

CLIENTS = 200
KEYS = 10
CAP = 4
ROUNDS = 20
FREE_SAMPLES = 200000
REPEATS = 5


def pool_with(cap: int, redis_url: str = ""):
    text = (f'[backends.gpu{os.getpid()}]\ntype = "stub"\nmax_concurrency = {cap}\n'
            f'queue = {{ max_waiting = {CLIENTS}, max_wait_s = 600 }}\n')
    settings = Settings.from_env({"REDIS_URL": redis_url})
    return build_pool(backendsfile.parse(tomllib.loads(text), "bench", {}), settings, make_backend)


def free_path(redis_url: str = "", samples: int = FREE_SAMPLES) -> float:
    pool = pool_with(CAP, redis_url)
    slots, members = pool.slots, list(pool.members)
    started = time.perf_counter()
    for _ in range(samples):
        member = slots.acquire(members, "k")
        slots.release(member, 0.001)
    return (time.perf_counter() - started) / samples


def crowd(queued: bool, redis_url: str = "") -> tuple[float, int]:
    pool = pool_with(CAP, redis_url)
    slots, members = pool.slots, list(pool.members)
    failures = 0

    def client(key: str) -> None:
        nonlocal failures
        for _ in range(ROUNDS):
            if not queued:
                gevent.sleep(0)
                continue
            try:
                member = slots.acquire(members, key)
            except Exception:  # noqa: BLE001 - counted: there must be none
                failures += 1
                continue
            gevent.sleep(0)
            slots.release(member, 0.001)

    started = time.perf_counter()
    gevent.joinall([gevent.spawn(client, f"key{i % KEYS}") for i in range(CLIENTS)])
    return (time.perf_counter() - started) / (CLIENTS * ROUNDS), failures


def main() -> None:
    free = statistics.median(free_path() for _ in range(REPEATS))
    print(f"slot taken and given back, room free: {free * 1e3:.4f} ms per request")
    base = statistics.median(crowd(False)[0] for _ in range(REPEATS))
    runs = [crowd(True) for _ in range(REPEATS)]
    with_queue = statistics.median(r[0] for r in runs)
    failures = sum(r[1] for r in runs)
    print(f"{CLIENTS} clients ({KEYS} keys), max_concurrency = {CAP}, {ROUNDS} requests each: "
          f"{with_queue * 1e3:.4f} ms per request with the queue, {base * 1e3:.4f} ms without; "
          f"the queue's own: {(with_queue - base) * 1e3:.4f} ms per request; {failures} failed")
    redis_url = sys.argv[1] if len(sys.argv) > 1 else ""
    if redis_url:  # the slots shared through Redis (sharedslots): a round trip to take, one to give back
        free = statistics.median(free_path(redis_url, 5000) for _ in range(REPEATS))
        print(f"with Redis: slot taken and given back, room free: {free * 1e3:.4f} ms per request")
        runs = [crowd(True, redis_url) for _ in range(REPEATS)]
        print(f"with Redis: {CLIENTS} clients, max_concurrency = {CAP}: "
              f"{statistics.median(r[0] for r in runs) * 1e3:.4f} ms per request; "
              f"{sum(r[1] for r in runs)} failed")


if __name__ == "__main__":
    main()
