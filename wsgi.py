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
except (ConfigError, StartupError) as exc:
    print(f"llm-proxy: configuration error: {exc}", file=sys.stderr)
    sys.exit(2)

app = create_app(settings)
if __name__ != "__main__":  # a gunicorn worker: `python wsgi.py` probes once it listens
    probe_in_background(app.extensions["llm_proxy"].backend)

# Everything built so far (modules, the app, settings) lives as long as the process: keep it out of
# the cyclic garbage collector's sweeps, and sweep the young generation less often (a request's
# objects are freed by reference counting; the collector only has cycles to find).
gc.collect()
gc.freeze()
gc.set_threshold(7000, 20, 20)


def main() -> None:
    import gevent

    from proxy.server import make_server

    log = logging.getLogger("proxy")
    try:
        server = make_server(settings.host, settings.port, app, error_log=logging.getLogger("proxy.wsgi"))
    except OSError as exc:  # port in use, HOST not of this machine or not resolving, no permission
        print(f"llm-proxy: {listen_error(settings.host, settings.port, exc)}", file=sys.stderr)
        sys.exit(1)

    def stop(signum, frame):
        # Signal handlers run in gevent's hub, where nothing may block: stop from a greenlet.
        log.info("signal %s: stopping (open streams get 5 s to finish)", signum)
        gevent.spawn(server.stop, timeout=5)

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    log.info("listening on http://%s:%d", settings.host, settings.port)
    probe_in_background(app.extensions["llm_proxy"].backend)
    try:
        server.serve_forever()
    finally:
        shutdown = app.extensions["llm_proxy"].extras.get("shutdown")
        if shutdown:
            shutdown()  # flush the log writer's queue before exit
        log.info("stopped")


if __name__ == "__main__":
    main()
