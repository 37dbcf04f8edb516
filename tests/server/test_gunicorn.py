"""The proxy under `gunicorn -k gevent wsgi:app` with gunicorn.conf.py: its parser refuses ambiguous framing
(#10 item 13), idle connections are closed (#10 item 11), and SIGTERM drains like `python wsgi.py` does —
streams past DRAIN_TIMEOUT end with an error chunk, are recorded as cancelled, the master exits 0 (#10 item 5)."""
from __future__ import annotations

import json
import signal
import time

import pytest

from tests.server.framing_cases import AMBIGUOUS_FRAMING, SMUGGLED
from tests.server.test_lifecycle import OLLAMA_CHAT, OPENAI_CHAT, StreamReader, connect, read_until_closed
from tests.server.test_server import exchange_closed
from tests.support.gunicorn import Gunicorn


@pytest.fixture
def gunicorn(tmp_path):
    started: list[Gunicorn] = []

    def factory(**env: str) -> Gunicorn:
        server = Gunicorn(tmp_path, **env)
        started.append(server)
        return server

    yield factory
    for server in started:
        server.stop()


def test_gunicorn_refuses_ambiguous_framing_with_400_and_serves_nothing_smuggled(gunicorn):
    server = gunicorn()
    problems = []
    for name, framing in AMBIGUOUS_FRAMING.items():
        raw = b"POST /api/chat HTTP/1.1\r\nHost: x\r\n" + framing + b"\r\n" + b"0\r\n\r\n" + SMUGGLED
        reply, closed = exchange_closed(server.url, raw)
        if not reply.startswith(b"HTTP/1.1 400") or reply.count(b"HTTP/1.1 ") != 1 or not closed:
            problems.append(f"{name}: closed={closed} {reply[:200]!r}")
    assert not problems, "\n".join(problems)


def test_gunicorn_closes_an_idle_keep_alive_connection(gunicorn):
    server = gunicorn(KEEPALIVE_TIMEOUT=1)
    with connect(server.url) as sock:
        sock.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
        data, closed_after = read_until_closed(sock, 5)
    assert data.startswith(b"HTTP/1.1 200") and closed_after is not None and closed_after < 3


def test_gunicorn_lets_a_short_stream_finish_on_sigterm(gunicorn):
    server = gunicorn(STUB_DELAY_MS=100, DRAIN_TIMEOUT=10)
    reader = StreamReader(server.url + OLLAMA_CHAT, 15)
    reader.start()
    assert reader.first.wait(10)
    server.process.send_signal(signal.SIGTERM)
    reader.join(20)
    assert reader.error is None and json.loads(reader.lines[-1])["done"] is True
    assert server.process.wait(timeout=30) == 0, server.output()
    assert [row[2] for row in server.rows()] == ["ok"]


@pytest.mark.parametrize("path", [OLLAMA_CHAT, OPENAI_CHAT])
def test_gunicorn_ends_a_stream_still_running_after_drain_timeout_with_an_error_chunk(gunicorn, path):
    server = gunicorn(STUB_DELAY_MS=100, DRAIN_TIMEOUT=1)
    reader = StreamReader(server.url + path, 600)
    reader.start()
    assert reader.first.wait(10)
    started = time.monotonic()
    server.process.send_signal(signal.SIGTERM)
    reader.join(20)
    assert not reader.is_alive() and reader.error is None, reader.error
    assert server.process.wait(timeout=30) == 0, server.output()
    assert time.monotonic() - started < 10
    last = reader.lines[-1] if path == OLLAMA_CHAT else reader.lines[-2].removeprefix(b"data: ")
    error = json.loads(last)["error"]
    assert "shutting down" in (error if path == OLLAMA_CHAT else error["message"])
    [(endpoint, status, outcome, message)] = server.rows()
    assert (endpoint, outcome) == (path, "cancelled") and "shutting down" in message
    assert "Traceback" not in server.output()
