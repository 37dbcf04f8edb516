"""Where a stream's memory goes: tracemalloc snapshots of a proxy holding N slow streams.

Starts a mock upstream and a proxy (`python wsgi.py` under `-X tracemalloc`), takes a snapshot
before the streams and one with all of them open, and prints what grew, per stream, grouped by
the allocating line (`--group traceback` groups by the top frames instead). RSS is printed
beside the traced total: the gap is what Python's allocator does not see (fragmentation, libev
watchers, zlib state).

Run: python bench/memprobe.py --path O2A --streams 200 --seconds 8 [--top 30] [--frames 4]
"""

import argparse
import asyncio
import os
import pickle
import signal
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH))

if __name__ == "__main__" and sys.argv[1:2] == ["--serve"]:
    # Inside the proxy process: serve as `python wsgi.py` does, snapshot on SIGUSR1.
    sys.path.insert(0, os.getcwd())
    sys.argv = ["wsgi.py"]
    import wsgi  # noqa: E402  (monkey-patches first)

    count = [0]

    def dump(signum, frame):
        count[0] += 1
        snap = tracemalloc.take_snapshot()
        with open(f"{os.environ['MEMPROBE_DIR']}/snap{count[0]}.pickle", "wb") as fh:
            pickle.dump(snap, fh)

    def stacks(signum, frame):
        # The deepest suspended stack of the handler greenlets, innermost last.
        import gc

        import greenlet
        best = []
        for g in gc.get_objects():
            if isinstance(g, greenlet.greenlet) and g.gr_frame is not None:
                chain, f = [], g.gr_frame
                while f is not None:
                    chain.append(f"{Path(f.f_code.co_filename).name}:{f.f_lineno} {f.f_code.co_name}")
                    f = f.f_back
                best = max(best, chain, key=len)
        with open(f"{os.environ['MEMPROBE_DIR']}/stack.txt", "w") as fh:
            fh.write("\n".join(reversed(best)) + "\n")

    signal.signal(signal.SIGUSR1, dump)
    signal.signal(signal.SIGUSR2, stacks)
    wsgi.main()
    sys.exit(0)

import loadgen  # noqa: E402
import procs  # noqa: E402
import run as bench_run  # noqa: E402


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--path", default="O2A", choices=sorted(bench_run.PATHS))
    ap.add_argument("--streams", type=int, default=200)
    ap.add_argument("--seconds", type=float, default=8.0)
    ap.add_argument("--ramp", type=float, default=2.0)
    ap.add_argument("--interval-ms", type=int, default=200)
    ap.add_argument("--frames", type=int, default=1)
    ap.add_argument("--group", default="lineno", choices=["lineno", "traceback", "filename"])
    ap.add_argument("--top", type=int, default=30)
    ap.add_argument("--proxy-env", action="append", default=[], metavar="KEY=VALUE")
    a = ap.parse_args()

    procs.raise_fd_limit()
    tmp = tempfile.mkdtemp(prefix="memprobe-")
    backend = bench_run.PATHS[a.path][0]
    chunks = int(a.seconds * 1000 / a.interval_ms)
    mock, mock_port = procs.start_mock(chunks, a.interval_ms, None, tmp)[:2]
    extra = dict(kv.split("=", 1) for kv in a.proxy_env)
    port = procs.free_port()
    env = dict(os.environ, MEMPROBE_DIR=tmp, PYTHONTRACEMALLOC=str(a.frames), HOST="127.0.0.1",
               PORT=str(port), BACKEND_TYPE=backend, BACKEND_URL=f"http://127.0.0.1:{mock_port}",
               DATABASE_URL=f"sqlite:///{tmp}/memprobe.db", LOG_LEVEL="WARNING", **extra)
    proxy = procs._start_server("proxy", [sys.executable, str(BENCH / "memprobe.py"), "--serve"],
                                env, str(BENCH.parent), None, tmp, port, 60)[0]
    loop = asyncio.new_event_loop()
    try:
        loop.run_until_complete(loadgen.latency(bench_run.chat_target(
            "warm", port, bench_run.PATHS[a.path][1], bench_run.PATHS[a.path][2], False), 50, 0))
        time.sleep(0.5)
        rss0 = procs.rss_kib(proxy.pid)
        os.kill(proxy.pid, signal.SIGUSR1)
        time.sleep(1.0)
        target = bench_run.chat_target("probe", port, bench_run.PATHS[a.path][1],
                                       bench_run.PATHS[a.path][2], True)
        marks = {}

        def sample():
            t = time.monotonic() - t0
            if "open" not in marks and t > a.ramp + 1.0:
                marks["open"] = procs.rss_kib(proxy.pid)
                os.kill(proxy.pid, signal.SIGUSR1)
                os.kill(proxy.pid, signal.SIGUSR2)
            return procs.rss_kib(proxy.pid)

        t0 = time.monotonic()
        res = loop.run_until_complete(loadgen.slow_streams(target, a.streams, a.ramp, a.seconds,
                                                           sample=sample, sample_every=0.25))
        time.sleep(1.0)
        peak = max(k for _t, k in res["samples"])
    finally:
        proxy.stop()
        mock.stop()
    snaps = [pickle.loads(Path(f"{tmp}/snap{i}.pickle").read_bytes()) for i in (1, 2)]
    filt = [tracemalloc.Filter(False, tracemalloc.__file__)]
    s1, s2 = (s.filter_traces(filt) for s in snaps)
    stats = s2.compare_to(s1, a.group)
    total = sum(s.size_diff for s in stats)
    n = a.streams
    print(f"{a.path}: {n} streams, errors {res['errors']}")
    print(f"RSS: before {rss0} KiB, all open {marks.get('open')} KiB "
          f"(+{(marks.get('open', rss0) - rss0) / n:.1f} KiB/stream), peak {peak} KiB "
          f"(+{(peak - rss0) / n:.1f} KiB/stream)")
    print(f"traced growth with all open: {total / 1024 / n:.1f} KiB/stream")
    print("a stream's suspended stack (outermost first):")
    print(Path(f"{tmp}/stack.txt").read_text())
    for s in stats[:a.top]:
        where = s.traceback.format()[-1].strip() if a.group != "traceback" else \
            " <- ".join(f"{Path(f.filename).name}:{f.lineno}" for f in s.traceback)
        print(f"{s.size_diff / n:8.0f} B {s.count_diff / n:6.1f} obj  {where}")


if __name__ == "__main__":
    main()
