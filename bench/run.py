"""Benchmark the proxy against a direct connection to a mock upstream, path by path.

Paths: P (OpenAI client -> proxy /v1/chat/completions -> OpenAI mock), O2A (Ollama client ->
proxy /api/chat -> OpenAI mock), A2O (OpenAI client -> proxy /v1/chat/completions -> Ollama
mock /api/chat). The direct baseline of a path is the same load sent straight to the mock
endpoint the proxy itself calls. Prints one table and writes bench/results/<timestamp>.json.

    python bench/run.py --quick          # about a minute and a half
    python bench/run.py                  # full run, with 1,000 slow streams for 30 s
    python bench/run.py --proxy-env LOG_MESSAGES=true --paths P --scenarios throughput

See bench/README.md for what each figure means and how it is measured.
"""

import argparse
import asyncio
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import loadgen
import procs
import report
from loadgen import Target, make_request
from mock_upstream import REPLY_TEXT, _words, install_loop

PATHS = {  # name: (backend type, proxy route, client dialect)
    "P": ("openai", "/v1/chat/completions", "openai"),
    "O2A": ("openai", "/api/chat", "ollama"),
    "A2O": ("ollama", "/v1/chat/completions", "openai"),
}
ROUTE = {"openai": "/v1/chat/completions", "ollama": "/api/chat"}
EVENTS = {"openai": "sse", "ollama": "ndjson"}
SCENARIOS = ("latency", "throughput", "ttfc", "slow")
FAST_CHUNKS = 20  # chunks of a streamed reply from the fast mock (used by the shape checks)


def chat_target(name, port, route, dialect, stream, model="mock"):
    body = {"model": model, "messages": [{"role": "user", "content": "Say hello."}],
            "stream": stream}
    raw = json.dumps(body, separators=(",", ":")).encode()
    return Target(name, "127.0.0.1", port, make_request("127.0.0.1", port, route, raw),
                  EVENTS[dialect] if stream else "")


# --- shape checks through the proxy --------------------------------------------------------

def check_reply(dialect, resp, stream):
    """Problems with one reply in the client's dialect ([] when it is right)."""
    if resp.error or resp.status != 200:
        return [f"{'stream' if stream else 'reply'}: {resp.describe()}"
                f" body={resp.body_bytes()[:300]!r}"]
    raw = resp.body_bytes()
    try:
        if not stream:
            doc = json.loads(raw)
            text = (doc["choices"][0]["message"]["content"] if dialect == "openai"
                    else doc["message"]["content"])
            ok = text == REPLY_TEXT and (dialect == "openai" or doc.get("done") is True)
            return [] if ok else [f"reply: unexpected body {raw[:300]!r}"]
        pieces, last = [], None
        for line in raw.decode().splitlines():
            if dialect == "openai":
                if not line.startswith("data:"):
                    continue
                last = line[5:].strip()
                if last == "[DONE]":
                    continue
                for choice in json.loads(last).get("choices", []):
                    pieces.append(choice.get("delta", {}).get("content") or "")
            elif line.strip():
                last = json.loads(line)
                pieces.append(last.get("message", {}).get("content") or "")
    except (ValueError, KeyError, IndexError, TypeError) as exc:
        return [f"{'stream' if stream else 'reply'}: unparsable ({exc}): {raw[:300]!r}"]
    problems = []
    if "".join(pieces) != "".join(_words(FAST_CHUNKS)):
        problems.append(f"stream: assembled text {''.join(pieces)[:80]!r}")
    if (dialect == "openai" and last != "[DONE]") or (
            dialect == "ollama" and not (isinstance(last, dict) and last.get("done"))):
        problems.append(f"stream: does not end with its final event ({str(last)[:120]})")
    if resp.events < FAST_CHUNKS:
        problems.append(f"stream: only {resp.events} events")
    return problems


# --- the run --------------------------------------------------------------------------------

class Bench:
    def __init__(self, args):
        self.args = args
        self.tmp = tempfile.TemporaryDirectory(prefix="llm-proxy-bench-")
        self.proxy_cpus, self.mock_cpus, self.client_cpus = procs.cpu_layout(not args.no_pin)
        if self.client_cpus:
            os.sched_setaffinity(0, self.client_cpus)
        self.mocks = {}
        self.rows, self.raw, self.problems, self.profiles = [], {}, {}, {}

    def mock(self, chunks, delay_ms):
        key = (chunks, delay_ms)
        if key not in self.mocks:
            self.mocks[key] = procs.start_mock(chunks, delay_ms, self.mock_cpus, self.tmp.name)
        return self.mocks[key][1]

    def proxy(self, path, mock_port):
        backend = PATHS[path][0]
        proc, port, ready = procs.start_proxy(
            self.args.repo, self.args.python, backend, mock_port, self.tmp.name,
            self.args.proxy_env, self.proxy_cpus, self.tmp.name, backends=self.args.backends)
        self.raw.setdefault(path, {}).setdefault("startup_seconds", []).append(ready)
        return proc, port

    def close(self):
        for proc, _port in self.mocks.values():
            proc.stop()
        self.tmp.cleanup()

    def direct_targets(self, backend, port, stream):
        return chat_target(f"direct-{backend}", port, ROUTE[backend], backend, stream)

    def proxy_target(self, path, port, stream):
        _backend, route, dialect = PATHS[path]
        return chat_target(f"proxy-{path}", port, route, dialect, stream)

    def run(self, loop):
        a = self.args
        backends = sorted({PATHS[p][0] for p in a.paths})
        fast = self.mock(FAST_CHUNKS, 0)
        direct = {}
        for backend in backends:
            direct[backend] = loop.run_until_complete(self.measure_direct(backend, fast))
            self.raw[f"direct-{backend}"] = direct[backend]
        for path in a.paths:
            if not a.direct_only:
                self.measure_proxy(loop, path, fast)
            self.add_rows(path, direct[PATHS[path][0]], self.raw.get(path, {}))
        if a.reference and {"latency", "throughput"} & set(a.scenarios):
            for mode in ("hello", "relay"):
                self.measure_reference(loop, mode, fast)
                self.add_rows(f"ref-{mode}", direct.get("openai") or {},
                              self.raw[f"ref-{mode}"], reference=True)

    def measure_reference(self, loop, mode, fast_port):
        """bench/reference_app.py on the proxy's CPU: latency and throughput, no targets."""
        a, out = self.args, self.raw.setdefault(f"ref-{mode}", {})
        proc, port, _ready = procs.start_reference(mode, fast_port, self.proxy_cpus, self.tmp.name)
        try:
            plain = chat_target(f"ref-{mode}", port, ROUTE["openai"], "openai", False)
            if "latency" in a.scenarios:
                out["latency"] = loop.run_until_complete(
                    loadgen.latency(plain, a.requests, a.requests // 10))
            if "throughput" in a.scenarios:
                cpu0 = procs.cpu_seconds(proc.pid)
                out["throughput"] = loop.run_until_complete(
                    loadgen.throughput(plain, a.concurrency, a.duration, self.warmup))
                out["throughput"]["proxy_cpu_seconds"] = procs.cpu_seconds(proc.pid) - cpu0
        finally:
            proc.stop()

    async def measure_direct(self, backend, fast_port):
        a, out = self.args, {}
        plain = self.direct_targets(backend, fast_port, False)
        if "latency" in a.scenarios:
            out["latency"] = await loadgen.latency(plain, a.requests, a.requests // 10)
        if "throughput" in a.scenarios:
            out["throughput"] = await loadgen.throughput(plain, a.concurrency, a.duration,
                                                         self.warmup)
        if "ttfc" in a.scenarios:
            port = self.mock(a.ttfc_chunks, a.ttfc_delay_ms)
            out["ttfc"] = await loadgen.streams(self.direct_targets(backend, port, True),
                                                a.streams, a.duration, self.ttfc_stream_s)
        if "slow" in a.scenarios:
            port = self.mock(self.slow_chunks, a.slow_interval_ms)
            out["slow"] = await loadgen.slow_streams(
                self.direct_targets(backend, port, True), a.slow_streams, a.ramp,
                a.slow_seconds)
        return out

    @property
    def warmup(self):
        """Seconds of closed-loop load before the throughput figure is taken."""
        return min(1.0, self.args.duration / 2)

    @property
    def ttfc_stream_s(self):
        return self.args.ttfc_chunks * self.args.ttfc_delay_ms / 1000.0

    @property
    def slow_chunks(self):
        return max(1, round(self.args.slow_seconds * 1000 / self.args.slow_interval_ms))

    def measure_proxy(self, loop, path, fast_port):
        a, out = self.args, self.raw.setdefault(path, {})
        proc, port = self.proxy(path, fast_port)
        try:
            problems = []
            for stream in (False, True):
                resp = loop.run_until_complete(loadgen.one(self.proxy_target(path, port, stream)))
                problems += check_reply(PATHS[path][2], resp, stream)
            self.problems[path] = problems
            time.sleep(0.5)
            out["idle_rss_kib"] = procs.rss_kib(proc.pid)
            plain = self.proxy_target(path, port, False)
            if "latency" in a.scenarios:
                out["latency"] = loop.run_until_complete(
                    loadgen.latency(plain, a.requests, a.requests // 10))
            if "throughput" in a.scenarios:
                cpu0 = procs.cpu_seconds(proc.pid)
                out["throughput"] = loop.run_until_complete(
                    loadgen.throughput(plain, a.concurrency, a.duration, self.warmup))
                cpu = procs.cpu_seconds(proc.pid) - cpu0
                out["throughput"]["proxy_cpu_seconds"] = cpu
                if a.profile:
                    self.profile(loop, path, proc, f"{path}-throughput", a.duration + 1,
                                 lambda: loadgen.throughput(plain, a.concurrency, a.duration,
                                                            self.warmup))
            if not proc.alive():
                problems.append("proxy exited during the run:\n" + proc.output())
        finally:
            proc.stop()
        if "ttfc" in a.scenarios:
            proc, port = self.proxy(path, self.mock(a.ttfc_chunks, a.ttfc_delay_ms))
            try:
                target = self.proxy_target(path, port, True)
                out["ttfc"] = loop.run_until_complete(loadgen.streams(
                    target, a.streams, a.duration, self.ttfc_stream_s))
                if a.profile:
                    self.profile(loop, path, proc, f"{path}-ttfc",
                                 a.duration + self.ttfc_stream_s * 1.5,
                                 lambda: loadgen.streams(target, a.streams, a.duration,
                                                         self.ttfc_stream_s))
            finally:
                proc.stop()
        if "slow" in a.scenarios:
            proc, port = self.proxy(path, self.mock(self.slow_chunks, a.slow_interval_ms))
            try:
                loop.run_until_complete(loadgen.latency(self.proxy_target(path, port, False),
                                                        50, 0))  # warm up, non-streamed
                time.sleep(0.5)
                before = procs.rss_kib(proc.pid)
                out["slow"] = loop.run_until_complete(loadgen.slow_streams(
                    self.proxy_target(path, port, True), a.slow_streams, a.ramp,
                    a.slow_seconds, sample=lambda: procs.rss_kib(proc.pid)))
                out["slow"]["rss_before_kib"] = before
                if a.profile:
                    target = self.proxy_target(path, port, True)
                    self.profile(loop, path, proc, f"{path}-slow", a.ramp + a.slow_seconds + 2,
                                 lambda: loadgen.slow_streams(target, a.slow_streams, a.ramp,
                                                              a.slow_seconds))
                if not proc.alive():
                    self.problems[path].append("proxy exited during slow streams:\n"
                                               + proc.output())
            finally:
                proc.stop()

    def profile(self, loop, path, proc, name, seconds, load):
        """Repeat one load (a coroutine factory) under py-spy; keep the top functions."""
        a = self.args
        raw_path = Path(a.results_dir) / f"{a.stamp}-pyspy-{name}.txt"
        raw_path.parent.mkdir(parents=True, exist_ok=True)
        spy = procs.start_py_spy(proc.pid, seconds, raw_path)
        if spy is None:
            self.problems.setdefault(path, []).append("--profile: py-spy not found")
            return
        loop.run_until_complete(load())
        _out, err = spy.communicate(timeout=120)
        if raw_path.exists():
            self.profiles[name] = report.py_spy_top(raw_path)
            self.profiles[name]["raw"] = str(raw_path)
        else:
            self.problems.setdefault(path, []).append(f"py-spy failed: {err.decode()[-500:]}")

    def add_rows(self, path, d, p, reference=False):
        """Table rows of one path from its direct (d) and proxy (p) raw results; a reference
        server's rows carry no target."""
        a, rows = self.args, self.rows

        def Row(*args, **kwargs):
            if reference:
                kwargs.pop("check", None)
                kwargs["target"] = "(reference)"
            return report.Row(*args, **kwargs)

        def get(src, scenario, *keys):
            value = src.get(scenario)
            for key in keys:
                value = value.get(key) if isinstance(value, dict) else None
            return value

        if "latency" in a.scenarios and (get(p, "latency") or not reference):
            ds, ps = (report.summary(get(s, "latency", "latencies") or []) for s in (d, p))
            err = (get(p, "latency", "errors") or 0) + (get(d, "latency", "errors") or 0)
            note = f"{err} errors" if err else ""
            rows.append(Row("c=1 latency", path, "p50", "ms", ds.get("p50"), ps.get("p50"),
                            target="+<=1 ms", check=lambda r: r.delta <= 1 and not err,
                            note=note))
            rows.append(Row("c=1 latency", path, "p99", "ms", ds.get("p99"), ps.get("p99"),
                            target="+<=3 ms", check=lambda r: r.delta <= 3 and not err,
                            note=note))
        if "throughput" in a.scenarios and (get(p, "throughput") or not reference):
            perr = get(p, "throughput", "errors") or 0
            cpu, done = get(p, "throughput", "proxy_cpu_seconds"), get(p, "throughput",
                                                                        "completed")
            note = f"proxy CPU {cpu / done * 1e6:.0f} us/req" if cpu and done else ""
            if perr:
                note = f"{perr} errors; " + note
            rows.append(Row(f"c={a.concurrency} throughput", path, "req/s", "req/s",
                            get(d, "throughput", "rps"), get(p, "throughput", "rps"),
                            compare="ratio", target=">=1000 req/s",
                            check=lambda r: r.proxy >= 1000 and not perr, note=note))
        if "ttfc" in a.scenarios and not reference:
            ds, ps = (report.summary(get(s, "ttfc", "ttfe") or []) for s in (d, p))
            perr = get(p, "ttfc", "errors") or 0
            rows.append(Row(f"{a.streams} streams TTFC", path, "p50", "ms", ds.get("p50"),
                            ps.get("p50"), target="+<=2 ms",
                            check=lambda r: r.delta <= 2 and not perr,
                            note=f"{perr} errors" if perr else ""))
            rows.append(Row(f"{a.streams} streams TTFC", path, "p99", "ms", ds.get("p99"),
                            ps.get("p99")))
        if "slow" in a.scenarios and not reference:
            name = f"{a.slow_streams} slow streams"
            rows.append(Row(name, path, "errors", "", get(d, "slow", "errors"),
                            get(p, "slow", "errors"), target="0",
                            check=lambda r: r.proxy == 0,
                            note=", ".join(get(p, "slow", "error_kinds") or [])[:120]))
            ds, ps = (report.summary(get(s, "slow", "ttfe") or []) for s in (d, p))
            rows.append(Row(name, path, "TTFC p99", "ms", ds.get("p99"), ps.get("p99"),
                            target="<=100 ms", check=lambda r: r.proxy <= 100))
            stretch = [None, None]
            for i, src in enumerate((d, p)):
                gaps = get(src, "slow", "max_gaps")
                if gaps:
                    stretch[i] = max(gaps) * 1000 - a.slow_interval_ms
            rows.append(Row(name, path, "max gap stretch", "ms", *stretch,
                            target="<=50 ms", check=lambda r: r.proxy <= 50))
            samples = [kib for _t, kib in get(p, "slow", "samples") or [] if kib]
            before = get(p, "slow", "rss_before_kib")
            per = (max(samples) - before) / a.slow_streams if samples and before else None
            rows.append(Row(name, path, "RSS per stream", "KiB", None, per,
                            target="<=30 KiB", check=lambda r: r.proxy <= 30,
                            note=f"RSS {before / 1024:.0f} -> {max(samples) / 1024:.0f} MiB"
                            if per is not None else ""))
        idle = p.get("idle_rss_kib")
        if idle or (p.get("slow") or {}).get("rss_before_kib"):
            idle = idle or p["slow"]["rss_before_kib"]
            rows.append(Row("idle", path, "proxy RSS", "MiB", None, idle / 1024,
                            target="<=80 MB", check=lambda r: r.proxy * 1.048576 <= 80))


def parse_args(argv):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true",
                        help="short run (~1.5 min): fewer requests, 200 slow streams for 3 s")
    parser.add_argument("--scenarios", default=",".join(SCENARIOS),
                        help=f"comma-separated subset of {','.join(SCENARIOS)}")
    parser.add_argument("--paths", default=",".join(PATHS), help="subset of P,O2A,A2O")
    parser.add_argument("--requests", type=int, help="c=1 latency: requests (2000; quick 200)")
    parser.add_argument("--duration", type=float,
                        help="seconds measured for throughput and TTFC (10; quick 2)")
    parser.add_argument("--concurrency", type=int, default=64, help="throughput connections")
    parser.add_argument("--streams", type=int, default=100, help="TTFC concurrent streams")
    parser.add_argument("--ttfc-chunks", type=int,
                        help="chunks per TTFC stream (20)")
    parser.add_argument("--ttfc-delay-ms", type=int, default=50)
    parser.add_argument("--slow-streams", type=int, help="slow streams (1000; quick 200)")
    parser.add_argument("--slow-seconds", type=float, help="slow stream length (30; quick 3)")
    parser.add_argument("--slow-interval-ms", type=int, default=200)
    parser.add_argument("--ramp", type=float,
                        help="seconds over which the slow streams are opened (default: 200 "
                             "new streams per second, so 5 s for 1,000)")
    parser.add_argument("--proxy-env", action="append", default=[], metavar="KEY=VALUE",
                        help="extra environment for the proxy (repeatable)")
    parser.add_argument("--no-pin", action="store_true",
                        help="do not pin proxy / mock+client to separate CPUs")
    parser.add_argument("--nice", type=int, default=0,
                        help="scheduling priority for the proxy, mock and client (e.g. -10 as "
                             "root on a machine shared with other work)")
    parser.add_argument("--direct-only", action="store_true",
                        help="measure the mock directly only (no proxy)")
    parser.add_argument("--no-reference", dest="reference", action="store_false",
                        help="skip the reference servers (bare gevent 'hello' and 'relay')")
    parser.add_argument("--profile", action="store_true",
                        help="repeat the throughput, TTFC and slow-stream loads under py-spy "
                             "and print the proxy's hot spots")
    parser.add_argument("--backends", type=int, default=0, metavar="N",
                        help="the proxy gets a BACKENDS_FILE of N backends, all at the mock (0: BACKEND_*)")
    parser.add_argument("--repo", default=str(procs.BENCH_DIR.parent))
    parser.add_argument("--python", default=sys.executable, help="interpreter for the proxy")
    parser.add_argument("--results-dir", default=str(procs.BENCH_DIR / "results"))
    a = parser.parse_args(argv)
    q = a.quick
    a.requests = a.requests or (200 if q else 2000)
    a.duration = a.duration or (2.0 if q else 10.0)
    a.slow_streams = a.slow_streams or (200 if q else 1000)
    a.slow_seconds = a.slow_seconds or (3.0 if q else 30.0)
    a.ttfc_chunks = a.ttfc_chunks or 20
    a.ramp = a.ramp if a.ramp is not None else a.slow_streams / 200.0
    a.scenarios = [s for s in a.scenarios.split(",") if s]
    a.paths = [p for p in a.paths.split(",") if p]
    for s in a.scenarios:
        if s not in SCENARIOS:
            parser.error(f"unknown scenario {s!r}")
    for p in a.paths:
        if p not in PATHS:
            parser.error(f"unknown path {p!r}")
    env = {}
    for item in a.proxy_env:
        key, sep, value = item.partition("=")
        if not sep:
            parser.error(f"--proxy-env wants KEY=VALUE, got {item!r}")
        env[key] = value
    a.proxy_env = env
    a.stamp = time.strftime("%Y%m%d-%H%M%S")
    if not a.direct_only and not (Path(a.repo) / "wsgi.py").exists():
        print(f"note: {a.repo}/wsgi.py not found: measuring the mock directly only",
              file=sys.stderr)
        a.direct_only = True
    return a


def main(argv=None):
    a = parse_args(argv)
    nofile = procs.raise_fd_limit()
    if a.nice:
        procs.NICE = a.nice
        os.setpriority(os.PRIO_PROCESS, 0, a.nice)
    loop_name = install_loop()
    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    load_before = os.getloadavg()
    if load_before[0] > 0.5:
        print(f"warning: load average {load_before[0]:.2f} before the run: other work shares "
              "the CPUs and the figures will be noisy", file=sys.stderr)
    bench = Bench(a)
    started = time.time()
    try:
        bench.run(loop)
    finally:
        bench.close()
    print(report.table(bench.rows))
    for path, problems in bench.problems.items():
        for problem in problems:
            print(f"PROBLEM {path}: {problem}")
    for path, prof in bench.profiles.items():
        print(report.format_profile(path, prof))
    pin = [sorted(c) if c else None for c in (bench.proxy_cpus, bench.mock_cpus,
                                              bench.client_cpus)]
    print(f"pinning: proxy {pin[0]}, mock {pin[1]}, client {pin[2]}; client loop {loop_name}; "
          f"{time.time() - started:.0f} s")
    data = {"started": time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(started)),
            "seconds": time.time() - started,
            "args": {k: v for k, v in vars(a).items()},
            "machine": dict(report.machine(), nofile=nofile, client_loop=loop_name,
                            loadavg_before=load_before, loadavg_after=os.getloadavg(),
                            pin={"proxy": pin[0], "mock": pin[1], "client": pin[2]}),
            "rows": [r.as_dict() for r in bench.rows],
            "problems": bench.problems,
            "profiles": bench.profiles,
            "summaries": summarize(bench.raw)}
    out = report.write_json(Path(a.results_dir) / f"{a.stamp}.json", data)
    print(f"results: {out}")
    failed = any(r.passed is False for r in bench.rows) or any(bench.problems.values())
    return 1 if failed else 0


def summarize(raw):
    """Raw results without the long per-request lists (those become percentiles)."""
    out = {}
    for path, scenarios in raw.items():
        out[path] = {}
        for name, value in scenarios.items():
            if isinstance(value, dict):
                value = {k: (report.summary(v) if k in ("latencies", "ttfe", "max_gaps")
                             else v) for k, v in value.items() if k != "events"}
            out[path][name] = value
    return out


if __name__ == "__main__":
    sys.exit(main())
