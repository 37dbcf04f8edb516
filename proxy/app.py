"""The application factory: settings -> backend, catalog, log sinks, blueprints, error rendering."""
from __future__ import annotations

import logging

from flask import Flask, Response, request
from flask_cors import CORS
from werkzeug.exceptions import HTTPException

from .accesslog import AccessLog, BodyLog, configure_logging, printable
from .backends import make_backend
from .backendswatch import BackendsWatcher
from .cache import make_cache
from .catalog import Catalog, PoolCatalog
from .config import Settings
from .errors import ProxyError
from .forwarded import Forwarded
from .hostguard import Origins, install_host_guard
from .metrics import Metrics
from .policy.gate import install_policy
from .recording import dialect_of_path
from .render import http_exception_to_proxy_error, render_error
from .services import Services
from .store import init_app as init_store
from .views import register_blueprints
from .views.caching import install_cache
from .webhooks import init_app as init_webhooks

log = logging.getLogger(__name__)


def create_app(settings: Settings | None = None) -> Flask:
    settings = settings or Settings.from_env()
    configure_logging(settings)
    app = Flask(__name__)
    app.config["MAX_CONTENT_LENGTH"] = None
    pool = watcher = None
    if settings.backends_file:
        watcher = BackendsWatcher(settings.backends_file, settings, make_backend)
        pool = watcher.pool
        backend = pool.members[0].backend  # a record's backend until routing picks one (the views read the pool)
        catalog: Catalog | PoolCatalog = PoolCatalog(pool, settings.client_aliases())
    else:
        backend = make_backend(settings)
        catalog = Catalog(backend.list_models, settings.client_aliases(), settings.backend_model_for,
                          settings.model_list_ttl)
    app.extensions["llm_proxy"] = Services(settings=settings, backend=backend, catalog=catalog, pool=pool)
    svc = app.extensions["llm_proxy"]
    metrics = Metrics(app.url_map, catalog.is_known, lambda: svc.pool)
    app.extensions["llm_proxy"].extras["metrics"] = metrics
    app.extensions["llm_proxy"].sinks.append(metrics.observe)
    body_log = BodyLog(settings)
    if body_log.enabled:
        app.extensions["llm_proxy"].sinks.append(body_log)
    init_store(app, app.extensions["llm_proxy"])
    init_webhooks(app.extensions["llm_proxy"], metrics.registry)
    if watcher is not None:
        _start_pool(app.extensions["llm_proxy"], watcher)
    install_host_guard(app, settings)  # before the gate: a refused page or name costs no limit and no key check
    install_policy(app, settings)
    if settings.cors_origins:
        origins = Origins(settings.cors_origins).for_flask_cors()  # anchored patterns, never bare strings
        CORS(app, resources={r"/api/*": {"origins": origins}, r"/v1/*": {"origins": origins}},
             supports_credentials=False, send_wildcard=True, expose_headers=["X-Request-ID", "Retry-After", "X-Cache"],
             max_age=600)
    register_blueprints(app)
    install_cache(app, make_cache(settings, metrics.registry))
    _register_error_handlers(app)
    app.wsgi_app = Forwarded(AccessLog(app.wsgi_app, settings), settings)  # type: ignore[method-assign]
    log.info("LLM Proxy ready: %s", backend.describe() if pool is None else
             ", ".join(m.describe() for m in pool.members))  # the stub has no URL: none is named
    return app


def _start_pool(services: Services, watcher: BackendsWatcher) -> None:
    """Probe every backend of the pool and watch BACKENDS_FILE from now on; the app's shutdown stops both."""
    pool = watcher.pool
    pool.start_probes()
    services.extras["backends_file"] = watcher  # the UI shows its problem

    def reloaded(_: object) -> None:  # what the UI's overview shows until it lists every backend
        services.backend = pool.members[0].backend

    watcher.on_change.append(reloaded)
    watcher.start()

    def shutdown() -> None:
        watcher.stop()
        pool.stop()

    services.on_shutdown(shutdown, first=True)


def _register_error_handlers(app: Flask) -> None:
    @app.errorhandler(ProxyError)
    def proxy_error(exc: ProxyError) -> Response:
        return render_error(exc, dialect_of_path(request.path))

    @app.errorhandler(HTTPException)
    def http_error(exc: HTTPException) -> Response:
        # API prefixes in any letter case (/API/chat is a 404, not a route) are answered in their dialect
        if not (request.path.lower().startswith(("/api", "/v1")) or request.path == "/"):
            return exc  # type: ignore[return-value]
        return render_error(http_exception_to_proxy_error(exc), dialect_of_path(request.path))

    @app.errorhandler(Exception)
    def unexpected(exc: Exception) -> Response:
        log.exception("unexpected error on %s %s", printable(request.method), printable(request.path))
        return render_error(ProxyError("internal proxy error; see the proxy's log"), dialect_of_path(request.path))
