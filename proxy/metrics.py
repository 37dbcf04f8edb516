"""Prometheus metrics, fed by finished exchanges (a sink: nothing is counted on the streaming path).

One registry per app, so tests can build many apps. Under gunicorn each worker exposes its own
figures at `/metrics`; scrape each worker or run one worker per host.
"""
from __future__ import annotations

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram, generate_latest

from .exchange import Exchange

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300)


class Metrics:
    content_type = CONTENT_TYPE_LATEST

    def __init__(self) -> None:
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

    def observe(self, exchange: Exchange) -> None:
        """Exchange sink: count one finished exchange."""
        # Only models that were found get their own label: client-chosen names must not grow the series.
        model = exchange.model_requested if exchange.status is not None and exchange.status < 400 else "-"
        model = model or "-"
        self.requests.labels(exchange.front, exchange.endpoint, model, str(exchange.status or 0),
                             exchange.outcome).inc()
        self.duration.labels(exchange.front, exchange.endpoint).observe(exchange.duration)
        if exchange.stream and exchange.client_first_chunk_at is not None:
            self.first_chunk.labels(exchange.front, exchange.endpoint).observe(
                exchange.client_first_chunk_at - exchange.started)
        prompt, completion = exchange.tokens()
        if prompt:
            self.tokens.labels(model, "prompt").inc(prompt)
        if completion:
            self.tokens.labels(model, "completion").inc(completion)

    def render(self) -> bytes:
        return generate_latest(self.registry)
