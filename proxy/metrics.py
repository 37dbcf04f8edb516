"""Prometheus metrics, fed by finished exchanges (a sink: nothing is counted on the streaming path).

Every label value comes from a closed set, whatever clients send: the route template a path matched
(``unmatched`` for none), a model the catalog lists or an alias (``other`` for the rest), an HTTP status
code from the standard set (else its class), a known front and outcome. One registry per app, so tests
can build many apps.

Under gunicorn with several workers (``PROMETHEUS_MULTIPROC_DIR`` set, by gunicorn.conf.py) the series are
prometheus-client's multiprocess values, one file per worker in that folder, and `/metrics` reads them all:
the whole server, whichever worker answers. Counters and histograms are summed; the per-backend gauges say
how they combine (``BACKEND_SERIES``). Every series is listed in docs/operations.md.

With BACKENDS_FILE, the per-backend series are read from the pool's members (so the request path only bumps
plain integers, and a reloaded file's backends show at the next scrape); the ``backend`` label is a name
from the file, never anything a client sent. One process: ``PoolCollector`` reads them when scraped. Several
workers: ``PoolPublisher`` copies each worker's figures into its multiprocess values every PUBLISH_S and
before it answers a scrape:

- ``llm_proxy_backend_requests_total``: attempts sent to the backend (``Member.requests``)
- ``llm_proxy_backend_failures_total``: attempts that failed before an answer — refused, reset, timed out,
  5xx (``Member.failed_requests``)
- ``llm_proxy_backend_retries_total``: attempts that were retries of a request another attempt failed
  (``Member.retries``)
- ``llm_proxy_backend_in_flight``: requests being answered now (``Member.in_flight``; workers summed)
- ``llm_proxy_backend_healthy``: 1 while the backend takes requests, 0 while it is down (``Member.healthy``;
  several workers: 0 as soon as one of them has it down)
- ``llm_proxy_backend_queue_length``: requests waiting for a slot (``Member.queued``; workers summed)
- ``llm_proxy_backend_queue_wait_seconds``: how long the longest-waiting of them has waited
  (``SlotQueue.longest_wait``; 0 with nobody waiting; several workers: the longest of them)
"""
from __future__ import annotations

import functools
import logging
import os
import threading
import time
import weakref
from collections.abc import Callable, Iterator
from http import HTTPStatus
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from werkzeug.exceptions import HTTPException
from werkzeug.routing import Map, MapAdapter, RequestRedirect

from .exchange import Exchange
from .greenlets import gevent_patched

log = logging.getLogger(__name__)

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300)
STATUS_CODES = frozenset(int(s) for s in HTTPStatus)
FRONTS = frozenset({"ollama", "openai", "anthropic", "responses"})
OUTCOMES = frozenset({"ok", "attached", "client_error", "refused", "backend_error", "timeout", "cancelled", "error"})
UNMATCHED = "unmatched"
OTHER_MODEL = "other"
ROUTE_CACHE = 1024
PUBLISH_S = 1.0  # several workers: how often each copies its per-backend figures into the shared files
MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"


def multiprocess_dir() -> str | None:
    """The folder of prometheus-client's multiprocess values, when this process shares its metrics."""
    return os.environ.get(MULTIPROC_ENV) or None


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
        self.publisher: PoolPublisher | None = None
        self.exposed = self.registry
        if folder := multiprocess_dir():
            from prometheus_client.multiprocess import MultiProcessCollector

            os.makedirs(folder, exist_ok=True)  # set by hand and not made yet: the values' files go there
            self.exposed = CollectorRegistry(auto_describe=True)  # every worker's files, read at each scrape
            MultiProcessCollector(self.exposed)
            if pool is not None:
                self.publisher = PoolPublisher(pool, self.registry)
        elif pool is not None:
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
        if self.publisher is not None and not self.publisher.started:
            self.publisher.start()  # in the worker (after gunicorn's fork), with its first exchange
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
        if self.publisher is not None:
            self.publisher.publish()  # this worker's figures as of now; the others' as of their last PUBLISH_S
            if not self.publisher.started:
                self.publisher.start()
        return generate_latest(self.exposed)


# (name, help, kind — a counter, or a gauge's multiprocess_mode: how workers combine —, how a member gives the
# value): the per-backend series, in the order they are exposed
BACKEND_SERIES: tuple[tuple[str, str, str, Callable[[Any, Any], float]], ...] = (
    ("llm_proxy_backend_requests", "Attempts sent to the backend", "counter", lambda p, m: m.requests),
    ("llm_proxy_backend_failures", "Attempts that failed before an answer (refused, reset, timeout, 5xx)",
     "counter", lambda p, m: m.failed_requests),
    ("llm_proxy_backend_retries", "Attempts that retried a request another attempt failed", "counter",
     lambda p, m: m.retries),
    ("llm_proxy_backend_in_flight", "Requests being answered now", "livesum", lambda p, m: m.in_flight),
    ("llm_proxy_backend_healthy", "1 while the backend takes requests, 0 while it is down", "livemin",
     lambda p, m: 1 if m.healthy else 0),
    ("llm_proxy_backend_queue_length", "Requests waiting for a free slot", "livesum", lambda p, m: m.queued),
    ("llm_proxy_backend_queue_wait_seconds", "How long the longest-waiting queued request has waited", "livemax",
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


class PoolPublisher:
    """Several workers: this worker's per-backend figures copied into its multiprocess values — counters by
    what they grew since the last copy (a member a reload replaced starts again from 0), gauges set — so that
    `/metrics` on any worker sums them all."""

    def __init__(self, pool: Callable[[], Any], registry: CollectorRegistry) -> None:
        self.pool = pool
        self.started = False
        self.series: list[tuple[Any, str, Callable[[Any, Any], float]]] = []
        for name, text, kind, value in BACKEND_SERIES:
            metric: Any = (Counter(name, text, ["backend"], registry=registry) if kind == "counter" else
                           Gauge(name, text, ["backend"], registry=registry,
                                 multiprocess_mode=kind))  # type: ignore[arg-type]
            self.series.append((metric, kind, value))
        # member -> the counter values already copied, in BACKEND_SERIES order
        self._copied: weakref.WeakKeyDictionary[Any, list[float]] = weakref.WeakKeyDictionary()
        self._lock = threading.Lock()

    def start(self) -> None:
        self.started = True
        if gevent_patched():
            import gevent
            gevent.spawn(self._loop)
        else:
            threading.Thread(target=self._loop, name="metrics-publisher", daemon=True).start()

    def _loop(self) -> None:
        while True:
            time.sleep(PUBLISH_S)  # gevent's, under gevent
            try:
                self.publish()
            except Exception:  # noqa: BLE001 - a reload mid-copy: the next round copies again
                log.exception("copying the per-backend metrics failed")

    def publish(self) -> None:
        pool = self.pool()
        if pool is None:
            return
        with self._lock:
            for member in tuple(pool.members):
                copied = self._copied.setdefault(member, [0.0] * len(self.series))
                for index, (metric, kind, value) in enumerate(self.series):
                    figure = float(value(pool, member))
                    if kind != "counter":
                        metric.labels(member.name).set(figure)
                    elif figure > copied[index]:
                        metric.labels(member.name).inc(figure - copied[index])
                        copied[index] = figure
