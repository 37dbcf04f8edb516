"""What the gate (API keys + limits) adds to a request, in-process: memory and Redis counters.

Two measurements, each as p50/p90 over many calls, configurations interleaved in rounds so that machine
noise hits them alike:

* ``wsgi``: a whole request through the app's WSGI callable (access log, gate, view, stub backend) —
  `GET /v1/models` and a non-streamed `POST /v1/chat/completions` — with the gate off and on; the
  difference of the p50s is what the gate costs a request.
* ``check``: the gate's own work alone — key lookup, size check, limits admission and settlement — called
  directly, without Flask.
* ``http`` (with --http or --http-only): a gevent WSGIServer per configuration in its own process (as
  `python wsgi.py`, plus TCP_NODELAY: without it every keep-alive request waits ~40 ms for a delayed ACK,
  which would hide everything else), one keep-alive connection each, `GET /v1/models` and a metered
  `POST /v1/chat/completions` — the whole real path, noisier.

The process runs under gevent, as the proxy is served. With Redis every gated request waits for one round
trip (the admission script). Two references measure that round trip alone: a bare redis-py PING in a tight
loop (pooled, and on a connection of its own, as the gate's), and, in the ``wsgi`` tables, "one PING (reference)":
the gate switched off and a hook that sends one PING on a connection of its own at the point where the gate
would admit. A Redis row minus that row is what the gate does on its own: a round trip made after a request's
other work costs more than one in a tight loop (Redis and the socket are no longer hot).

    python bench/bench_policy.py [--rounds 20] [--per-round 200] [--redis redis://127.0.0.1:6379/0]
                                 [--http | --http-only] [--json out.json]

Redis comes from --redis, else BENCH_REDIS_URL / TEST_REDIS_URL, else redis://127.0.0.1:6379/0; its rows
are left out (and said so) when it does not answer. The budget is 0.2 ms p50 (issue 4).
"""
from __future__ import annotations

import sys

if __name__ == "__main__" and "--http-only" not in sys.argv:  # as the proxy is served: gevent, patched before
    from gevent import monkey  # anything imports (the HTTP client is plain)

    monkey.patch_all()

import argparse
import io
import json
import os
import statistics
import subprocess
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from gevent import sleep as gevent_sleep  # noqa: E402  (a plain time.sleep(0) where gevent is not patched in)
from werkzeug.test import EnvironBuilder  # noqa: E402

from proxy import create_app  # noqa: E402
from proxy.config import Settings  # noqa: E402

SECRETS = [f"sk-bench-{i:04d}-{'x' * 24}" for i in range(50)]
KEYS = ",".join(f"user{i}:{key}" for i, key in enumerate(SECRETS))
BUDGET_MS = 0.2
REFERENCE = "one PING (reference)"  # the gate off, one PING where it would admit
RATE = "6000/minute"  # per key; calls rotate over the 50 keys, so no call is refused
ALL_LIMITS = """
[defaults]
models = ["stub*"]
tpm = 100000000
daily_tokens = 1000000000
concurrency = 100
"""


def configs(redis_url: str | None, tmp: Path) -> dict[str, dict[str, str]]:
    keys_file = tmp / "keys.toml"
    keys_file.write_text(ALL_LIMITS)
    keys = KEYS.replace("user", f"u{uuid.uuid4().hex[:6]}-")  # fresh names: no counters from earlier runs
    out = {
        "off": {},
        "keys": {"API_KEYS": keys},
        "keys+rate (memory)": {"API_KEYS": keys, "RATE_LIMIT": RATE},
        "keys+all limits (memory)": {"API_KEYS": keys, "RATE_LIMIT": RATE, "KEYS_FILE": str(keys_file)},
    }
    if redis_url:
        # each Redis configuration is a deployment of its own: its own database
        db = [redis_db(redis_url, n) for n in range(1, 4)]
        out["keys+rate (redis)"] = {**out["keys+rate (memory)"], "REDIS_URL": db[0]}
        out["keys+rate fixed-window (redis)"] = {**out["keys+rate (redis)"], "RATE_LIMIT_STRATEGY": "fixed-window",
                                                 "REDIS_URL": db[1]}
        out["keys+all limits (redis)"] = {**out["keys+all limits (memory)"], "REDIS_URL": db[2]}
    return out


def redis_db(url: str, db: int) -> str:
    from urllib.parse import urlsplit, urlunsplit

    parts = urlsplit(url)
    return urlunsplit((parts.scheme, parts.netloc, f"/{db}", parts.query, parts.fragment))


def make_app(env: dict[str, str], tmp: Path):
    base = {"BACKEND_TYPE": "stub", "STUB_DELAY_MS": "0", "LOG_LEVEL": "ERROR", "LOG_ENABLED": "false",
            "DATABASE_URL": f"sqlite:///{tmp}/bench.db", "LOG_CLEANUP_MINUTES": "0"}
    return create_app(Settings.from_env({**base, **env}))


class Call:
    """One prepared request: a fresh environ from a template (keys taken in turn), run through the WSGI app."""

    def __init__(self, app: Any, method: str, path: str, body: bytes | None, keys: list[str | None]):
        self.templates = []
        for key in keys:
            headers = {"Authorization": f"Bearer {key}"} if key else {}
            builder = EnvironBuilder(path=path, method=method, data=body, headers=headers,
                                     content_type="application/json" if body else None,
                                     environ_base={"REMOTE_ADDR": "10.1.2.3"})
            self.templates.append(builder.get_environ())
        self.turn = 0
        self.body = body or b""
        self.app = app
        self.status = ""

    def _start(self, status, headers, exc_info=None):
        self.status = status

    def __call__(self) -> Callable[[], None]:
        """Run the request up to its last byte; return the server's close(), which runs after the answer went
        out (and is not on the client's clock)."""
        self.turn = (self.turn + 1) % len(self.templates)
        environ = dict(self.templates[self.turn])
        environ["wsgi.input"] = io.BytesIO(self.body)
        result = self.app(environ, self._start)
        try:
            for _ in result:
                pass
        except BaseException:
            result.close()
            raise
        if not self.status.startswith("200"):
            raise RuntimeError(f"benchmark request answered {self.status}")
        return result.close


def percentiles(samples: list[float]) -> dict[str, float]:
    samples = sorted(samples)
    return {"p50_ms": round(statistics.median(samples) * 1000, 4),
            "p90_ms": round(samples[int(len(samples) * 0.9)] * 1000, 4), "n": len(samples)}


def off_the_clock(after: Any) -> None:
    """A call's after-part (a response's close: settlement), then a turn for other greenlets, as a server gets
    while it waits for the next request."""
    if callable(after):
        after()
    gevent_sleep(0)


def interleave(calls: dict[str, Callable[[], Any]], rounds: int, per_round: int) -> dict[str, dict[str, float]]:
    """Time each call; what a call returns (a response's close) runs after the clock stopped."""
    samples: dict[str, list[float]] = {name: [] for name in calls}
    clock = time.perf_counter
    for fn in calls.values():  # warm-up: catalogs, Redis scripts, connections
        for _ in range(50):
            off_the_clock(fn())
        time.sleep(0.2)
    for _ in range(rounds):
        for name, fn in calls.items():
            bucket = samples[name]
            for _ in range(per_round):
                start = clock()
                after = fn()
                bucket.append(clock() - start)
                off_the_clock(after)
    return {name: percentiles(values) for name, values in samples.items()}


def check_calls(apps: dict[str, Any]) -> tuple[dict[str, Callable[[], None]], dict[str, Callable[[], None]]]:
    """The gate's work without Flask: authenticate + admit, as the gate does for a generation (on the request's
    clock), and, apart, the settlement of a finished request (12 tokens charged, slot freed)."""
    environs = [{"HTTP_AUTHORIZATION": f"Bearer {key}"} for key in SECRETS]
    admit, settle = {}, {}
    for name, app in apps.items():
        if name == "off":
            continue
        policy = app.extensions["llm_proxy"].extras["policy"]
        turn = [0]
        pending: list = []

        def one(policy=policy, turn=turn, pending=pending) -> None:
            turn[0] = (turn[0] + 1) % len(environs)
            caller = policy.authenticate(environs[turn[0]], "10.1.2.3")
            ticket = policy.limiter.admit(caller.who, caller.label, caller.rules)  # a generation: every limit
            pending.append(ticket)

        def done(policy=policy, pending=pending) -> None:
            if pending:
                policy.limiter.settle(pending.pop(), 12)
        admit[name], settle[name] = one, done
    return admit, settle


def report(title: str, results: dict[str, dict[str, float]], baseline: str | None, budget: bool = True) -> list[str]:
    lines = [f"\n{title}", f"{'configuration':32} {'p50 ms':>8} {'p90 ms':>8} {'+p50 ms':>8}  verdict"]
    base = results[baseline]["p50_ms"] if baseline else 0.0
    for name, row in results.items():
        extra = row["p50_ms"] - base
        verdict = "" if name == baseline or not budget else ("ok" if extra <= BUDGET_MS else "OVER 0.2 ms")
        lines.append(f"{name:32} {row['p50_ms']:8.3f} {row['p90_ms']:8.3f} {extra:8.3f}  {verdict}")
    return lines


CHAT = json.dumps({"model": "stub", "messages": [{"role": "user", "content": "two words"}]}).encode()


def http_calls(envs: dict[str, dict[str, str]], tmp: Path
               ) -> tuple[dict[str, Callable[[], None]], dict[str, Callable[[], None]], list]:
    """`python wsgi.py` per configuration; a call is one GET /v1/models (a listing: the request rate only) or
    one non-streamed POST /v1/chat/completions (metered: every limit) on that server's keep-alive connection.
    Keys are taken in turn, as in the in-process calls."""
    import socket
    import subprocess

    from procs import healthy_connection

    procs, calls, chats = [], {}, {}
    for n, (name, env) in enumerate(envs.items()):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        full = {**os.environ, "BACKEND_TYPE": "stub", "STUB_DELAY_MS": "0", "LOG_LEVEL": "WARNING",
                "LOG_ENABLED": "false", "DATABASE_URL": f"sqlite:///{tmp}/http-{n}.db", "HOST": "127.0.0.1",
                "PORT": str(port), **env}
        procs.append(subprocess.Popen([sys.executable, __file__, "--serve"], cwd=ROOT, env=full,
                                      stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        headers = [{"Authorization": f"Bearer {key}"} for key in SECRETS] if "API_KEYS" in env else [{}]
        conn = healthy_connection(port)
        turn = [0]

        def one(method: str, body: bytes | None, conn=conn, headers=headers, turn=turn) -> None:
            turn[0] = (turn[0] + 1) % len(headers)
            extra = {"Content-Type": "application/json"} if body else {}
            conn.request(method, "/v1/models" if body is None else "/v1/chat/completions", body=body,
                         headers={**headers[turn[0]], **extra})
            resp = conn.getresponse()
            resp.read()
            if resp.status != 200:
                raise RuntimeError(f"benchmark request answered {resp.status}")
        calls[name] = lambda one=one: one("GET", None)
        chats[name] = lambda one=one: one("POST", CHAT)
    return calls, chats, procs


def serve() -> None:
    """--serve: what `python wsgi.py` does — gevent, settings from the environment, the proxy's own server
    handler (TCP_NODELAY) and its garbage-collector settings."""
    import gc

    from proxy.server import make_server

    settings = Settings.from_env()
    app = create_app(settings)
    gc.collect()
    gc.freeze()
    gc.set_threshold(7000, 20, 20)
    make_server(settings.host, settings.port, app).serve_forever()


def redis_or_none(url: str) -> str | None:
    try:
        import redis

        redis.Redis.from_url(url, socket_timeout=1, socket_connect_timeout=1).ping()
        return url
    except Exception as exc:  # noqa: BLE001 - any failure just leaves the Redis rows out
        print(f"(Redis at {url} does not answer: {exc}; Redis rows left out)")
        return None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--per-round", type=int, default=200)
    parser.add_argument("--redis", default=os.environ.get("BENCH_REDIS_URL") or os.environ.get("TEST_REDIS_URL")
                        or "redis://127.0.0.1:6379/0")
    parser.add_argument("--http", action="store_true", help="also measure through `python wsgi.py` on a socket")
    parser.add_argument("--http-only", action="store_true", help="only the --http measurement")
    parser.add_argument("--json", help="also write the figures to this file")
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="bench-policy-"))
    redis_url = redis_or_none(args.redis)
    envs = configs(redis_url, tmp)
    results: dict[str, Any] = {}
    lines = [f"gate cost, {args.rounds} rounds x {args.per_round} calls per configuration, interleaved"]
    if not args.http_only:
        in_process(envs, tmp, args, results, lines, redis_url)
    if args.http and not args.http_only:  # a plain (unpatched) client process of its own, like the load generator
        out = tmp / "http.json"
        subprocess.run([sys.executable, __file__, "--http-only", "--rounds", str(args.rounds), "--per-round",
                        str(args.per_round), "--redis", args.redis, "--json", str(out)], check=True)
        results.update(json.loads(out.read_text()))
    elif args.http_only:
        calls, chats, procs = http_calls(envs, tmp)
        try:
            results["http"] = interleave(calls, args.rounds, args.per_round)
            results["http chat"] = interleave(chats, args.rounds, args.per_round)
        finally:
            for proc in procs:
                proc.terminate()
        lines += report("http: GET /v1/models through a gevent server (keep-alive socket)", results["http"], "off")
        lines += report("http: POST /v1/chat/completions (stub, whole answer; metered: every limit)",
                        results["http chat"], "off")
        print("\n".join(lines[-(len(results["http"]) + len(results["http chat"]) + 4):]))
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))


def in_process(envs: dict[str, dict[str, str]], tmp: Path, args: Any, results: dict, lines: list[str],
               redis_url: str | None) -> None:
    apps = {name: make_app(env, tmp) for name, env in envs.items()}
    if redis_url:
        import redis

        own = redis.Redis.from_url(redis_url, single_connection_client=True)
        apps[REFERENCE] = make_app(envs["off"], tmp)
        apps[REFERENCE].before_request(lambda: (own.ping(), None)[1])  # one round trip where the gate admits
    for label, method, path, body in (("GET /v1/models", "GET", "/v1/models", None),
                                      ("POST /v1/chat/completions (stub, whole answer)", "POST",
                                       "/v1/chat/completions",
                                       json.dumps({"model": "stub", "messages": [{"role": "user",
                                                                                  "content": "two words"}]}).encode())):
        calls = {}
        for name, app in apps.items():
            names = app.extensions["llm_proxy"].extras["policy"].key_names()
            calls[name] = Call(app, method, path, body, SECRETS if names else [None])
        results[label] = interleave(calls, args.rounds, args.per_round)
        lines += report(f"wsgi: {label}", results[label], "off")
        if redis_url:
            trip = results[label][REFERENCE]["p50_ms"]
            lines += [f"{name:32} own: {row['p50_ms'] - trip:+.3f} ms over one PING in a request"
                      for name, row in results[label].items() if "redis" in name]
    if redis_url:
        pings = {"redis-py PING, pooled": redis.Redis.from_url(redis_url).ping, "redis-py PING, own connection":
                 redis.Redis.from_url(redis_url, single_connection_client=True).ping}
        results["redis PING (reference)"] = interleave(pings, args.rounds, args.per_round)
        lines += report("reference: one redis-py round trip (PING) in a tight loop", results["redis PING (reference)"],
                        None)
    admit, settle = check_calls({name: app for name, app in apps.items() if name != REFERENCE})
    results["check: admit"] = interleave(admit, args.rounds, args.per_round)
    lines += report("check: authenticate + admit (on the request's clock), no Flask", results["check: admit"], None)
    results["check: settle"] = interleave(settle, args.rounds, args.per_round)
    lines += report("check: settle a finished request (after its answer went out)",
                    results["check: settle"], None, budget=False)
    print("\n".join(lines))


if __name__ == "__main__":
    serve() if sys.argv[1:] == ["--serve"] else main()
