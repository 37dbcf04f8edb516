"""A scripted fake upstream (OpenAI-compatible or Ollama) on a real TCP port.

The server replays `Reply` objects (or responders: callables building a Reply from the
request) queued per (method, path), and records every exchange: the request as received
(headers, raw body, parsed JSON) and what happened to the reply (chunks sent, whether the
client went away, whether it was closed on purpose). Streams use HTTP/1.1 chunked transfer
encoding and are flushed chunk by chunk, so a test can pause an upstream stream (`gate`),
break it (`close_after`) or stall it (`hang`) at a precise point.

Nothing here imports the proxy.
"""

from __future__ import annotations

import collections
import json
import math
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

from tests.support.fake_wire import Reply, json_reply


@dataclass
class RecordedRequest:
    method: str
    path: str
    query: dict[str, list[str]]
    headers: dict[str, str]  # lower-cased names
    body: bytes
    json: Any  # parsed body, or None when the body is empty or not JSON

    def header(self, name: str, default: str | None = None) -> str | None:
        return self.headers.get(name.lower(), default)


@dataclass
class Exchange:
    """What happened to one request: the request, the reply used, and the reply's fate."""

    request: RecordedRequest
    reply: Reply | None = None
    chunks_sent: int = 0
    client_disconnected: bool = False  # the client closed while we were still sending
    aborted: bool = False  # we closed on purpose (close_after)
    completed: bool = False  # whole body and terminating chunk written
    done: threading.Event = field(default_factory=threading.Event)


ReplyOrResponder = Reply | Callable[[RecordedRequest], Reply]


class RequestLog(list):
    """The recorded requests; a list with a few finders."""

    def to(self, path: str, method: str | None = None) -> list[RecordedRequest]:
        return [r for r in self if r.path == path and (method is None or r.method == method)]

    def paths(self) -> list[str]:
        return [r.path for r in self]

    def bodies(self, path: str) -> list[Any]:
        return [r.json for r in self.to(path)]



# --------------------------------------------------------------------------------------------
# The server
# --------------------------------------------------------------------------------------------


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _Server

    def log_message(self, format, *args):  # noqa: A002 - silence stderr access log
        pass

    def do_GET(self):
        self._handle()

    do_POST = do_PUT = do_DELETE = do_HEAD = do_PATCH = do_OPTIONS = do_GET

    # -- request ------------------------------------------------------------------------
    def _read_body(self) -> bytes:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            parts = []
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    break
                parts.append(self.rfile.read(size))
                self.rfile.readline()
            return b"".join(parts)
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def _handle(self):
        fake: FakeUpstream = self.server.fake
        split = urlsplit(self.path)
        body = self._read_body()
        try:
            parsed = json.loads(body) if body else None
        except ValueError:
            parsed = None
        req = RecordedRequest(
            method=self.command,
            path=split.path,
            query=parse_qs(split.query),
            headers={k.lower(): v for k, v in self.headers.items()},
            body=body,
            json=parsed,
        )
        exchange = Exchange(request=req)
        reply = fake._take_reply(self.command, split.path)
        if not isinstance(reply, Reply):  # a responder: builds the reply from the request
            reply = reply(req)
        exchange.reply = reply
        fake._record(exchange)
        try:
            self._send(reply, exchange)
        finally:
            exchange.done.set()

    # -- reply --------------------------------------------------------------------------
    def _peer_closed(self) -> bool:
        """True when the client has closed its side (EOF waiting, read without waiting or consuming)."""
        try:
            return self.connection.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT) == b""
        except BlockingIOError:
            return False
        except OSError:
            return True

    def _wait(self, seconds: float) -> bool:
        """Sleep, waking early when the server stops or the client leaves; False if stopped."""
        stop = self.server.fake._stopping
        end = time.monotonic() + seconds if seconds != math.inf else math.inf
        while not stop.is_set():
            left = end - time.monotonic()
            if left <= 0:
                return True
            if stop.wait(min(left, 0.02)):
                return False
        return False

    def _wait_gate(self, gate: threading.Event) -> bool:
        stop = self.server.fake._stopping
        while not gate.wait(0.02):
            if stop.is_set():
                return False
        return True

    def _abort(self):
        self.close_connection = True
        try:
            self.connection.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass

    def _send(self, reply: Reply, ex: Exchange):
        if reply.hang:
            if not self._wait(reply.hang):
                ex.aborted = True
                self._abort()
                return
            if self._peer_closed():
                ex.client_disconnected = True
                self._abort()
                return
        chunked = reply.use_chunked()
        try:
            self.send_response(reply.status)
            names = {k.lower() for k in reply.headers}
            for k, v in reply.headers.items():
                self.send_header(k, v)
            if chunked:
                self.send_header("Transfer-Encoding", "chunked")
            elif "content-length" not in names:
                self.send_header("Content-Length", str(len(reply.body)))
            self.end_headers()
            self.wfile.flush()
            if self.command == "HEAD":
                ex.completed = True
                return
            if not chunked:
                self.wfile.write(reply.body)
                self.wfile.flush()
                ex.chunks_sent = len(reply.chunks)
                ex.completed = True
                return
            for i, chunk in enumerate(reply.chunks):
                if reply.close_after is not None and i >= reply.close_after:
                    ex.aborted = True
                    self._abort()
                    return
                if reply.gate is not None and i == reply.gate_at and not self._wait_gate(reply.gate):
                    ex.aborted = True
                    self._abort()
                    return
                if i > 0 and reply.delay and not self._wait(reply.delay):
                    ex.aborted = True
                    self._abort()
                    return
                if self._peer_closed():
                    raise ConnectionResetError("peer closed")
                if chunk:
                    self.wfile.write(b"%x\r\n%s\r\n" % (len(chunk), chunk))
                    self.wfile.flush()
                ex.chunks_sent = i + 1
            if reply.close_after is not None and reply.close_after <= len(reply.chunks):
                ex.aborted = True
                self._abort()
                return
            self.wfile.write(b"0\r\n\r\n")
            self.wfile.flush()
            ex.completed = True
        except (BrokenPipeError, ConnectionResetError, ConnectionAbortedError, OSError):
            ex.client_disconnected = True
            self._abort()


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    fake: FakeUpstream

    def handle_error(self, request, client_address):  # a dropped client is not an error here
        pass


class FakeUpstream:
    """A scripted HTTP server on 127.0.0.1; use `expect`/`default` to script, `requests` to check.

    Unscripted routes answer 404 with an OpenAI-shaped error body under /v1 and an
    Ollama-shaped one elsewhere, so a test sees at once what the proxy asked for.
    """

    def __init__(self):
        self._lock = threading.Lock()
        self._queues: dict[tuple[str, str], collections.deque[ReplyOrResponder]] = {}
        self._defaults: dict[tuple[str, str], ReplyOrResponder] = {}
        self._stopping = threading.Event()
        self.exchanges: list[Exchange] = []
        self.requests = RequestLog()
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    # -- lifecycle ----------------------------------------------------------------------
    def start(self) -> FakeUpstream:
        self._server = _Server(("127.0.0.1", 0), _Handler)
        self._server.fake = self
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self._thread.start()
        return self

    def stop(self):
        self._stopping.set()
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()

    @property
    def port(self) -> int:
        assert self._server is not None, "server not started"
        return self._server.server_address[1]

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    # -- scripting ----------------------------------------------------------------------
    def expect(self, method: str, path: str, *replies: ReplyOrResponder) -> FakeUpstream:
        """Queue replies for (method, path); each is used once, in order, before the default.
        A reply may be a responder: a callable taking the RecordedRequest and returning a Reply."""
        with self._lock:
            self._queues.setdefault((method.upper(), path), collections.deque()).extend(replies)
        return self

    def default(self, method: str, path: str, reply: ReplyOrResponder) -> FakeUpstream:
        """Reply used for (method, path) whenever its queue is empty (reused, never consumed)."""
        with self._lock:
            self._defaults[(method.upper(), path)] = reply
        return self

    def _take_reply(self, method: str, path: str) -> ReplyOrResponder:
        key = (method.upper(), path)
        with self._lock:
            q = self._queues.get(key)
            if q:
                return q.popleft()
            if key in self._defaults:
                return self._defaults[key]
            if method.upper() == "HEAD" and ("GET", path) in self._defaults:
                return self._defaults[("GET", path)]
        msg = f"fake upstream: no reply scripted for {method} {path}"
        if path.startswith("/v1/"):
            return json_reply({"error": {"message": msg, "type": "not_found_error", "param": None,
                                         "code": None}}, status=404)
        return json_reply({"error": msg}, status=404)

    def pending(self) -> dict[tuple[str, str], int]:
        """Queued replies not used yet (a test can assert its script was consumed)."""
        with self._lock:
            return {k: len(v) for k, v in self._queues.items() if v}

    def _record(self, ex: Exchange):
        with self._lock:
            self.exchanges.append(ex)
            self.requests.append(ex.request)

    # -- inspection ---------------------------------------------------------------------
    def calls(self, path: str, method: str | None = None) -> list[RecordedRequest]:
        return self.requests.to(path, method)

    def exchanges_to(self, path: str) -> list[Exchange]:
        return [e for e in self.exchanges if e.request.path == path]

    def last(self, path: str | None = None) -> RecordedRequest:
        reqs = self.requests if path is None else self.requests.to(path)
        assert reqs, f"no request to {path or 'any path'} was received; got {self.requests.paths()}"
        return reqs[-1]

    def wait_for(self, path: str, count: int = 1, timeout: float = 5.0) -> list[RecordedRequest]:
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            got = self.requests.to(path)
            if len(got) >= count:
                return got
            time.sleep(0.01)
        raise AssertionError(
            f"expected {count} request(s) to {path} within {timeout}s; got {self.requests.paths()}"
        )

    # -- presets ------------------------------------------------------------------------
    def serve_openai_models(self, *ids: str, **extra: Any) -> FakeUpstream:
        """GET /v1/models lists `ids` (extra keys merged into every entry, e.g. max_model_len)."""
        from tests.support.fake_openai import openai_models

        return self.default("GET", "/v1/models", json_reply(openai_models(*ids, **extra)))

    def serve_llamacpp(self, model_id: str = "smollm2", n_ctx: int = 2048) -> FakeUpstream:
        """Look like llama-server: /v1/models with `meta`, and /props with n_ctx."""
        from tests.support.fake_openai import llamacpp_models, llamacpp_props

        self.default("GET", "/v1/models", json_reply(llamacpp_models(model_id, n_ctx=n_ctx)))
        self.default("GET", "/props", json_reply(llamacpp_props(model_id, n_ctx=n_ctx)))
        return self

    def serve_ollama_models(self, *names: str) -> FakeUpstream:
        """GET /api/tags lists `names`, /api/version answers, /api/show describes any model."""
        from tests.support.fake_ollama import ollama_show, ollama_tags

        self.default("GET", "/api/tags", json_reply(ollama_tags(*names)))
        self.default("GET", "/api/version", json_reply({"version": "0.12.6"}))
        self.default("POST", "/api/show", json_reply(ollama_show()))
        self.default("GET", "/api/ps", json_reply({"models": []}))
        return self

