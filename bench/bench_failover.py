"""What failing over costs a request (BACKENDS_FILE), through `python wsgi.py` and the bench's mock upstream:

- refused: the first backend tried refuses connections (a port nobody listens on), the second is the mock;
  c=1 latency p50/p99 against the same proxy setup with the mock alone, taken alternately ROUNDS times;
- blackholed: the first backend accepts connections and never answers (a listening socket nobody reads);
  how long a request takes with ``first_byte_s`` = FIRST_BYTE_S before the mock answers it.

The failing backend comes first in every plan (``weighted``, a weight far above the mock's) and is never
marked down (``unhealthy_after`` huge, no probes), so every request pays the failover.

    python bench/bench_failover.py [--requests 500] [--rounds 3]
"""
from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import procs  # noqa: E402

FIRST_BYTE_S = 0.5
BODY = json.dumps({"model": "mock", "messages": [{"role": "user", "content": "Say hello."}],
                   "stream": False}).encode()
NEVER_DOWN = 'health = { path = "", unhealthy_after = 1000000 }\n'


def table(name: str, url: str, weight: int) -> str:
    return (f'[backends.{name}]\ntype = "openai"\nurl = "{url}"\nmodels = ["mock"]\nweight = {weight}\n'
            f'timeouts = {{ first_byte_s = {FIRST_BYTE_S} }}\n{NEVER_DOWN}')


def proxy(tmp: str, text: str) -> tuple[procs.Proc, int]:
    port = procs.free_port()
    path = os.path.join(tmp, f"backends-{port}.toml")
    Path(path).write_text(text + '[routing]\nstrategy = "weighted"\nretries = 2\nbackoff_ms = 0\n')
    env = {k: v for k, v in os.environ.items() if not k.startswith("BACKEND_")}
    env.update(HOST="127.0.0.1", PORT=str(port), BACKENDS_FILE=path, DATABASE_URL=f"sqlite:///{tmp}/b-{port}.db",
               LOG_LEVEL="WARNING")
    proc, port, _ready = procs._start_server(f"proxy-{port}", [sys.executable, "wsgi.py"], env,
                                             str(procs.BENCH_DIR.parent), None, tmp, port, 60)
    return proc, port


def latencies(port: int, count: int, warm: int = 50) -> list[float]:
    conn = procs.healthy_connection(port)
    samples = []
    for i in range(count + warm):
        started = time.perf_counter()
        conn.request("POST", "/v1/chat/completions", BODY, {"Content-Type": "application/json"})
        resp = conn.getresponse()
        body = resp.read()
        took = time.perf_counter() - started
        if resp.status != 200:
            raise SystemExit(f"HTTP {resp.status}: {body[:300]!r}")
        if i >= warm:  # the first ones warm up
            samples.append(took * 1000)
    conn.close()
    samples.sort()
    return samples


def pct(samples: list[float], p: float) -> float:
    return samples[min(len(samples) - 1, int(len(samples) * p))]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--requests", type=int, default=500)
    parser.add_argument("--rounds", type=int, default=3)
    a = parser.parse_args()
    tmp = tempfile.mkdtemp(prefix="bench-failover-")
    mock, mock_port = procs.start_mock(1, 0, None, tmp)
    refused_port = procs.free_port()  # nobody listens there
    hole = socket.socket()
    hole.bind(("127.0.0.1", 0))
    hole.listen(512)  # accepted by the kernel, never read
    started = []
    try:
        alone = proxy(tmp, table("mock", f"http://127.0.0.1:{mock_port}", 1))
        refused = proxy(tmp, table("refused", f"http://127.0.0.1:{refused_port}", 1000)
                        + table("mock", f"http://127.0.0.1:{mock_port}", 1))
        blackholed = proxy(tmp, table("hole", f"http://127.0.0.1:{hole.getsockname()[1]}", 1000)
                           + table("mock", f"http://127.0.0.1:{mock_port}", 1))
        started = [alone[0], refused[0], blackholed[0]]
        for n in range(a.rounds):
            base = latencies(alone[1], a.requests)
            over = latencies(refused[1], a.requests)
            print(f"round {n + 1}: mock alone p50 {statistics.median(base):.3f} ms p99 {pct(base, 0.99):.3f} ms; "
                  f"first refused p50 {statistics.median(over):.3f} ms p99 {pct(over, 0.99):.3f} ms; "
                  f"added p50 {statistics.median(over) - statistics.median(base):+.3f} ms, "
                  f"p99 {pct(over, 0.99) - pct(base, 0.99):+.3f} ms")
        held = latencies(blackholed[1], 10, warm=1)
        print(f"first blackholed (first_byte_s = {FIRST_BYTE_S}): {len(held)} requests, "
              f"min {held[0]:.1f} ms, median {statistics.median(held):.1f} ms, max {held[-1]:.1f} ms")
    finally:
        for proc in started:
            proc.stop()
        mock.stop()
        hole.close()


if __name__ == "__main__":
    main()
