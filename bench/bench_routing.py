"""What choosing a backend costs with BACKENDS_FILE: ``Pool.plan`` (rules, aliases, which members serve the
model, the strategy's order) among 10 stub backends, per strategy, with the models named by globs in the
file or read from each backend's own (cached) list, and with affinity (a session per call); what the key of a
conversation by its first messages costs; what the look
for a gone client before a retry costs (``client_gone`` on a socket pair); and what the per-backend series
add to a /metrics scrape. In-process: the routing only.

    python bench/bench_routing.py
"""
from __future__ import annotations

import socket
import statistics
import sys
import time
import tomllib
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from proxy import backendsfile  # noqa: E402
from proxy.backends import make_backend  # noqa: E402
from proxy.clientgone import client_gone  # noqa: E402
from proxy.config import Settings  # noqa: E402
from proxy.metrics import Metrics  # noqa: E402
from proxy.routing import build_pool  # noqa: E402

BACKENDS = 10
SAMPLES = 20000


def timed(fn, *args) -> list[float]:
    for _ in range(1000):
        fn(*args)
    samples = []
    for _ in range(SAMPLES):
        started = time.perf_counter()
        fn(*args)
        samples.append(time.perf_counter() - started)
    samples.sort()
    return samples


def show(label: str, samples: list[float]) -> None:
    print(f"{label}: p50 {statistics.median(samples) * 1e3:.4f} ms, p99 {samples[int(SAMPLES * 0.99)] * 1e3:.4f} ms")


def main() -> None:
    for strategy in backendsfile.STRATEGIES:
        for named in (True, False):
            text = "".join(f'[backends.b{i}]\ntype = "stub"\n' + ('models = ["stub", "qwen3-*"]\n' if named else "")
                           for i in range(BACKENDS))
            text += f'[routing]\nstrategy = "{strategy}"\naffinity = true\n'
            pool = build_pool(backendsfile.parse(tomllib.loads(text), "bench", {}), Settings.from_env({}),
                              make_backend)
            where = "the file" if named else "lists   "
            show(f"{strategy:12} models from {where}", timed(pool.plan, "stub"))
            show(f"{strategy:12} models from {where}, a session", timed(pool.plan, "stub", "session-42"))
    first_messages_key()
    ours, theirs = socket.socketpair()
    show("client_gone, client there", timed(client_gone, {"werkzeug.socket": ours}))
    theirs.close()
    show("client_gone, client gone ", timed(client_gone, {"werkzeug.socket": ours}))
    ours.close()
    scrape(pool)


def first_messages_key() -> None:
    """What affinity by first messages costs a request: ``session_of`` on a conversation of 20 turns, with a
    system prompt of 2 KB and of 100 KB (a coding agent's)."""
    from proxy.affinity import session_of

    for size in (2000, 100000):
        turns = [{"role": "user" if i % 2 == 0 else "assistant", "content": f"turn {i} " * 50} for i in range(20)]
        body = {"model": "m", "messages": [{"role": "system", "content": "x" * size}, *turns]}
        show(f"first-messages key, system prompt {size // 1000} KB", timed(session_of, body, {}))


def scrape(pool) -> None:
    """/metrics rendered (no request counted yet) without and with the pool's per-backend series."""
    for label, source in (("without the pool", None), (f"with {BACKENDS} backends", lambda: pool)):
        metrics = Metrics(pool=source)
        samples = []
        for _ in range(2000):
            started = time.perf_counter()
            metrics.render()
            samples.append(time.perf_counter() - started)
        print(f"/metrics render {label}: p50 {statistics.median(samples) * 1e3:.4f} ms")


if __name__ == "__main__":
    main()
