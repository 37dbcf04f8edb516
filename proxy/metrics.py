"""Prometheus metrics, fed by finished exchanges (a sink: nothing is counted on the streaming path).

Every label value comes from a closed set, whatever clients send: the route template a path matched
(``unmatched`` for none), a model the catalog lists or an alias (``other`` for the rest), an HTTP status
code from the standard set (else its class), a known front and outcome. One registry per app, so tests
can build many apps. Under gunicorn each worker exposes its own figures at `/metrics`; scrape each
worker or run one worker per host.

With BACKENDS_FILE, ``PoolCollector`` adds per-backend series, read from the pool's members when scraped
(so the request path only bumps plain integers, and a reloaded file's backends show at the next scrape);
the ``backend`` label is a name from the file, never anything a client sent:

- ``llm_proxy_backend_requests_total``: attempts sent to the backend (``Member.requests``)
- ``llm_proxy_backend_failures_total``: attempts that failed before an answer — refused, reset, timed out,
  5xx (``Member.failed_requests``)
- ``llm_proxy_backend_retries_total``: attempts that were retries of a request another attempt failed
  (``Member.retries``)
- ``llm_proxy_backend_in_flight``: requests being answered now (``Member.in_flight``)
- ``llm_proxy_backend_healthy``: 1 while the backend takes requests, 0 while it is down (``Member.healthy``)
- ``llm_proxy_backend_queue_length``: requests waiting for a slot (``Member.queued``)
- ``llm_proxy_backend_queue_wait_seconds``: how long the longest-waiting of them has waited
  (``SlotQueue.longest_wait``; 0 with nobody waiting)
"""
from __future__ import annotations

import functools
from collections.abc import Callable, Iterator
from http import HTTPStatus
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from werkzeug.exceptions import HTTPException
from werkzeug.routing import Map, MapAdapter, RequestRedirect

from .exchange import Exchange

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300)
STATUS_CODES = frozenset(int(s) for s in HTTPStatus)
FRONTS = frozenset({"ollama", "openai"})
OUTCOMES = frozenset({"ok", "attached", "client_error", "refused", "backend_error", "timeout", "cancelled", "error"})
UNMATCHED = "unmatched"
OTHER_MODEL = "other"
ROUTE_CACHE = 1024


def status_label(status: int | None) -> str:
    if not status:
        return "0"
    if status in STATUS_CODES:
        return str(status)
    return f"{status // 100}xx" if 100 <= status < 600 else "other"


class Metrics:
    content_type = CONTENT_TYPE_LATEST

    def __init__(self, url_map: Map | None = None, known_model: Callable[[str], bool] | None = None,
                 pool: Callable[[], Any] | None = None) -> None:
        self.url_map = url_map
        self.known_model = known_model or (lambda name: False)
        self._adapter: MapAdapter | None = None
        self.route = functools.lru_cache(maxsize=ROUTE_CACHE)(self._match)
        self.registry = CollectorRegistry(auto_describe=True)
        self.requests = Counter("llm_proxy_requests", "Finished requests to /api and /v1",
                                ["front", "endpoint", "model", "status", "outcome"], registry=self.registry)
        self.duration = Histogram("llm_proxy_request_duration_seconds", "Time from request to last byte",
                                  ["front", "endpoint"], buckets=LATENCY_BUCKETS, registry=self.registry)
        self.first_chunk = Histogram("llm_proxy_time_to_first_chunk_seconds",
                                     "Time from request to the first streamed chunk sent to the client",
                                     ["front", "endpoint"], buckets=LATENCY_BUCKETS, registry=self.registry)
        self.tokens = Counter("llm_proxy_tokens", "Tokens reported by the backend (or counted from the stream)",
                              ["model", "kind"], registry=self.registry)
        if pool is not None:
            self.registry.register(PoolCollector(pool))

    # --- labels -------------------------------------------------------------------------------------------
    def _match(self, method: str, path: str) -> str:
        """The route template a request matched (`/v1/models/<path:model_id>`), or `unmatched`; ``route``
        is this, cached."""
        if self.url_map is None:
            return UNMATCHED
        if self._adapter is None:
            self._adapter = self.url_map.bind("localhost")
        try:
            rule, _ = self._adapter.match(path, method or "GET", return_rule=True)
        except (HTTPException, RequestRedirect):
            return UNMATCHED
        return rule.rule

    def model(self, exchange: Exchange) -> str:
        name = exchange.model_requested
        if not name:
            return "-"
        return name if self.known_model(name) else OTHER_MODEL

    # --- the sink -----------------------------------------------------------------------------------------
    def observe(self, exchange: Exchange) -> None:
        """Exchange sink: count one finished exchange."""
        front = exchange.front if exchange.front in FRONTS else "other"
        endpoint = self.route(exchange.method, exchange.endpoint)
        outcome = exchange.outcome if exchange.outcome in OUTCOMES else "other"
        model = self.model(exchange)
        self.requests.labels(front, endpoint, model, status_label(exchange.status), outcome).inc()
        self.duration.labels(front, endpoint).observe(exchange.duration)
        if exchange.stream and exchange.client_first_chunk_at is not None:
            self.first_chunk.labels(front, endpoint).observe(exchange.client_first_chunk_at - exchange.started)
        prompt, completion = exchange.tokens()
        if prompt:
            self.tokens.labels(model, "prompt").inc(prompt)
        if completion:
            self.tokens.labels(model, "completion").inc(completion)

    def render(self) -> bytes:
        return generate_latest(self.registry)


# (name, help, kind, how a member gives the value): the per-backend series, in the order they are exposed
BACKEND_SERIES: tuple[tuple[str, str, str, Callable[[Any, Any], float]], ...] = (
    ("llm_proxy_backend_requests", "Attempts sent to the backend", "counter", lambda p, m: m.requests),
    ("llm_proxy_backend_failures", "Attempts that failed before an answer (refused, reset, timeout, 5xx)",
     "counter", lambda p, m: m.failed_requests),
    ("llm_proxy_backend_retries", "Attempts that retried a request another attempt failed", "counter",
     lambda p, m: m.retries),
    ("llm_proxy_backend_in_flight", "Requests being answered now", "gauge", lambda p, m: m.in_flight),
    ("llm_proxy_backend_healthy", "1 while the backend takes requests, 0 while it is down", "gauge",
     lambda p, m: 1 if m.healthy else 0),
    ("llm_proxy_backend_queue_length", "Requests waiting for a free slot", "gauge", lambda p, m: m.queued),
    ("llm_proxy_backend_queue_wait_seconds", "How long the longest-waiting queued request has waited", "gauge",
     lambda p, m: p.slots.longest_wait(m)),
)


class PoolCollector:
    """The per-backend series, read from the current pool's members at each scrape (none without a pool)."""

    def __init__(self, pool: Callable[[], Any]) -> None:
        self.pool = pool

    def describe(self) -> list[Metric]:
        return []  # the names are fixed (BACKEND_SERIES); nothing to check against the registry at start

    def collect(self) -> Iterator[Metric]:
        pool = self.pool()
        if pool is None:
            return
        members = tuple(pool.members)
        for name, text, kind, value in BACKEND_SERIES:
            family = (CounterMetricFamily if kind == "counter" else GaugeMetricFamily)(name, text, labels=["backend"])
            for member in members:
                family.add_metric([member.name], float(value(pool, member)))
            yield family
