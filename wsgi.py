"""Entry point. `python wsgi.py` serves with gevent's WSGIServer; `gunicorn -k gevent wsgi:app` works too."""
from gevent import monkey

monkey.patch_all()

import gc  # noqa: E402
import logging  # noqa: E402
import signal  # noqa: E402
import sys  # noqa: E402

from proxy import create_app  # noqa: E402
from proxy.config import ConfigError, Settings  # noqa: E402
from proxy.startup import StartupError, listen_error, load_env_file, probe_in_background  # noqa: E402

try:
    load_env_file()  # ./.env of the working directory; variables already set win
    settings = Settings.from_env()
    app = create_app(settings)  # a KEYS_FILE whose tables are wrong is found here
except (ConfigError, StartupError) as exc:
    print(f"llm-proxy: configuration error: {exc}", file=sys.stderr)
    sys.exit(2)

if __name__ != "__main__":  # a gunicorn worker: `python wsgi.py` probes once it listens
    probe_in_background(app.extensions["llm_proxy"].backend)

# Everything built so far (modules, the app, settings) lives as long as the process: keep it out of
# the cyclic garbage collector's sweeps, and sweep the young generation less often (a request's
# objects are freed by reference counting; the collector only has cycles to find).
gc.collect()
gc.freeze()
gc.set_threshold(7000, 20, 20)


def main() -> None:
    import os

    from gevent.event import Event

    from proxy import draining
    from proxy.accesslog import reopen_log_files
    from proxy.server import make_server

    log = logging.getLogger("proxy")
    try:
        server = make_server(settings.host, settings.port, app, error_log=logging.getLogger("proxy.wsgi"),
                             max_connections=settings.max_connections, header_timeout=settings.header_timeout,
                             keepalive_timeout=settings.keepalive_timeout)
    except OSError as exc:  # port in use, HOST not of this machine or not resolving, no permission
        print(f"llm-proxy: {listen_error(settings.host, settings.port, exc)}", file=sys.stderr)
        sys.exit(1)

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


if __name__ == "__main__":
    main()
