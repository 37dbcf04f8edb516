"""Serving with gevent's WSGIServer, as `python wsgi.py`, `python -m proxy` and `llm-proxy` do: the application
built from ready settings (a bad one is one line and exit status 2), the heap settled, then listen, answer
SIGTERM/SIGINT with a drain, and write the log queue. The standard library must already be patched by gevent.
"""
from __future__ import annotations

import gc
import logging
import os
import signal
import sys
from typing import Any, NoReturn

from .config import ConfigError, Settings
from .startup import StartupError, listen_error, probe_in_background

log = logging.getLogger("proxy")


def fail(message: str, status: int) -> NoReturn:
    """One line on stderr and the exit status: never a traceback for what the operator can fix."""
    print(f"llm-proxy: {message}", file=sys.stderr)
    sys.exit(status)


def app_from_environment() -> Any:
    """The application of a gunicorn worker: settings from the environment and the working directory's
    ``.env`` (no flags there); the backend probed once the worker runs."""
    from .startup import load_env_file

    try:
        load_env_file()  # ./.env of the working directory; variables already set win
        settings = Settings.from_env()
    except (ConfigError, StartupError) as exc:
        fail(f"configuration error: {exc}", 2)
    app = build_app(settings)
    probe_in_background(app.extensions["llm_proxy"].backend)
    return app


def build_app(settings: Settings) -> Any:
    """The application (a KEYS_FILE or BACKENDS_FILE whose tables are wrong is found here), heap settled."""
    from . import create_app

    try:
        app = create_app(settings)
    except (ConfigError, StartupError) as exc:
        fail(f"configuration error: {exc}", 2)
    settle_heap()
    return app


def settle_heap() -> None:
    """Everything built so far (modules, the app, settings) lives as long as the process: keep it out of the
    cyclic garbage collector's sweeps, and sweep the young generation less often (a request's objects are
    freed by reference counting; the collector only has cycles to find)."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(7000, 20, 20)


def run(app: Any, settings: Settings) -> None:
    """Listen on HOST:PORT until SIGTERM/SIGINT, then drain for DRAIN_TIMEOUT and write the log queue."""
    from gevent.event import Event

    from . import draining
    from .accesslog import reopen_log_files
    from .server import make_server

    try:
        server = make_server(settings.host, settings.port, app, error_log=logging.getLogger("proxy.wsgi"),
                             max_connections=settings.max_connections, header_timeout=settings.header_timeout,
                             keepalive_timeout=settings.keepalive_timeout)
    except OSError as exc:  # port in use, HOST not of this machine or not resolving, no permission
        fail(listen_error(settings.host, settings.port, exc), 1)

    stopping, hurry = Event(), Event()

    def stop(signum, frame):
        # Signal handlers run in gevent's hub, where nothing may block: only say what to do.
        if stopping.is_set():
            log.info("signal %s again: ending running requests now", signum)
            hurry.set()
            return
        log.info("signal %s: stopping; running requests get %g s to finish (DRAIN_TIMEOUT)", signum,
                 settings.drain_timeout)
        stopping.set()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    signal.signal(signal.SIGHUP, lambda signum, frame: reopen_log_files())  # logrotate renamed LOG_FILE
    log.info("listening on http://%s:%d", settings.host, settings.port)
    probe_in_background(app.extensions["llm_proxy"].backend)
    server.start()
    try:
        stopping.wait()
        server.drain(settings.drain_timeout, hurry)  # see Server.drain: streams past it end with an error chunk
    finally:
        if not draining.flush_log(app):  # bounded: a database that does not answer must not hold the exit
            logging.shutdown()
            os._exit(0)
        log.info("stopped")
