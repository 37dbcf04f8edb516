"""Usage webhooks against a receiver on a real port: batches signed with HMAC-SHA256 of the body, retried after a
500 and a dropped connection, a bounded queue whose drops are counted, bodies only with WEBHOOK_BODIES, no key
or Authorization in any payload, what is queued sent at shutdown, and the same under gevent (`python wsgi.py`)."""
from __future__ import annotations

import hashlib
import hmac
import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import requests

SECRET = "webhook-secret-0123"
KEY = "sk-alice-0123456789"
CHAT = {"model": "stub", "stream": False, "messages": [{"role": "user", "content": "count my tokens"}]}


class Receiver:
    """An HTTP server on a free port recording every POST; ``script`` says how to answer each in turn
    (an int: that status; "drop": close the connection without answering; "hold": wait for ``release``)."""

    def __init__(self, *script: int | str):
        self.script = list(script)
        self.posts: list[tuple[dict, bytes]] = []  # (headers, body) of every POST, answered or not
        self.accepted: list[dict] = []
        self.changed = threading.Condition()
        self.release = threading.Event()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                with receiver.changed:
                    receiver.posts.append((dict(self.headers), body))
                    action = receiver.script.pop(0) if receiver.script else 200
                    receiver.changed.notify_all()
                if action == "hold":
                    receiver.release.wait(10)
                    action = 200
                if action == "drop":
                    self.close_connection = True
                    self.connection.close()
                    return
                if action == 200:  # noted before the answer: the sender may look right after it
                    with receiver.changed:
                        receiver.accepted.append(json.loads(body))
                        receiver.changed.notify_all()
                self.send_response(int(action))
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.server.server_port}/usage/{'path-secret'}"

    def records(self) -> list[dict]:
        return [record for batch in self.accepted for record in batch["records"]]

    def wait_for(self, check, timeout: float = 15.0) -> None:
        with self.changed:
            assert self.changed.wait_for(check, timeout), f"posts: {len(self.posts)}, accepted: {len(self.accepted)}"

    def stop(self) -> None:
        self.release.set()
        self.server.shutdown()
        self.server.server_close()


def _chat(proxy, n: int = 1, **headers: str) -> list[str]:
    ids = []
    for _ in range(n):
        r = requests.post(proxy.url + "/api/chat", json=CHAT, headers={"Authorization": f"Bearer {KEY}", **headers})
        assert r.status_code == 200, r.text
        ids.append(r.headers["X-Request-ID"])
    return ids


def _metric_becomes(proxy, prefix: str, value: float, timeout: float = 10.0) -> bool:
    """The sender counts a delivery once it has read the receiver's answer, a moment after the receiver has it."""
    deadline = time.monotonic() + timeout
    while _metric(proxy, prefix) != value and time.monotonic() < deadline:
        time.sleep(0.05)
    return _metric(proxy, prefix) == value


def _metric(proxy, line_start: str) -> float:
    text = requests.get(proxy.url + "/metrics").text
    values = [float(line.rsplit(" ", 1)[1]) for line in text.splitlines() if line.startswith(line_start)]
    return sum(values)


def _env(receiver: Receiver, **env: object) -> dict:
    return {"BACKEND_TYPE": "stub", "STUB_DELAY_MS": "0", "API_KEYS": f"alice:{KEY}", "WEBHOOK_URLS": receiver.url,
            "WEBHOOK_SECRET": SECRET, **env}


def test_batches_arrive_signed_after_a_500_and_a_dropped_connection_and_failures_are_counted(make_proxy):
    receiver = Receiver(500, "drop")
    try:
        proxy = make_proxy(**_env(receiver, WEBHOOK_BATCH=3, WEBHOOK_FLUSH_S=0.2))
        ids = _chat(proxy, 5)
        receiver.wait_for(lambda: len(receiver.records()) >= 5)
        records = receiver.records()
        assert sorted(r["request_id"] for r in records) == sorted(ids)
        first = records[0]
        assert first["key"] == "alice" and first["client"] == "127.0.0.1" and first["front"] == "ollama"
        assert first["endpoint"] == "/api/chat" and first["model"] == "stub" and first["backend"] == "stub backend"
        assert first["status"] == 200 and first["outcome"] == "ok" and first["cached"] is False
        assert first["prompt_tokens"] > 0 and first["completion_tokens"] > 0 and first["latency_ms"] >= 0
        assert first["time"].endswith("Z") and "request_body" not in first  # bodies only with WEBHOOK_BODIES
        for headers, body in receiver.posts:  # every attempt is signed over its exact bytes
            expected = "sha256=" + hmac.new(SECRET.encode(), body, hashlib.sha256).hexdigest()
            assert hmac.compare_digest(headers["X-LLM-Proxy-Signature"], expected)
            assert headers["X-LLM-Proxy-Timestamp"] == str(json.loads(body)["sent_at"])
            assert KEY.encode() not in body and b"Bearer" not in body and b"uthorization" not in body
            assert "Authorization" not in headers
        assert json.loads(receiver.posts[0][1])["batch_id"] == receiver.accepted[0]["batch_id"]  # same batch retried
        assert receiver.accepted[0]["attempt"] == 3
        assert _metric(proxy, "llm_proxy_webhook_failures_total{") == 2
        assert _metric_becomes(proxy, "llm_proxy_webhook_delivered_records_total{", 5)
        assert _metric(proxy, "llm_proxy_webhook_deliveries_total{") == len(receiver.accepted)
        text = requests.get(proxy.url + "/metrics").text
        assert 'receiver="127.0.0.1:' in text and "path-secret" not in text
    finally:
        receiver.stop()


def test_a_full_queue_drops_records_and_counts_them(make_proxy):
    receiver = Receiver("hold")
    try:
        proxy = make_proxy(**_env(receiver, WEBHOOK_BATCH=1, WEBHOOK_FLUSH_S=0.05, WEBHOOK_QUEUE=2))
        _chat(proxy)
        receiver.wait_for(lambda: len(receiver.posts) == 1)  # the sender holds record 1; the queue is empty
        _chat(proxy, 5)  # two wait, three are dropped
        assert _metric(proxy, 'llm_proxy_webhook_dropped_records_total{reason="queue_full"') == 3
        receiver.release.set()
        receiver.wait_for(lambda: len(receiver.records()) == 3)
        assert _metric_becomes(proxy, "llm_proxy_webhook_delivered_records_total{", 3)
    finally:
        receiver.stop()


def test_bodies_are_sent_only_with_webhook_bodies(make_proxy):
    receiver = Receiver()
    try:
        proxy = make_proxy(**_env(receiver, WEBHOOK_BODIES="true", WEBHOOK_FLUSH_S=0.05))
        _chat(proxy)
        receiver.wait_for(lambda: len(receiver.records()) == 1)
        record = receiver.records()[0]
        assert "count my tokens" in record["request_body"] and record["bodies_truncated"] is False
        assert json.loads(record["response_body"])["done"] is True
        assert KEY not in json.dumps(record)
    finally:
        receiver.stop()


def test_what_is_queued_is_sent_at_shutdown(make_proxy):
    receiver = Receiver()
    try:
        proxy = make_proxy(**_env(receiver, WEBHOOK_FLUSH_S=600))
        ids = _chat(proxy, 2)
        assert not receiver.posts
        started = time.monotonic()
        proxy.stop()
        assert time.monotonic() - started < 3
        assert [r["request_id"] for r in receiver.records()] == ids
    finally:
        receiver.stop()


def test_a_receiver_that_never_answers_does_not_slow_requests(make_proxy):
    receiver = Receiver(*["hold"] * 3)
    try:
        proxy = make_proxy(**_env(receiver, WEBHOOK_BATCH=1, WEBHOOK_FLUSH_S=0.01))
        started = time.monotonic()
        _chat(proxy, 20)
        assert time.monotonic() - started < 5  # twenty requests while the receiver holds the sender
    finally:
        receiver.stop()


def test_webhooks_deliver_under_gevent(wsgi_proxy):
    receiver = Receiver(500)
    try:
        proxy = wsgi_proxy(**_env(receiver, WEBHOOK_FLUSH_S=0.1, WEBHOOK_BATCH=10))
        ids = _chat(proxy, 3)
        receiver.wait_for(lambda: len(receiver.records()) == 3)
        assert sorted(r["request_id"] for r in receiver.records()) == sorted(ids)
        assert _metric(proxy, "llm_proxy_webhook_failures_total{") == 1
    finally:
        receiver.stop()


def test_a_refusing_4xx_drops_the_batch_without_retrying(make_proxy):
    receiver = Receiver(400)
    try:
        proxy = make_proxy(**_env(receiver, WEBHOOK_FLUSH_S=0.05, WEBHOOK_BATCH=2))
        _chat(proxy, 2)
        receiver.wait_for(lambda: len(receiver.posts) == 1)
        end = time.monotonic() + 5
        while _metric(proxy, 'llm_proxy_webhook_dropped_records_total{reason="gave_up"') < 2:
            assert time.monotonic() < end
            time.sleep(0.05)
        assert len(receiver.posts) == 1  # counted as dropped only once the sender gave the batch up and _metric(proxy, "llm_proxy_webhook_failures_total{") == 1
    finally:
        receiver.stop()


def test_a_receiver_url_is_shown_by_its_host_only():
    from proxy.config import Settings

    settings = Settings.from_env({"WEBHOOK_URLS": "https://hooks.example.com/services/T0/B0/very-secret?token=abc",
                                  "WEBHOOK_SECRET": SECRET})
    shown = dict(settings.public_items())
    assert shown["WEBHOOK_URLS"] == "https://hooks.example.com/…" and shown["WEBHOOK_SECRET"] == "********"


def test_gevent_server_sends_what_is_queued_when_it_stops(wsgi_proxy):
    receiver = Receiver()
    try:
        proxy = wsgi_proxy(**_env(receiver, WEBHOOK_FLUSH_S=600))
        ids = _chat(proxy, 2)
        proxy.stop()
        assert proxy.process.returncode == 0
        assert [r["request_id"] for r in receiver.records()] == ids
    finally:
        receiver.stop()
