"""Usage webhooks: one record per finished exchange, POSTed in signed JSON batches to each WEBHOOK_URLS receiver.

``Webhooks.sink`` is an exchange sink like the log writer's: it copies a few fields into a bounded queue per
receiver (a full queue drops the record and counts it) and never blocks. Each receiver has its own sender (a
greenlet under gevent, else a daemon thread) that POSTs a batch when WEBHOOK_BATCH records wait or the oldest
has waited WEBHOOK_FLUSH_S, through ``backends.wire`` with a bounded time per POST, retrying with exponential
backoff, then dropping the batch (counted). Records carry a key's name, never a key, header or secret; a
receiver's URL (whose path may be its secret) is only shown as its host.
"""
from __future__ import annotations

import collections
import hashlib
import hmac
import logging
import os
import threading
import time
import uuid
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit

from prometheus_client import CollectorRegistry, Counter

from . import jsonio
from .config import Settings
from .greenlets import gevent_patched

log = logging.getLogger(__name__)

ATTEMPTS = 5  # POSTs of one batch before it is dropped
BACKOFF_S = 0.5  # wait after the first failure; doubled after each next one (0.5, 1, 2, 4 s)
POST_TIMEOUT_S = 10.0  # one POST, connection to the end of the answer
CLOSE_TIMEOUT_S = 2.0  # what is queued at shutdown gets this long (one attempt per batch)
WARN_EVERY_S = 60.0
SIGNATURE_HEADER = "X-LLM-Proxy-Signature"  # sha256=<hex HMAC-SHA256 of the body, keyed with WEBHOOK_SECRET>
TIMESTAMP_HEADER = "X-LLM-Proxy-Timestamp"  # unix seconds the batch was sent; also in the (signed) body
RETRY_STATUSES = frozenset({408, 425, 429})  # a 4xx worth retrying; other 4xx answers drop the batch at once


def receiver_label(url: str) -> str:
    """How a receiver is named in metrics and logs: its host and port (a path or query may be its secret)."""
    parts = urlsplit(url)
    host = parts.hostname or "?"
    host = f"[{host}]" if ":" in host else host
    return f"{host}:{parts.port or (443 if parts.scheme == 'https' else 80)}"


def _iso(at: float) -> str:
    return datetime.fromtimestamp(at, UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def usage_fields(exchange: Any) -> dict[str, Any]:
    """The record of one finished exchange, times still as clock values (``usage_record`` finishes it)."""
    prompt, completion = exchange.tokens()
    first = exchange.client_first_chunk_at if exchange.stream else None
    return {"request_id": exchange.request_id, "time": exchange.started, "key": exchange.key_name,
            "client": exchange.client, "front": exchange.front, "endpoint": exchange.endpoint,
            "model": exchange.model_requested, "upstream_model": exchange.model_upstream,
            "backend": exchange.backend_name, "stream": exchange.stream, "status": exchange.status,
            "outcome": exchange.outcome, "error": exchange.error, "prompt_tokens": prompt,
            "completion_tokens": completion,
            "latency_ms": round(((exchange.ended_at or exchange.started) - exchange.started) * 1000, 1),
            "ttft_ms": round((first - exchange.started) * 1000, 1) if first is not None else None,
            "cached": bool(exchange.cached)}


def usage_record(fields: dict[str, Any], bodies: tuple[Any, Any] | None) -> dict[str, Any]:
    """A queued record as it is sent: the time in ISO 8601 (UTC), the client's bodies as text when kept."""
    record = dict(fields, time=_iso(fields["time"]))
    if bodies is not None:
        request, response = bodies
        record["request_body"] = request.value().decode("utf-8", "replace")
        record["response_body"] = response.value().decode("utf-8", "replace")
        record["bodies_truncated"] = bool(request.truncated or response.truncated)
    return record


def sign(secret: str, body: bytes) -> str:
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


class Receiver:
    """One WEBHOOK_URLS entry: its queue, its sender and its counters."""

    def __init__(self, url: str, label: str, owner: Webhooks):
        from .backends.wire import Connection, split_credentials

        plain, auth = split_credentials(url)
        parts = urlsplit(plain)
        self.path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        self.connection = Connection(f"{parts.scheme}://{parts.netloc}", auth=auth, api_key="", bundle="",
                                     connect_timeout=POST_TIMEOUT_S)
        self.label = label
        self.owner = owner
        self.queue: collections.deque = collections.deque()
        self.wake = threading.Event()
        self.running = False
        self._last_warning = 0.0

    # --- the request path --------------------------------------------------------------------------------
    def put(self, item: tuple[float, dict[str, Any], Any]) -> None:
        queue = self.queue
        if self.owner.stopping.is_set():
            self.owner.dropped.labels(self.label, "stopped").inc()
            return
        if len(queue) >= self.owner.queue_size:
            self.owner.dropped.labels(self.label, "queue_full").inc()
            self._warn(f"webhook {self.label}: queue full ({self.owner.queue_size} records); record dropped")
            return
        queue.append(item)
        if len(queue) == 1 or len(queue) == self.owner.batch:
            self.wake.set()

    # --- the sender --------------------------------------------------------------------------------------
    def run(self) -> None:
        owner = self.owner
        try:
            while True:
                self.wake.clear()
                stopping = owner.stopping.is_set()
                if not self.queue:
                    if stopping:
                        return
                    self.wake.wait(1.0)
                    continue
                due = self.queue[0][0] + owner.flush_s - time.monotonic()
                if not stopping and len(self.queue) < owner.batch and due > 0:
                    self.wake.wait(due)
                    continue
                batch = [self.queue.popleft() for _ in range(min(owner.batch, len(self.queue)))]
                try:
                    self.deliver(batch)
                except Exception:  # noqa: BLE001 - a record that cannot be encoded must not stop the sender
                    log.exception("webhook %s: a batch could not be prepared; %d records dropped", self.label,
                                  len(batch))
                    owner.dropped.labels(self.label, "gave_up").inc(len(batch))
        finally:
            self.running = False

    def deliver(self, batch: list[tuple[float, dict[str, Any], Any]]) -> bool:
        """POST ``batch`` until a 2xx answer, at most ATTEMPTS times (once while stopping); False: dropped."""
        owner = self.owner
        records = []
        for _, fields, bodies in batch:
            records.append(usage_record(fields, bodies))
            if bodies is not None:
                owner.pause()  # under gevent: let streams run between records whose bodies are decoded
        batch_id = uuid.uuid4().hex
        delay = BACKOFF_S
        for attempt in range(1, ATTEMPTS + 1):
            sent_at = int(time.time())
            body = jsonio.dumps({"batch_id": batch_id, "sent_at": sent_at, "attempt": attempt, "records": records})
            status, why = self.post(body, sent_at)
            if status is not None and 200 <= status < 300:
                owner.deliveries.labels(self.label).inc()
                owner.delivered.labels(self.label).inc(len(records))
                return True
            owner.failures.labels(self.label).inc()
            final = (status is not None and 400 <= status < 500 and status not in RETRY_STATUSES)
            if final or attempt == ATTEMPTS or owner.stopping.is_set():
                break
            self._warn(f"webhook {self.label}: {why}; retrying in {delay:g} s")
            if owner.stopping.wait(delay):
                break
            delay *= 2
        owner.dropped.labels(self.label, "stopped" if owner.stopping.is_set() else "gave_up").inc(len(records))
        log.error("webhook %s: %s; %d records dropped", self.label, why, len(records))
        return False

    def post(self, body: bytes, sent_at: int) -> tuple[int | None, str]:
        """(status, what went wrong): status None when no answer came (refused, reset, timed out)."""
        import gevent

        headers = {TIMESTAMP_HEADER: str(sent_at)}
        if self.owner.secret:
            headers[SIGNATURE_HEADER] = sign(self.owner.secret, body)
        try:
            with gevent.Timeout(POST_TIMEOUT_S, TimeoutError(f"no answer within {POST_TIMEOUT_S:g} s")):
                response = self.connection.request("POST", self.path, body, request_id=None,
                                                   connect=POST_TIMEOUT_S, read=POST_TIMEOUT_S, headers=headers)
                try:
                    while response.read_some(65536):
                        pass
                finally:
                    response.close()
        except Exception as exc:  # noqa: BLE001 - any failure to deliver is counted and retried
            return None, f"POST failed: {' '.join(str(exc).split())[:200] or type(exc).__name__}"
        status = response.status_code
        return status, f"the receiver answered HTTP {status}"

    def _warn(self, message: str) -> None:
        now = time.monotonic()
        if self._last_warning == 0.0 or now - self._last_warning >= WARN_EVERY_S:
            self._last_warning = now
            log.warning(message)


class Webhooks:
    """The usage webhooks of one app: ``sink`` for ``Exchange.finish``, ``start``, ``close`` at shutdown."""

    def __init__(self, settings: Settings, registry: CollectorRegistry):
        self.secret = settings.webhook_secret
        self.batch = settings.webhook_batch
        self.flush_s = settings.webhook_flush_s
        self.queue_size = settings.webhook_queue
        self.bodies = settings.webhook_bodies
        self.stopping = threading.Event()
        self.deliveries = Counter("llm_proxy_webhook_deliveries", "Batches a webhook receiver accepted (2xx)",
                                  ["receiver"], registry=registry)
        self.delivered = Counter("llm_proxy_webhook_delivered_records", "Records in the accepted batches",
                                 ["receiver"], registry=registry)
        self.failures = Counter("llm_proxy_webhook_failures", "POSTs that failed (no answer, or not 2xx)",
                                ["receiver"], registry=registry)
        self.dropped = Counter("llm_proxy_webhook_dropped_records", "Records never delivered: queue_full, "
                               "gave_up (attempts or a final 4xx), stopped (at shutdown)", ["receiver", "reason"],
                               registry=registry)
        labels: list[str] = []
        self.receivers = []
        for url in settings.webhook_urls:
            label = receiver_label(url)
            if label in labels:
                label = f"{label}#{labels.count(label) + 1}"
            labels.append(label)
            self.receivers.append(Receiver(url, label, self))
        if self.receivers and not self.secret:
            log.warning("WEBHOOK_URLS is set without WEBHOOK_SECRET: the usage batches are sent unsigned")
        self._threads: list[Any] = []
        self._pid = os.getpid()
        self._gevent = gevent_patched()

    def pause(self) -> None:
        if self._gevent:
            import gevent
            gevent.sleep(0)

    def sink(self, exchange: Any) -> None:
        """Exchange sink: a reference copy into each receiver's queue (bodies: the client's, unread yet)."""
        if self._pid != os.getpid():  # forked (gunicorn --preload): this process needs its own senders
            self._pid = os.getpid()
            self._threads = []
            self.start()
        item = (time.monotonic(), usage_fields(exchange),
                (exchange.client_request, exchange.client_response) if self.bodies else None)
        for receiver in self.receivers:
            receiver.put(item)

    def start(self) -> None:
        for receiver in self.receivers:
            receiver.running = True
            if self._gevent:
                import gevent
                self._threads.append(gevent.spawn(receiver.run))
            else:
                thread = threading.Thread(target=receiver.run, name=f"webhook {receiver.label}", daemon=True)
                thread.start()
                self._threads.append(thread)

    def close(self, timeout: float = CLOSE_TIMEOUT_S) -> None:
        """Send what is queued (one attempt a batch) for at most ``timeout`` seconds, then stop."""
        self.stopping.set()
        for receiver in self.receivers:
            receiver.wake.set()
        deadline = time.monotonic() + timeout
        for thread in self._threads:
            thread.join(max(0.0, deadline - time.monotonic()))
        left = sum(len(r.queue) for r in self.receivers)
        if left:
            for receiver in self.receivers:
                if receiver.queue:
                    self.dropped.labels(receiver.label, "stopped").inc(len(receiver.queue))
                    receiver.queue.clear()
            log.error("webhooks: %d records still queued at shutdown are dropped", left)


def init_app(services: Any, registry: CollectorRegistry) -> Webhooks | None:
    """Wire the webhooks into an app (WEBHOOK_URLS set): the sink, the senders, the shutdown flush."""
    settings: Settings = services.settings
    if not settings.webhook_urls:
        return None
    hooks = Webhooks(settings, registry)
    services.sinks.append(hooks.sink)
    services.extras["webhooks"] = hooks
    hooks.start()
    services.on_shutdown(hooks.close)
    return hooks
