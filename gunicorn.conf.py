"""gunicorn's settings for the proxy, taken from the proxy's own: `gunicorn wsgi:app` (or `gunicorn -k gevent
wsgi:app`) run in this folder reads this file. Options given on gunicorn's command line still win.

- bind: HOST:PORT; worker_class: gevent;
- keepalive: gunicorn's one wait covers both the idle time between requests and the arrival of a request
  head, so it is the smaller of KEEPALIVE_TIMEOUT and HEADER_TIMEOUT;
- worker_connections: MAX_CONNECTIONS per worker (beyond it gunicorn stops accepting until one ends: the
  kernel's backlog queues newcomers, as under `python wsgi.py`);
- request heads: at most 100 header lines of 8190 bytes, a request line of 8190 bytes (gunicorn's parser
  also refuses ambiguous framing with 400, see tests/server/test_gunicorn.py);
- the open-file soft limit is raised to the hard limit before the workers start;
- graceful stop (SIGTERM): gunicorn stops accepting and lets requests run; after DRAIN_TIMEOUT the requests
  still running are ended as under `python wsgi.py` (streams get a final error chunk in their dialect, all
  are recorded as cancelled) and each worker writes its log queue (bounded) before it exits.
  graceful_timeout is DRAIN_TIMEOUT plus the time for that.
- several workers (`-w N`, N > 1): `/metrics` reports the whole server. The master points
  PROMETHEUS_MULTIPROC_DIR at a folder (its own, made here and removed at exit, unless the variable is set)
  before the workers start, empties it at start, and marks each worker that exits as dead (its gauges leave
  the sums; its counts stay). LOG_FILE_MAX_MB is refused then: each worker would rotate the shared file on
  its own (LOG_FILE with SIGHUP — a graceful reload of the workers — is the safe way, see docs/operations.md).

This file reads the settings without importing the application: gunicorn's master must not load gevent
before its workers patch the standard library.
"""
from __future__ import annotations

import glob
import math
import os
import resource
import shutil
import sys
import tempfile
import time

END_GRACE_S = 3.0  # proxy.server.END_GRACE_S: ended requests send their last chunk
FLUSH_TIMEOUT_S = 5.0  # proxy.draining.FLUSH_TIMEOUT_S: the log writer's last write


def _settings() -> dict:
    """HOST, PORT and the connection settings, parsed by the proxy's own SETTINGS table (``proxy.config``
    imports nothing of the application)."""
    from dotenv import load_dotenv

    here = os.path.dirname(os.path.abspath(__file__))
    if here not in sys.path:  # started from elsewhere (`-c …/gunicorn.conf.py --chdir …`): gunicorn adds it later
        sys.path.insert(0, here)
    from proxy.config import SETTINGS

    env_file = os.path.join(os.getcwd(), ".env")
    if os.path.isfile(env_file):
        load_dotenv(env_file, override=False)  # as wsgi.py does: the working directory's .env; set variables win
    wanted = {"HOST", "PORT", "HEADER_TIMEOUT", "KEEPALIVE_TIMEOUT", "MAX_CONNECTIONS", "DRAIN_TIMEOUT", "LOG_FILE",
              "LOG_FILE_MAX_MB"}
    values, problems = {}, []
    for setting in SETTINGS:
        if setting.env in wanted:
            raw = os.environ.get(setting.env, setting.default)
            try:
                values[setting.env] = setting.parse(raw)
            except ValueError as exc:
                problems.append(f"{setting.env}={raw!r} is not valid: expected {exc}")
    if problems:
        print("llm-proxy: configuration error: " + "; ".join(problems), file=sys.stderr)
        sys.exit(2)
    return values


def _raise_open_file_limit() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and (hard == resource.RLIM_INFINITY or soft < hard):
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
        except (ValueError, OSError):
            pass


_s = _settings()
_raise_open_file_limit()

bind = [f"[{_s['HOST']}]:{_s['PORT']}" if ":" in _s["HOST"] else f"{_s['HOST']}:{_s['PORT']}"]
worker_class = "gevent"
worker_connections = _s["MAX_CONNECTIONS"]
keepalive = max(1, math.ceil(min(_s["KEEPALIVE_TIMEOUT"], _s["HEADER_TIMEOUT"])))
limit_request_line = 8190
limit_request_fields = 100
limit_request_field_size = 8190
drain_timeout = _s["DRAIN_TIMEOUT"]
graceful_timeout = math.ceil(drain_timeout + END_GRACE_S + FLUSH_TIMEOUT_S + 2)


MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"  # proxy.metrics.MULTIPROC_ENV
MADE_ENV = "LLM_PROXY_MADE_METRICS_DIR"  # the folder on_starting made, removed at exit (kept across config reloads)


def on_starting(server) -> None:
    """Before the workers start: with several, their shared metrics folder, empty; no size rotation of LOG_FILE."""
    several = server.cfg.workers > 1
    if several and _s["LOG_FILE"] and _s["LOG_FILE_MAX_MB"]:
        print("llm-proxy: configuration error: LOG_FILE_MAX_MB rotates LOG_FILE from each of the "
              f"{server.cfg.workers} workers on its own, which loses lines: set LOG_FILE_MAX_MB=0 and rotate with "
              "logrotate and SIGHUP (docs/operations.md), or run one worker", file=sys.stderr)
        sys.exit(2)
    folder = os.environ.get(MULTIPROC_ENV)
    if not folder and several:
        folder = os.environ[MADE_ENV] = tempfile.mkdtemp(prefix="llm-proxy-metrics-")
        os.environ[MULTIPROC_ENV] = folder  # the workers, forked from here, inherit it
    if folder:
        os.makedirs(folder, exist_ok=True)
        for path in glob.glob(os.path.join(folder, "*.db")):  # a previous run's values
            os.remove(path)
        if "prometheus_client" in sys.modules and os.environ.get(MADE_ENV):
            server.log.warning("the application was loaded before the workers (--preload): /metrics reports "
                               "the worker that answers, not the whole server")


def child_exit(server, worker) -> None:
    """A worker ended: its live gauges (requests in flight, queues) leave the sums."""
    if os.environ.get(MULTIPROC_ENV):
        from prometheus_client import multiprocess

        multiprocess.mark_process_dead(worker.pid)


def on_exit(server) -> None:
    folder = os.environ.get(MADE_ENV)
    if folder and folder == os.environ.get(MULTIPROC_ENV):
        shutil.rmtree(folder, ignore_errors=True)


def post_worker_init(worker) -> None:
    """Watch for the worker's graceful stop: after DRAIN_TIMEOUT (or less, when gunicorn's own graceful
    timeout was set shorter on its command line) end the requests still running."""
    import gevent

    from proxy import draining

    window = max(0.0, min(drain_timeout, worker.cfg.graceful_timeout - END_GRACE_S - FLUSH_TIMEOUT_S - 1))

    def watch() -> None:
        while worker.alive:
            gevent.sleep(0.2)
        deadline = time.monotonic() + window
        while draining.running() and time.monotonic() < deadline:
            gevent.sleep(0.1)
        if draining.running():
            ended = draining.end_running()
            worker.log.warning("drain time over: %d running requests ended as cancelled", ended)

    gevent.spawn(watch)


def worker_int(worker) -> None:
    """A quick stop (SIGINT/SIGQUIT): end the running requests now, give them a moment to send their last
    chunk, and write the log queue."""
    import gevent

    from proxy import draining

    if draining.end_running():
        gevent.sleep(0.5)
    draining.flush_log(worker.wsgi)


def worker_exit(server, worker) -> None:
    """Write what the log writer still has queued, within FLUSH_TIMEOUT_S even if the database hangs."""
    app = getattr(worker, "wsgi", None)
    if app is None or not hasattr(app, "extensions"):
        return
    from proxy import draining

    if not draining.flush_log(app):
        os._exit(0)
