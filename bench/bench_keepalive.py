"""What early bytes (``proxy.keepalive.Beating``) cost a stream whose backend answers before the first beat, under
gevent as served: the same 20 chunks iterated plainly and through a Beating (a worker greenlet, an event, the
hand-over, ``yield from``, close), per stream and per chunk; and the memory a Beating keeps while its answer
streams (tracemalloc, after the hand-over), per open stream.

    python bench/bench_keepalive.py
"""
from __future__ import annotations

from gevent import monkey

monkey.patch_all()

import gc  # noqa: E402
import statistics  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
import tracemalloc  # noqa: E402
from pathlib import Path  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from proxy.keepalive import Beating  # noqa: E402

CHUNKS = [b"data: {\"choices\":[{\"delta\":{\"content\":\"word\"}}]}\n\n"] * 20
STREAMS = 5000
OPEN = 2000
ROUNDS = 5


class Body:
    """A stand-in for a Relay: iterable, counts what it sent, closable."""

    def __init__(self) -> None:
        self.sent = 0

    def __iter__(self):
        for chunk in CHUNKS:
            self.sent += len(chunk)
            yield chunk

    def close(self) -> None:
        pass


def never(*_):  # the failure and abandon callbacks: not called on this path
    raise AssertionError("not on the fast path")


def plain() -> None:
    for _ in range(STREAMS):
        body = Body()
        for _chunk in body:
            pass
        body.close()


def beating() -> None:
    for _ in range(STREAMS):
        b = Beating(Body, every_s=10, failed=never, abandoned=never)
        for _chunk in b:
            pass
        b.close()


def per_stream_us(run) -> float:
    times = []
    for _ in range(ROUNDS):
        started = time.perf_counter()
        run()
        times.append((time.perf_counter() - started) / STREAMS * 1e6)
    return statistics.median(times)


def kept_bytes() -> float:
    """Bytes held per open Beating once its answer has been handed over (its first chunk taken)."""
    gc.collect()
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    held = []
    for _ in range(OPEN):
        b = Beating(Body, every_s=10, failed=never, abandoned=never)
        it = iter(b)
        next(it)
        held.append((b, it))
    gc.collect()
    after = tracemalloc.get_traced_memory()[0]
    tracemalloc.stop()
    per = (after - before) / OPEN
    for _b, it in held:
        it.close()
    return per


def main() -> None:
    base, early = per_stream_us(plain), per_stream_us(beating)
    print(f"stream of {len(CHUNKS)} chunks, plain:      {base:7.1f} us")
    print(f"stream of {len(CHUNKS)} chunks, Beating:    {early:7.1f} us  (+{early - base:.1f} us per stream)")
    print(f"kept per open stream after the hand-over: {kept_bytes() / 1024:.2f} KiB (Body stand-in included)")


if __name__ == "__main__":
    main()
