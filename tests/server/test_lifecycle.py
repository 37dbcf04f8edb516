"""The life of a connection and of the server under `python wsgi.py`, over real sockets: the head and idle
timeouts, the connection cap, the open-file limit (#10 item 11); the graceful
drain on SIGTERM — short streams finish, long ones end with an error chunk in their dialect and are
recorded as cancelled, the process exits 0 (#10 item 5)."""
from __future__ import annotations

import json
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import requests

from tests.support import REPO_ROOT, free_port


def connect(url: str, timeout: float = 10.0) -> socket.socket:
    host, port = url.removeprefix("http://").split(":")
    return socket.create_connection((host, int(port)), timeout=timeout)


def read_until_closed(sock: socket.socket, limit: float) -> tuple[bytes, float | None]:
    """Everything the server sends, and after how many seconds it closed (None: still open at ``limit``)."""
    start = time.monotonic()
    data = b""
    sock.settimeout(0.2)
    while time.monotonic() - start < limit:
        try:
            piece = sock.recv(65536)
        except TimeoutError:
            continue
        except ConnectionResetError:
            return data, time.monotonic() - start
        if not piece:
            return data, time.monotonic() - start
        data += piece
    return data, None


def rows(db) -> list[tuple]:
    with sqlite3.connect(db) as conn:
        return conn.execute("SELECT endpoint, status, outcome, error FROM exchanges ORDER BY id").fetchall()


# --- timeouts -------------------------------------------------------------------------------------


def test_a_head_trickled_in_byte_by_byte_gets_400_once_header_timeout_is_over(wsgi_proxy):
    proxy = wsgi_proxy(BACKEND_TYPE="stub", HEADER_TIMEOUT=1)
    with connect(proxy.url) as sock:
        sock.sendall(b"GET /api/version HTTP/1.1\r\nHost: x\r\n")
        start = time.monotonic()
        closed_after = None
        try:
            for _ in range(30):  # a byte every 0.1 s: no single read ever waits long
                sock.sendall(b"X")
                time.sleep(0.1)
        except OSError:
            closed_after = time.monotonic() - start
        data, more = read_until_closed(sock, 3)
        closed_after = closed_after or more
    assert data.startswith(b"HTTP/1.1 400"), data[:200]
    assert closed_after is not None and closed_after < 2.5
    proxy.stop()
    assert "HEADER_TIMEOUT" in proxy.output()


def test_a_connection_that_sends_nothing_is_closed_after_header_timeout(wsgi_proxy):
    proxy = wsgi_proxy(BACKEND_TYPE="stub", HEADER_TIMEOUT=1, KEEPALIVE_TIMEOUT=30)
    with connect(proxy.url) as sock:
        data, closed_after = read_until_closed(sock, 4)
    assert closed_after is not None and 0.8 < closed_after < 2.5 and data == b""


def test_an_idle_keep_alive_connection_is_closed_after_keepalive_timeout(wsgi_proxy):
    proxy = wsgi_proxy(BACKEND_TYPE="stub", KEEPALIVE_TIMEOUT=1, HEADER_TIMEOUT=30)
    with connect(proxy.url) as sock:
        sock.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
        time.sleep(0.5)
        sock.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")  # within the idle time: served
        data, closed_after = read_until_closed(sock, 5)
    assert data.count(b"HTTP/1.1 200") == 2
    assert closed_after is not None and closed_after < 2.5


# --- the connection cap ---------------------------------------------------------------------------


def test_beyond_the_cap_a_newcomer_waits_for_a_free_connection_and_is_then_served(wsgi_proxy):
    proxy = wsgi_proxy(BACKEND_TYPE="stub", MAX_CONNECTIONS=20, HEADER_TIMEOUT=60)
    busy = []
    try:
        for _ in range(20):  # each has begun a request head: the cap is reached
            sock = connect(proxy.url)
            sock.sendall(b"GET /api/version HTTP/1.1\r\nHost: x\r\n")
            busy.append(sock)
        time.sleep(0.3)
        with connect(proxy.url) as newcomer:
            newcomer.sendall(b"GET /api/version HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            newcomer.settimeout(0.5)
            with pytest.raises(TimeoutError):
                newcomer.recv(1)  # not served while 20 connections are open
            for sock in busy:  # the heads complete and their connections end: room again
                sock.sendall(b"Connection: close\r\n\r\n")
            for sock in busy:
                assert read_until_closed(sock, 5)[0].startswith(b"HTTP/1.1 200")
            assert read_until_closed(newcomer, 5)[0].startswith(b"HTTP/1.1 200")
    finally:
        for sock in busy:
            sock.close()
    assert "Traceback" not in proxy.output()


def test_the_open_file_soft_limit_is_raised_to_the_hard_limit_at_start(tmp_path):
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard <= 256:
        pytest.skip("the hard open-file limit is too low to see a raise")
    port = free_port()
    env = {**os.environ, "BACKEND_TYPE": "stub", "PORT": str(port), "HOST": "127.0.0.1", "LOG_LEVEL": "WARNING",
           "DATABASE_URL": f"sqlite:///{tmp_path}/x.db", "MAX_CONNECTIONS": "100000"}
    proc = subprocess.Popen([sys.executable, "wsgi.py"], cwd=REPO_ROOT, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT,
                            preexec_fn=lambda: resource.setrlimit(resource.RLIMIT_NOFILE, (256, hard)))
    try:
        wait_healthy(f"http://127.0.0.1:{port}", proc)
        limits = Path(f"/proc/{proc.pid}/limits").read_text()
        line = next(line for line in limits.splitlines() if line.startswith("Max open files"))
        assert line.split()[3] == str(hard), line
    finally:
        proc.send_signal(signal.SIGTERM)
        out = proc.communicate(timeout=20)[0].decode()
    assert proc.returncode == 0
    assert "MAX_CONNECTIONS=100000" in out or hard >= 200064  # the cap was fitted to the limit, and said so


def wait_healthy(url: str, proc: subprocess.Popen, seconds: float = 30) -> None:
    deadline = time.monotonic() + seconds
    while True:
        assert proc.poll() is None, proc.stdout.read().decode() if proc.stdout else proc.returncode
        try:
            if requests.get(url + "/health", timeout=1).status_code == 200:
                return
        except requests.RequestException:
            pass
        assert time.monotonic() < deadline, "no /health answer"
        time.sleep(0.1)


# --- the drain on SIGTERM -------------------------------------------------------------------------

OLLAMA_CHAT = "/api/chat"
OPENAI_CHAT = "/v1/chat/completions"


def stream_body(words: int) -> dict:
    return {"model": "stub", "stream": True, "messages": [{"role": "user", "content": " ".join(["w"] * words)}]}


class StreamReader(threading.Thread):
    """Reads one streamed answer to its end in the background: its lines, and whether it ended cleanly."""

    def __init__(self, url: str, words: int):
        super().__init__(daemon=True)
        self.url, self.words = url, words
        self.lines: list[bytes] = []
        self.first = threading.Event()
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            with requests.post(self.url, json=stream_body(self.words), stream=True, timeout=(3, 60)) as r:
                assert r.status_code == 200, r.text
                for line in r.iter_lines():
                    if line:
                        self.lines.append(line)
                        self.first.set()
        except BaseException as exc:  # noqa: BLE001 - reported by the test
            self.error = exc
        finally:
            self.first.set()


def test_sigterm_lets_a_short_stream_finish_and_exits_0(wsgi_proxy, tmp_path):
    db = tmp_path / "drain.db"
    proxy = wsgi_proxy(BACKEND_TYPE="stub", STUB_DELAY_MS=100, DATABASE_URL=f"sqlite:///{db}", DRAIN_TIMEOUT=10)
    reader = StreamReader(proxy.url + OLLAMA_CHAT, 15)  # about 1.5 s of words
    reader.start()
    assert reader.first.wait(10)
    proxy.process.send_signal(signal.SIGTERM)
    time.sleep(0.3)
    with pytest.raises(requests.ConnectionError):  # no new connections once stopping
        requests.get(proxy.url + "/health", timeout=2)
    reader.join(15)
    assert reader.error is None, reader.error
    assert json.loads(reader.lines[-1])["done"] is True
    assert proxy.process.wait(timeout=15) == 0, proxy.output()
    assert rows(db) == [("/api/chat", 200, "ok", None)], proxy.output()


@pytest.mark.parametrize("path", [OLLAMA_CHAT, OPENAI_CHAT])
def test_a_stream_still_running_after_drain_timeout_ends_with_an_error_chunk_and_is_recorded_cancelled(
        wsgi_proxy, tmp_path, path):
    db = tmp_path / "drain.db"
    proxy = wsgi_proxy(BACKEND_TYPE="stub", STUB_DELAY_MS=100, DATABASE_URL=f"sqlite:///{db}", DRAIN_TIMEOUT=1)
    reader = StreamReader(proxy.url + path, 600)  # a minute of words
    reader.start()
    assert reader.first.wait(10)
    started = time.monotonic()
    proxy.process.send_signal(signal.SIGTERM)
    reader.join(20)
    assert not reader.is_alive() and reader.error is None, reader.error
    assert proxy.process.wait(timeout=15) == 0, proxy.output()
    assert time.monotonic() - started < 8
    if path == OLLAMA_CHAT:
        last = json.loads(reader.lines[-1])
        assert "shutting down" in last["error"] and "done" not in last
    else:
        assert reader.lines[-1] == b"data: [DONE]"
        error = json.loads(reader.lines[-2].removeprefix(b"data: "))["error"]
        assert "shutting down" in error["message"] and error["type"] == "server_error"
    [(endpoint, status, outcome, error)] = rows(db)
    assert (endpoint, status, outcome) == (path, 200, "cancelled") and "shutting down" in error
    assert "Traceback" not in proxy.output()


def test_a_second_signal_ends_the_drain_at_once(wsgi_proxy, tmp_path):
    db = tmp_path / "drain.db"
    proxy = wsgi_proxy(BACKEND_TYPE="stub", STUB_DELAY_MS=100, DATABASE_URL=f"sqlite:///{db}", DRAIN_TIMEOUT=60)
    reader = StreamReader(proxy.url + OLLAMA_CHAT, 600)
    reader.start()
    assert reader.first.wait(10)
    proxy.process.send_signal(signal.SIGTERM)
    time.sleep(0.5)
    started = time.monotonic()
    proxy.process.send_signal(signal.SIGINT)
    assert proxy.process.wait(timeout=15) == 0, proxy.output()
    assert time.monotonic() - started < 6
    reader.join(10)
    assert "shutting down" in json.loads(reader.lines[-1])["error"]
    assert [row[2] for row in rows(db)] == ["cancelled"]


def test_a_request_waiting_for_the_backend_after_drain_timeout_gets_503_in_its_dialect(
        wsgi_proxy, fake_upstream, tmp_path):
    from tests.support import fakes

    db = tmp_path / "drain.db"
    fake_upstream.serve_openai_models("qwen3-8b")
    fake_upstream.default("POST", "/v1/chat/completions", fakes.json_reply({"never": "sent"}, hang=30))
    proxy = wsgi_proxy(BACKEND_TYPE="openai", DATABASE_URL=f"sqlite:///{db}", DRAIN_TIMEOUT=1)
    result: dict = {}

    def call() -> None:
        r = requests.post(proxy.url + OPENAI_CHAT, timeout=30, json={
            "model": "qwen3-8b", "stream": False, "messages": [{"role": "user", "content": "hi"}]})
        result["status"], result["body"] = r.status_code, r.json()

    caller = threading.Thread(target=call, daemon=True)
    caller.start()
    deadline = time.monotonic() + 10
    while not fake_upstream.calls("/v1/chat/completions", "POST") and time.monotonic() < deadline:
        time.sleep(0.05)
    proxy.process.send_signal(signal.SIGTERM)
    caller.join(15)
    assert proxy.process.wait(timeout=15) == 0, proxy.output()
    assert result["status"] == 503 and "shutting down" in result["body"]["error"]["message"]
    assert [(row[1], row[2]) for row in rows(db)] == [(503, "cancelled")]


class FreezableRelay:
    """A TCP relay to ``target`` that can stop passing bytes on: a database that stops answering."""

    def __init__(self, target: tuple[str, int]):
        self.target = target
        self.frozen = threading.Event()
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.sockets: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            upstream = socket.create_connection(self.target)
            self.sockets += [client, upstream]
            for src, dst in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(src, dst), daemon=True).start()

    def _pump(self, src: socket.socket, dst: socket.socket) -> None:
        try:
            while True:
                data = src.recv(65536)
                while self.frozen.is_set():
                    time.sleep(0.05)  # held: never delivered
                if not data:
                    return
                dst.sendall(data)
        except OSError:
            return

    def close(self) -> None:
        self.listener.close()
        for sock in self.sockets:
            sock.close()


def test_the_last_log_write_is_bounded_when_the_database_stops_answering(wsgi_proxy, tmp_path):
    from urllib.parse import urlsplit, urlunsplit

    import psycopg2

    from tests.support.store import _drop_pg_schema, _pg_schema_url, pg_url_or_skip

    base = pg_url_or_skip()
    url, schema = _pg_schema_url(base)
    parts = urlsplit(url)
    relay = FreezableRelay((parts.hostname, parts.port or 5432))
    netloc = parts.netloc.rsplit("@", 1)[0] + f"@127.0.0.1:{relay.port}" if "@" in parts.netloc \
        else f"127.0.0.1:{relay.port}"
    body = {"model": "stub", "stream": False, "messages": [{"role": "user", "content": "hi"}]}
    try:
        proxy = wsgi_proxy(BACKEND_TYPE="stub", STUB_DELAY_MS=0, DATABASE_URL=urlunsplit(parts._replace(netloc=netloc)))
        assert requests.post(proxy.url + OLLAMA_CHAT, json=body, timeout=10).status_code == 200
        deadline = time.monotonic() + 10
        while True:  # the first record reached the database through the relay
            with psycopg2.connect(url) as conn, conn.cursor() as cur:
                cur.execute("SELECT COUNT(*) FROM exchanges")
                if cur.fetchone()[0] == 1:
                    break
            assert time.monotonic() < deadline, proxy.output()
            time.sleep(0.2)
        relay.frozen.set()
        assert requests.post(proxy.url + OLLAMA_CHAT, json=body, timeout=10).status_code == 200
        time.sleep(1)  # the writer is now stuck in a write the database never answers
        started = time.monotonic()
        proxy.process.send_signal(signal.SIGTERM)
        assert proxy.process.wait(timeout=30) == 0, proxy.output()
        assert time.monotonic() - started < 12
        assert "did not finish the last write" in proxy.output()
    finally:
        relay.close()
        _drop_pg_schema(base, schema)
