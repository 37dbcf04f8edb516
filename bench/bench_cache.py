"""What a response cache hit costs end to end: c=1 latency through a real proxy process, hit against miss.

Starts the mock upstream (bench/mock_upstream.py) and, per configuration, a proxy as `python wsgi.py`
(CACHE=memory; CACHE=redis too when Redis answers), pinned like bench/run.py pins them. For each case one
request primes the entry, then N sequential requests on one keep-alive connection are timed to the last byte:

* ``hit``: the same deterministic request (temperature 0) answered from the cache — OpenAI and Ollama
  clients and the agent fronts (Anthropic Messages, OpenAI Responses), whole and streamed (20 words, replayed
  a word a chunk; an agent front's stream is timed to its last byte, not to a final event);
  The proxy's CPU time per hit (from ``/proc/<pid>/stat``) is printed too: it moves less with other work
  on the machine than the latency does.
* ``miss``: the same request with ``Cache-Control: no-cache`` (looked up not at all, served by the mock and
  kept again): what the hit saves, measured the same way.

    python bench/bench_cache.py [--requests 2000] [--redis redis://127.0.0.1:6379/0] [--no-pin] [--json out.json]

The budget is 1 ms p50 for a hit (issue 13). Figures go in docs/performance.md.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import tempfile
from pathlib import Path

import loadgen
import procs
from report import summary

ROOT = Path(__file__).resolve().parent.parent
CHUNKS = 20  # words of the mock's answer
BUDGET_MS = 1.0
CASES = (  # name, route, dialect, stream
    ("openai whole", "/v1/chat/completions", "openai", False),
    ("ollama whole", "/api/chat", "ollama", False),
    ("openai stream", "/v1/chat/completions", "openai", True),
    ("ollama stream", "/api/chat", "ollama", True),
    ("anthropic whole", "/v1/messages", "anthropic", False),
    ("anthropic stream", "/v1/messages", "anthropic", True),
    ("responses whole", "/v1/responses", "responses", False),
    ("responses stream", "/v1/responses", "responses", True),
)


def target(port: int, route: str, dialect: str, stream: bool, no_cache: bool = False) -> loadgen.Target:
    body: dict = {"model": "mock", "messages": [{"role": "user", "content": "Say hello."}], "stream": stream}
    if dialect == "ollama":
        body["options"] = {"temperature": 0}
    else:
        body["temperature"] = 0
    if dialect == "anthropic":
        body["max_tokens"] = 100
    elif dialect == "responses":
        body["input"] = body.pop("messages")
    raw = json.dumps(body, separators=(",", ":")).encode()
    headers = ("Cache-Control: no-cache",) if no_cache else ()
    # the agent fronts' streams end without [DONE] or done: timed to the last byte of the body
    mode = {"openai": "sse", "ollama": "ndjson"}.get(dialect, "") if stream else ""
    return loadgen.Target(f"{dialect}-{route}", "127.0.0.1", port,
                          loadgen.make_request("127.0.0.1", port, route, raw, headers), mode)


def redis_answers(url: str) -> bool:
    try:
        import redis

        redis.Redis.from_url(url, socket_timeout=1, socket_connect_timeout=1).ping()
        return True
    except Exception:  # noqa: BLE001 - any failure: no Redis rows
        return False


def measure(loop, port: int, pid: int, count: int) -> dict:
    out = {}
    for name, route, dialect, stream in CASES:
        hit, miss = target(port, route, dialect, stream), target(port, route, dialect, stream, no_cache=True)
        primed = loop.run_until_complete(loadgen.one(hit))
        if not primed.ok:
            raise SystemExit(f"{name}: priming request failed: {primed.describe()} {primed.body_bytes()[:300]!r}")
        cpu = procs.cpu_seconds(pid)
        hits = loop.run_until_complete(loadgen.latency(hit, count, count // 10))
        cpu = procs.cpu_seconds(pid) - cpu
        misses = loop.run_until_complete(loadgen.latency(miss, count // 4, count // 40))
        out[name] = {"hit": summary(hits["latencies"]), "miss": summary(misses["latencies"]),
                     "hit_cpu_us": cpu / (count + count // 10) * 1e6, "errors": hits["errors"] + misses["errors"]}
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--requests", type=int, default=2000)
    ap.add_argument("--redis", default=os.environ.get("BENCH_REDIS_URL") or os.environ.get("TEST_REDIS_URL")
                    or "redis://127.0.0.1:6379/0")
    ap.add_argument("--no-pin", action="store_true")
    ap.add_argument("--json")
    a = ap.parse_args()
    proxy_cpus, mock_cpus, client_cpus = procs.cpu_layout(not a.no_pin)
    if client_cpus:
        os.sched_setaffinity(0, client_cpus)
    configs = {"memory": {"CACHE": "memory"}}
    if redis_answers(a.redis):
        configs["redis"] = {"CACHE": "redis", "REDIS_URL": a.redis}
    else:
        print(f"Redis at {a.redis} does not answer: no Redis rows")
    loop = asyncio.new_event_loop()
    results: dict = {}
    with tempfile.TemporaryDirectory(prefix="llm-proxy-bench-cache-") as tmp:
        mock, mock_port = procs.start_mock(CHUNKS, 0, mock_cpus, tmp)
        try:
            for config, env in configs.items():
                proc, port, _ready = procs.start_proxy(str(ROOT), sys.executable, "openai", mock_port, tmp, env,
                                                       proxy_cpus, tmp)
                try:
                    results[config] = measure(loop, port, proc.pid, a.requests)
                finally:
                    proc.stop()
        finally:
            mock.stop()
    failed = False
    print(f"{'cache':<7} {'case':<16} {'hit p50':>8} {'hit p99':>8} {'cpu/hit':>8} {'miss p50':>9} {'miss p99':>9}"
          "  verdict")
    for config, cases in results.items():
        for name, row in cases.items():
            ok = row["hit"]["p50"] <= BUDGET_MS and not row["errors"]
            failed |= not ok
            print(f"{config:<7} {name:<16} {row['hit']['p50']:8.3f} {row['hit']['p99']:8.3f} "
                  f"{row['hit_cpu_us'] / 1000:8.3f} "
                  f"{row['miss']['p50']:9.3f} {row['miss']['p99']:9.3f}  {'PASS' if ok else 'FAIL'}"
                  f"{'' if not row['errors'] else ' errors=' + str(row['errors'])}")
    print(f"(ms, c=1, {a.requests} hits and {a.requests // 4} misses per case; budget: hit p50 <= {BUDGET_MS} ms)")
    if a.json:
        Path(a.json).write_text(json.dumps(results, indent=2))
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
