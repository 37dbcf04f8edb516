"""Benchmark the exchange log: the log view with 1,000,000 rows in SQLite, and the proxy with logging on vs off.

    python bench/bench_logs.py seed --rows 1000000 --db /tmp/bench-logs.db   # ~1-2 min, reused later
    python bench/bench_logs.py render --db /tmp/bench-logs.db                # times /ui pages and JSON
    python bench/bench_logs.py overhead --rounds 4                           # bench/run.py, LOG_ENABLED off/on
    python bench/bench_logs.py latency --rounds 4                            # c=1 p50 with the stub backend
    python bench/bench_logs.py all                                           # all of the above

`render` serves the pages through Flask's test client (no network) and reports the median of
repeated renders after a warm-up; the target is under 200 ms for the log list. `overhead` runs
bench/run.py (path P: OpenAI client -> proxy -> OpenAI mock; c=1 latency and c=64 throughput) with
`--proxy-env LOG_ENABLED=false` and `=true` in ABBA order and reports medians of the per-round
throughput ratio (target >= 90%) and latency p50 delta (target <= 0.3 ms); `latency` measures the
same p50 delta against the stub backend (no upstream socket). Prints a table and writes
bench/results/<timestamp>-logs.json.
"""
from __future__ import annotations

import argparse
import json
import os
import random
import sqlite3
import statistics
import subprocess
import sys
import time
from pathlib import Path

BENCH_DIR = Path(__file__).resolve().parent
REPO = BENCH_DIR.parent
sys.path.insert(0, str(REPO))

MODELS = ["qwen3-8b", "llama3.2:latest", "smollm2", "gpt-oss-20b", "nomic-embed-text", "mistral-small"]
ENDPOINTS = ["/api/chat", "/v1/chat/completions", "/api/generate", "/v1/completions", "/api/embed"]
CLIENTS = ["127.0.0.1", "192.168.1.20", "192.168.1.31", "10.0.0.7"]
WORDS = ["kitchen", "light", "weather", "tomorrow", "summarise", "contract", "translate", "invoice", "python",
         "function", "error", "garden", "music", "calendar", "meeting", "recipe", "train", "ticket", "budget",
         "report", "poem", "story"]


def seed(db_path: str, rows: int, days: float = 30.0) -> float:
    """Fill a fresh SQLite log with `rows` exchanges spread over the last `days` days. Returns seconds."""
    from proxy.config import Settings
    from proxy.store import LogStore

    for suffix in ("", "-wal", "-shm"):
        if os.path.exists(db_path + suffix):
            os.remove(db_path + suffix)
    store = LogStore(Settings.from_env({"DATABASE_URL": f"sqlite:///{db_path}", "LOG_CLEANUP_MINUTES": "0"}))
    store.open()
    store.writer._stop = True
    store.close()
    t0 = time.perf_counter()
    rnd = random.Random(7)
    now = time.time()
    start = now - days * 86400
    step = days * 86400 / rows
    conn = sqlite3.connect(db_path)
    conn.execute("PRAGMA journal_mode=wal")
    conn.execute("PRAGMA synchronous=off")
    batch = 50_000
    for first in range(0, rows, batch):
        ex, bodies, fts = [], [], []
        for i in range(first, min(rows, first + batch)):
            ident = i + 1
            started = start + i * step
            words = " ".join(rnd.choice(WORDS) for _ in range(8))
            status = 200 if rnd.random() > 0.04 else rnd.choice((400, 404, 500, 502, 504))
            outcome = "ok" if status == 200 else ("client_error" if status < 500 else "backend_error")
            model = rnd.choice(MODELS)
            endpoint = rnd.choice(ENDPOINTS)
            duration = rnd.uniform(50, 4000)
            prompt, completion = rnd.randint(20, 4000), rnd.randint(1, 800)
            ex.append((ident, started, started + duration / 1000, f"bench{ident:08x}", rnd.choice(CLIENTS),
                       "bench/1.0", None, "openai" if endpoint.startswith("/v1") else "ollama", endpoint, "POST",
                       "openai backend at http://127.0.0.1:8080", "openai", model, model, rnd.random() < 0.7,
                       status, outcome, None if status == 200 else "bench error", duration, duration * 0.2,
                       duration * 0.21, 0.3, prompt, completion, False, completion / (duration / 1000), 0, False,
                       words[:160]))
            request = json.dumps({"model": model, "messages": [{"role": "user", "content": words}]})
            bodies.append((ident, request, request, "", "", len(request), len(request), 0, 0,
                           False, False, False, False, None))
            fts.append((ident, f"{model}\n{words}"))
        conn.executemany(f"INSERT INTO exchanges VALUES ({', '.join('?' * 29)})", ex)
        conn.executemany(f"INSERT INTO exchange_bodies VALUES ({', '.join('?' * 14)})", bodies)
        conn.executemany("INSERT INTO exchange_fts (rowid, body) VALUES (?, ?)", fts)
        conn.commit()
        print(f"  seeded {min(rows, first + batch):,} rows", file=sys.stderr)
    conn.execute("ANALYZE")
    conn.commit()
    conn.close()
    return time.perf_counter() - t0


def render(db_path: str, repeat: int = 15) -> dict:
    """Median milliseconds to serve each log view page over the seeded database."""
    from proxy import create_app
    from proxy.config import Settings

    app = create_app(Settings.from_env({"DATABASE_URL": f"sqlite:///{db_path}", "BACKEND_TYPE": "stub",
                                        "LOG_CLEANUP_MINUTES": "0", "LOG_LEVEL": "WARNING"}))
    client = app.test_client()
    store = app.extensions["llm_proxy"].extras["log_store"]
    total = store.read(lambda m: m.Exchange.select().count())
    middle = client.get("/ui/api/logs?limit=1&before=" + _cursor_at(db_path, total // 2)).json
    cursor = f"{middle['items'][0]['started']!r}_{middle['items'][0]['id']}" if middle["items"] else ""
    pages = {
        "log list (first page)": "/ui/logs",
        "log list, model filter": "/ui/logs?model=smollm2",
        "log list, status 5xx": "/ui/logs?status=5xx",
        "log list, client filter": "/ui/logs?client=10.0.0.7",
        "log list, page in the middle": f"/ui/logs?before={cursor}",
        "log list, full-text search": "/ui/logs?q=invoice+garden",
        "JSON list": "/ui/api/logs",
        "one exchange": f"/ui/logs/{total // 2}",
        "overview (hour/day counts)": "/ui/",
        "stats, last hour": "/ui/stats?window=1h",
        "stats, last 24 h": "/ui/stats?window=24h",
    }
    out = {"rows": total}
    for name, url in pages.items():
        for _ in range(2):
            assert client.get(url).status_code == 200, url
        times = []
        for _ in range(repeat):
            t0 = time.perf_counter()
            r = client.get(url)
            times.append((time.perf_counter() - t0) * 1000)
            assert r.status_code == 200
        out[name] = {"median_ms": statistics.median(times), "max_ms": max(times), "url": url}
    store.close()
    return out


def _cursor_at(db_path: str, ident: int) -> str:
    conn = sqlite3.connect(db_path)
    row = conn.execute("SELECT started, id FROM exchanges WHERE id = ?", (ident,)).fetchone()
    conn.close()
    return f"{row[0]!r}_{row[1]}" if row else ""


def _run_py(enabled: str, duration: float, requests: int, extra: list[str]) -> dict:
    cmd = [sys.executable, str(BENCH_DIR / "run.py"), "--paths", "P", "--scenarios", "latency,throughput",
           "--duration", str(duration), "--requests", str(requests), "--proxy-env", f"LOG_ENABLED={enabled}", *extra]
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True)
    path = next((line.split("results: ", 1)[1].strip() for line in proc.stdout.splitlines()
                 if line.startswith("results: ")), None)
    if not path:
        raise SystemExit(f"bench/run.py failed:\n{proc.stdout}\n{proc.stderr}")
    p = json.loads(Path(path).read_text())["summaries"]["P"]
    return {"rps": p["throughput"]["rps"], "p50": p["latency"]["latencies"]["p50"],
            "cpu_us_per_req": p["throughput"]["proxy_cpu_seconds"] / max(1, p["throughput"]["completed"]) * 1e6}


def overhead(rounds: int, duration: float, requests: int, extra: list[str]) -> dict:
    """bench/run.py path P with logging off and on, in ABBA order; the figures are medians of the
    per-round comparisons, so load from other work on the machine cancels out as far as it can."""
    pairs = []
    for k in range(rounds):
        order = ("false", "true") if k % 2 == 0 else ("true", "false")
        got = {enabled: _run_py(enabled, duration, requests, extra) for enabled in order}
        pairs.append(got)
        print(f"  round {k + 1}: off {got['false']}  on {got['true']}", file=sys.stderr)
    med = {k: {m: statistics.median(p[k][m] for p in pairs) for m in ("rps", "p50", "cpu_us_per_req")}
           for k in ("false", "true")}
    return {"rounds": pairs, "off": med["false"], "on": med["true"],
            "throughput_ratio": statistics.median(p["true"]["rps"] / p["false"]["rps"] for p in pairs),
            "p50_delta_ms": statistics.median(p["true"]["p50"] - p["false"]["p50"] for p in pairs),
            "cpu_delta_us": statistics.median(p["true"]["cpu_us_per_req"] - p["false"]["cpu_us_per_req"]
                                              for p in pairs)}


def stub_latency(requests: int, rounds: int) -> dict:
    """c=1 latency of `python wsgi.py` with the stub backend (no upstream socket at all), logging off vs on,
    ABBA order; a new connection per request (a keep-alive connection stalls ~40 ms per request on the
    server's split writes, logging on or off, which would hide a fraction of a millisecond). Isolates what
    recording adds to one request."""
    import http.client
    import socket
    import tempfile

    from procs import healthy_connection

    body = json.dumps({"model": "stub", "messages": [{"role": "user", "content": "Say hello."}],
                       "stream": False}).encode()

    def one_run(enabled: str) -> float:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        tmp = tempfile.mkdtemp(prefix="bench-logs-")
        env = {**os.environ, "HOST": "127.0.0.1", "PORT": str(port), "BACKEND_TYPE": "stub", "STUB_DELAY_MS": "0",
               "LOG_ENABLED": enabled, "DATABASE_URL": f"sqlite:///{tmp}/p.db", "LOG_LEVEL": "WARNING"}
        proc = subprocess.Popen([sys.executable, "wsgi.py"], cwd=REPO, env=env, stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL)
        try:
            healthy_connection(port).close()
            times = []
            for i in range(requests + requests // 10):
                t0 = time.perf_counter()
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
                conn.request("POST", "/v1/chat/completions", body, {"Content-Type": "application/json"})
                conn.getresponse().read()
                conn.close()
                if i >= requests // 10:  # warm-up excluded
                    times.append((time.perf_counter() - t0) * 1000)
            return statistics.median(times)
        finally:
            proc.terminate()
            proc.wait(10)

    pairs = []
    for k in range(rounds):
        order = ("false", "true") if k % 2 == 0 else ("true", "false")
        got = {enabled: one_run(enabled) for enabled in order}
        pairs.append(got)
        print(f"  stub c=1 round {k + 1}: p50 off {got['false']:.3f} ms, on {got['true']:.3f} ms", file=sys.stderr)
    return {"rounds": pairs, "off_p50": statistics.median(p["false"] for p in pairs),
            "on_p50": statistics.median(p["true"] for p in pairs),
            "p50_delta_ms": statistics.median(p["true"] - p["false"] for p in pairs)}


def report(data: dict) -> str:
    lines = []
    if "render" in data:
        lines.append(f"log view over {data['render']['rows']:,} rows (median of repeats, Flask test client):")
        for name, value in data["render"].items():
            if isinstance(value, dict):
                flag = ""
                if name.startswith("log list (first"):
                    flag = "  target < 200 ms: " + ("PASS" if value["median_ms"] < 200 else "FAIL")
                lines.append(f"  {name:34s} {value['median_ms']:8.1f} ms (max {value['max_ms']:.1f}){flag}")
    if "overhead" in data:
        o = data["overhead"]
        lines.append("logging on vs off (bench/run.py path P, medians):")
        lines.append(f"  throughput   off {o['off']['rps']:8.0f} req/s   on {o['on']['rps']:8.0f} req/s   "
                     f"ratio {o['throughput_ratio'] * 100:.1f} %  target >= 90 %: "
                     + ("PASS" if o["throughput_ratio"] >= 0.9 else "FAIL"))
        lines.append(f"  latency p50  off {o['off']['p50']:8.3f} ms      on {o['on']['p50']:8.3f} ms      "
                     f"delta {o['p50_delta_ms']:+.3f} ms  target <= 0.3 ms: "
                     + ("PASS" if o["p50_delta_ms"] <= 0.3 else "FAIL"))
        lines.append(f"  proxy CPU    off {o['off']['cpu_us_per_req']:8.0f} us/req    on "
                     f"{o['on']['cpu_us_per_req']:8.0f} us/req   delta {o['cpu_delta_us']:+.0f} us/req")
    if "stub_latency" in data:
        o = data["stub_latency"]
        lines.append("c=1 latency, stub backend (python wsgi.py, a new connection per request), medians:")
        lines.append(f"  p50  off {o['off_p50']:.3f} ms   on {o['on_p50']:.3f} ms   delta {o['p50_delta_ms']:+.3f} ms"
                     "  target <= 0.3 ms: " + ("PASS" if o["p50_delta_ms"] <= 0.3 else "FAIL"))
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("what", choices=("seed", "render", "overhead", "latency", "all"))
    parser.add_argument("--db", default="/tmp/llm-proxy-bench-logs.db")
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--repeat", type=int, default=15)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--duration", type=float, default=5.0)
    parser.add_argument("--requests", type=int, default=1000)
    parser.add_argument("--run-arg", action="append", default=[], help="extra argument for bench/run.py")
    a = parser.parse_args(argv)
    data: dict = {"started": time.strftime("%Y-%m-%dT%H:%M:%S")}
    if a.what in ("seed", "all"):
        data["seed_seconds"] = seed(a.db, a.rows)
        print(f"seeded {a.rows:,} rows in {data['seed_seconds']:.0f} s", file=sys.stderr)
    if a.what in ("render", "all"):
        data["render"] = render(a.db, a.repeat)
    if a.what in ("latency", "all"):
        data["stub_latency"] = stub_latency(a.requests * 2, a.rounds)
    if a.what in ("overhead", "all"):
        data["overhead"] = overhead(a.rounds, a.duration, a.requests, a.run_arg)
    print(report(data))
    out = BENCH_DIR / "results" / f"{time.strftime('%Y%m%d-%H%M%S')}-logs.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(data, indent=1))
    print(f"results: {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
