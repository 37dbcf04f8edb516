"""A scripted fake upstream (OpenAI-compatible or Ollama) on a real TCP port, plus reply builders.

The server replays `Reply` objects queued per (method, path) and records every exchange: the
request as received (headers, raw body, parsed JSON) and what happened to the reply (chunks
sent, whether the client went away, whether it was closed on purpose). Streams use HTTP/1.1
chunked transfer encoding and are flushed chunk by chunk, so a test can pause an upstream
stream (`gate`), break it (`close_after`) or stall it (`hang`) at a precise point.

Nothing here imports the proxy; the module only knows the two wire formats.
"""

from __future__ import annotations

import base64
import collections
import json
import math
import select
import socket
import struct
import threading
import time
import uuid
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Callable, Iterable, Union
from urllib.parse import parse_qs, urlsplit

DATA_DIR = Path(__file__).parent / "data"
WIRE_DIR = DATA_DIR / "wire"

SSE = "text/event-stream"
NDJSON = "application/x-ndjson"
JSON = "application/json"

# --------------------------------------------------------------------------------------------
# Replies and records
# --------------------------------------------------------------------------------------------


@dataclass
class Reply:
    """One scripted upstream response.

    chunks       body pieces, each written and flushed on its own (one HTTP chunk each when
                 `chunked`); an empty list means an empty body.
    delay        seconds to sleep before every chunk after the first.
    gate         a threading.Event the server waits on before sending chunk number `gate_at`
                 (0-based); the wait ends when the gate is set or the server stops.
    close_after  after this many chunks, close the socket abruptly (no terminating chunk).
    hang         seconds to wait before sending anything (status line included);
                 math.inf waits until the server stops. Provokes client timeouts.
    chunked      use chunked transfer encoding; None = chunked when there is more than one
                 chunk or any stream control (gate/close_after/delay) is set.
    """

    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)
    chunks: list[bytes] = field(default_factory=list)
    delay: float = 0.0
    gate: threading.Event | None = None
    gate_at: int = 1
    close_after: int | None = None
    hang: float | None = None
    chunked: bool | None = None

    @property
    def body(self) -> bytes:
        return b"".join(self.chunks)

    def use_chunked(self) -> bool:
        if self.chunked is not None:
            return self.chunked
        return (
            len(self.chunks) > 1
            or self.gate is not None
            or self.close_after is not None
            or self.delay > 0
        )


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


ReplyOrResponder = Union[Reply, Callable[[RecordedRequest], Reply]]


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
    server: "_Server"

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
        """True when the client has closed its side (readable with EOF)."""
        try:
            readable, _, _ = select.select([self.connection], [], [], 0)
            if not readable:
                return False
            return self.connection.recv(1, socket.MSG_PEEK) == b""
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
                if reply.gate is not None and i == reply.gate_at:
                    if not self._wait_gate(reply.gate):
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
    fake: "FakeUpstream"

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
    def start(self) -> "FakeUpstream":
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
    def expect(self, method: str, path: str, *replies: ReplyOrResponder) -> "FakeUpstream":
        """Queue replies for (method, path); each is used once, in order, before the default.
        A reply may be a responder: a callable taking the RecordedRequest and returning a Reply."""
        with self._lock:
            self._queues.setdefault((method.upper(), path), collections.deque()).extend(replies)
        return self

    def default(self, method: str, path: str, reply: ReplyOrResponder) -> "FakeUpstream":
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
            return json_reply(openai_error(msg, "not_found_error"), status=404)
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
    def serve_openai_models(self, *ids: str, **extra: Any) -> "FakeUpstream":
        """GET /v1/models lists `ids` (extra keys merged into every entry, e.g. max_model_len)."""
        return self.default("GET", "/v1/models", json_reply(openai_models(*ids, **extra)))

    def serve_llamacpp(self, model_id: str = "smollm2", n_ctx: int = 2048) -> "FakeUpstream":
        """Look like llama-server: /v1/models with `meta`, and /props with n_ctx."""
        self.default("GET", "/v1/models", json_reply(llamacpp_models(model_id, n_ctx=n_ctx)))
        self.default("GET", "/props", json_reply(llamacpp_props(model_id, n_ctx=n_ctx)))
        return self

    def serve_ollama_models(self, *names: str) -> "FakeUpstream":
        """GET /api/tags lists `names`, /api/version answers, /api/show describes any model."""
        self.default("GET", "/api/tags", json_reply(ollama_tags(*names)))
        self.default("GET", "/api/version", json_reply({"version": "0.12.6"}))
        self.default("POST", "/api/show", json_reply(ollama_show()))
        self.default("GET", "/api/ps", json_reply({"models": []}))
        return self


# --------------------------------------------------------------------------------------------
# Fixture files
# --------------------------------------------------------------------------------------------


def wire_path(name: str) -> Path:
    path = WIRE_DIR / name
    assert path.exists(), f"no wire fixture {name}"
    return path


def load_json(name: str) -> Any:
    return json.loads(wire_path(name).read_text())


def sse_events(name_or_bytes: str | bytes) -> list[bytes]:
    """Split an SSE body into events, each with its trailing blank line (`event:` kept with
    its `data:`)."""
    raw = wire_path(name_or_bytes).read_bytes() if isinstance(name_or_bytes, str) else name_or_bytes
    raw = raw.replace(b"\r\n", b"\n")
    return [part + b"\n\n" for part in raw.split(b"\n\n") if part.strip()]


def sse_payloads(name_or_bytes: str | bytes) -> list[Any]:
    """The parsed `data:` objects of an SSE body (the string "[DONE]" kept as is)."""
    out = []
    for event in sse_events(name_or_bytes):
        data = [ln[5:].lstrip() for ln in event.split(b"\n") if ln.startswith(b"data:")]
        if not data:
            continue
        joined = b"\n".join(data)
        out.append("[DONE]" if joined == b"[DONE]" else json.loads(joined))
    return out


def ndjson_lines(name_or_bytes: str | bytes) -> list[bytes]:
    raw = wire_path(name_or_bytes).read_bytes() if isinstance(name_or_bytes, str) else name_or_bytes
    return [ln + b"\n" for ln in raw.split(b"\n") if ln.strip()]


def ndjson_objects(name_or_bytes: str | bytes) -> list[Any]:
    return [json.loads(ln) for ln in ndjson_lines(name_or_bytes)]


# --------------------------------------------------------------------------------------------
# Reply builders
# --------------------------------------------------------------------------------------------


def json_reply(obj: Any, status: int = 200, **kw: Any) -> Reply:
    headers = {"Content-Type": JSON, **kw.pop("headers", {})}
    return Reply(status=status, headers=headers, chunks=[json.dumps(obj).encode()], **kw)


def text_reply(text: str | bytes, status: int = 200, content_type: str = "text/plain", **kw) -> Reply:
    body = text.encode() if isinstance(text, str) else text
    return Reply(status=status, headers={"Content-Type": content_type}, chunks=[body], **kw)


def sse_reply(events: str | bytes | Iterable[Any], **kw: Any) -> Reply:
    """An SSE stream: a fixture name, raw SSE bytes, or objects (dicts become `data: json`,
    bytes are sent verbatim, "[DONE]" becomes the terminator)."""
    if isinstance(events, (str, bytes)) and not (isinstance(events, str) and events == "[DONE]"):
        chunks = sse_events(events)
    else:
        chunks = [encode_sse(e) for e in events]
    headers = {"Content-Type": SSE, "Cache-Control": "no-cache", **kw.pop("headers", {})}
    return Reply(status=kw.pop("status", 200), headers=headers, chunks=chunks, chunked=True, **kw)


def ndjson_reply(lines: str | bytes | Iterable[Any], **kw: Any) -> Reply:
    """An NDJSON stream: a fixture name, raw bytes, or objects (one line each)."""
    if isinstance(lines, (str, bytes)):
        chunks = ndjson_lines(lines)
    else:
        chunks = [l if isinstance(l, bytes) else json.dumps(l).encode() + b"\n" for l in lines]
    headers = {"Content-Type": NDJSON, **kw.pop("headers", {})}
    return Reply(status=kw.pop("status", 200), headers=headers, chunks=chunks, chunked=True, **kw)


def encode_sse(obj: Any) -> bytes:
    if isinstance(obj, bytes):
        return obj
    if obj == "[DONE]":
        return b"data: [DONE]\n\n"
    return b"data: " + json.dumps(obj).encode() + b"\n\n"


# -- OpenAI-shaped bodies ---------------------------------------------------------------------

CREATED = 1752169304


def openai_error(message: str, type_: str = "invalid_request_error", code: Any = None,
                 param: Any = None) -> dict:
    return {"error": {"message": message, "type": type_, "param": param, "code": code}}


def openai_models(*ids: str, **extra: Any) -> dict:
    return {
        "object": "list",
        "data": [
            {"id": i, "object": "model", "created": CREATED, "owned_by": "fake", **extra}
            for i in ids
        ],
    }


def llamacpp_models(model_id: str = "smollm2", n_ctx: int = 2048) -> dict:
    """llama-server's /v1/models (section 7 of api-surface.md): an Ollama-like `models` list
    with empty strings where numbers belong, and an OpenAI `data` list with `meta`."""
    return {
        "models": [{
            "name": model_id, "model": model_id, "modified_at": "", "size": "", "digest": "",
            "type": "model", "description": "", "tags": [""], "capabilities": ["completion"],
            "parameters": "", "details": {"parent_model": "", "format": "gguf", "family": "",
                                          "families": [""], "parameter_size": "",
                                          "quantization_level": ""},
        }],
        "object": "list",
        "data": [{
            "id": model_id, "aliases": [model_id], "tags": [], "object": "model",
            "created": CREATED, "owned_by": "llamacpp",
            "meta": {"vocab_type": 2, "n_vocab": 49152, "n_ctx": n_ctx, "n_ctx_train": 8192,
                     "n_embd": 576, "n_params": 134515008, "size": 96576768, "ftype": "Q4_1"},
        }],
    }


def llamacpp_props(model_id: str = "smollm2", n_ctx: int = 2048) -> dict:
    return {
        "default_generation_settings": {"n_ctx": n_ctx, "params": {"temperature": 0.8}},
        "total_slots": 1, "model_path": f"/models/{model_id}.gguf", "chat_template": "",
        "build_info": "b1-0c1e570",
    }


def openai_chunk(*, content: str | None = None, role: str | None = None,
                 reasoning_content: str | None = None, reasoning: str | None = None,
                 tool_calls: list | None = None, finish_reason: str | None = None,
                 usage: dict | None = None, model: str = "up-model", id: str = "chatcmpl-up1",
                 choices: list | None = None) -> dict:
    delta: dict[str, Any] = {}
    if role is not None:
        delta["role"] = role
    if content is not None:
        delta["content"] = content
    if reasoning_content is not None:
        delta["reasoning_content"] = reasoning_content
    if reasoning is not None:
        delta["reasoning"] = reasoning
    if tool_calls is not None:
        delta["tool_calls"] = tool_calls
    chunk = {
        "id": id, "object": "chat.completion.chunk", "created": CREATED, "model": model,
        "system_fingerprint": "fp_fake",
        "choices": choices if choices is not None else [
            {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish_reason}],
    }
    if usage is not None:
        chunk["usage"] = usage
    return chunk


def usage(prompt: int, completion: int) -> dict:
    return {"prompt_tokens": prompt, "completion_tokens": completion,
            "total_tokens": prompt + completion}


def openai_stream_events(pieces: Iterable[str] = ("Hello", " world"), *, finish: str = "stop",
                         prompt_tokens: int | None = 7, completion_tokens: int | None = None,
                         reasoning: Iterable[str] = (), reasoning_field: str = "reasoning_content",
                         tool_calls: Iterable[dict] = (), usage_chunk: bool = True,
                         model: str = "up-model", done: bool = True) -> list[Any]:
    """Objects of an OpenAI chat stream: role chunk, reasoning deltas, content deltas, tool-call
    fragments (each dict in `tool_calls` is one `delta.tool_calls` entry), finish chunk, an
    optional usage-only chunk (`choices: []`), then [DONE]."""
    pieces = list(pieces)
    out: list[Any] = [openai_chunk(role="assistant", content="", model=model)]
    for r in reasoning:
        out.append(openai_chunk(model=model, **{reasoning_field: r}))
    for p in pieces:
        out.append(openai_chunk(content=p, model=model))
    for tc in tool_calls:
        out.append(openai_chunk(tool_calls=[tc], model=model))
    out.append(openai_chunk(finish_reason=finish, model=model))
    if usage_chunk and prompt_tokens is not None:
        n = completion_tokens if completion_tokens is not None else len(pieces)
        out.append(openai_chunk(choices=[], usage=usage(prompt_tokens, n), model=model))
    if done:
        out.append("[DONE]")
    return out


def openai_stream(pieces: Iterable[str] = ("Hello", " world"), **kw: Any) -> Reply:
    reply_kw = {k: kw.pop(k) for k in ("delay", "gate", "gate_at", "close_after", "hang")
                if k in kw}
    return sse_reply(openai_stream_events(pieces, **kw), **reply_kw)


def tool_call_fragments(name: str, arguments: str, *, index: int = 0, id: str = "call_up1",
                        pieces: int = 3) -> list[dict]:
    """OpenAI-style fragments of one tool call: id + name + "" first, then argument pieces."""
    first = {"index": index, "id": id, "type": "function",
             "function": {"name": name, "arguments": ""}}
    step = max(1, math.ceil(len(arguments) / pieces))
    rest = [{"index": index, "function": {"arguments": arguments[i:i + step]}}
            for i in range(0, len(arguments), step)]
    return [first, *rest]


def openai_completion(content: str | None = "Hello world", *, tool_calls: list | None = None,
                      reasoning_content: str | None = None, reasoning: str | None = None,
                      finish: str | None = None, prompt_tokens: int = 7,
                      completion_tokens: int = 2, model: str = "up-model",
                      id: str = "chatcmpl-up1") -> dict:
    message: dict[str, Any] = {"role": "assistant", "content": content, "refusal": None}
    if reasoning_content is not None:
        message["reasoning_content"] = reasoning_content
    if reasoning is not None:
        message["reasoning"] = reasoning
    if tool_calls is not None:
        message["tool_calls"] = tool_calls
    return {
        "id": id, "object": "chat.completion", "created": CREATED, "model": model,
        "system_fingerprint": "fp_fake",
        "choices": [{"index": 0, "message": message, "logprobs": None,
                     "finish_reason": finish or ("tool_calls" if tool_calls else "stop")}],
        "usage": usage(prompt_tokens, completion_tokens),
    }


def openai_tool_call(name: str, arguments: str, id: str = "call_up1") -> dict:
    return {"id": id, "type": "function", "function": {"name": name, "arguments": arguments}}


def openai_text_completion(text: str = "Hello world", *, finish: str = "stop",
                           prompt_tokens: int = 5, completion_tokens: int = 2,
                           model: str = "up-model") -> dict:
    return {
        "id": "cmpl-up1", "object": "text_completion", "created": CREATED, "model": model,
        "choices": [{"text": text, "index": 0, "logprobs": None, "finish_reason": finish}],
        "usage": usage(prompt_tokens, completion_tokens),
    }


def openai_text_completion_events(pieces: Iterable[str] = ("Hello", " world"), *,
                                  finish: str = "stop", model: str = "up-model",
                                  prompt_tokens: int | None = 5) -> list[Any]:
    pieces = list(pieces)
    out: list[Any] = []
    for p in pieces:
        out.append({"id": "cmpl-up1", "object": "text_completion", "created": CREATED,
                    "model": model, "choices": [{"text": p, "index": 0, "logprobs": None,
                                                 "finish_reason": None}]})
    out.append({"id": "cmpl-up1", "object": "text_completion", "created": CREATED,
                "model": model, "choices": [{"text": "", "index": 0, "logprobs": None,
                                             "finish_reason": finish}]})
    if prompt_tokens is not None:
        out.append({"id": "cmpl-up1", "object": "text_completion", "created": CREATED,
                    "model": model, "choices": [],
                    "usage": usage(prompt_tokens, len(pieces))})
    out.append("[DONE]")
    return out


def openai_embeddings(vectors: list[list[float]], *, model: str = "up-embed",
                      encoding_format: str = "float", prompt_tokens: int = 3) -> dict:
    def enc(v):
        return pack_floats(v) if encoding_format == "base64" else v
    return {
        "object": "list",
        "data": [{"object": "embedding", "index": i, "embedding": enc(v)}
                 for i, v in enumerate(vectors)],
        "model": model,
        "usage": {"prompt_tokens": prompt_tokens, "total_tokens": prompt_tokens},
    }


def pack_floats(vec: Iterable[float]) -> str:
    vec = list(vec)
    return base64.b64encode(struct.pack(f"<{len(vec)}f", *vec)).decode()


def unpack_floats(b64: str) -> list[float]:
    raw = base64.b64decode(b64)
    return list(struct.unpack(f"<{len(raw) // 4}f", raw))


# -- Ollama-shaped bodies ---------------------------------------------------------------------

OLLAMA_TS = "2025-07-07T20:22:19.184789Z"


def ollama_chat_chunk(content: str = "", *, thinking: str | None = None,
                      tool_calls: list | None = None, done: bool = False,
                      done_reason: str | None = None, model: str = "up-model",
                      **metrics: Any) -> dict:
    message: dict[str, Any] = {"role": "assistant", "content": content}
    if thinking is not None:
        message["thinking"] = thinking
    if tool_calls is not None:
        message["tool_calls"] = tool_calls
    obj: dict[str, Any] = {"model": model, "created_at": OLLAMA_TS, "message": message,
                           "done": done}
    if done_reason is not None:
        obj["done_reason"] = done_reason
    obj.update(metrics)
    return obj


DEFAULT_METRICS = {"total_duration": 182242375, "load_duration": 41295167,
                   "prompt_eval_count": 11, "prompt_eval_duration": 24573166,
                   "eval_count": 2, "eval_duration": 115959084}


def ollama_chat_stream_objects(pieces: Iterable[str] = ("Hello", " world"), *,
                               thinking: Iterable[str] = (), tool_calls: list | None = None,
                               done_reason: str = "stop", model: str = "up-model",
                               **metrics: Any) -> list[dict]:
    out = [ollama_chat_chunk("", thinking=t, model=model) for t in thinking]
    out += [ollama_chat_chunk(p, model=model) for p in pieces]
    if tool_calls:
        out.append(ollama_chat_chunk("", tool_calls=tool_calls, model=model))
    out.append(ollama_chat_chunk("", done=True, done_reason=done_reason, model=model,
                                 **{**DEFAULT_METRICS, **metrics}))
    return out


def ollama_chat_stream(pieces: Iterable[str] = ("Hello", " world"), **kw: Any) -> Reply:
    reply_kw = {k: kw.pop(k) for k in ("delay", "gate", "gate_at", "close_after", "hang")
                if k in kw}
    return ndjson_reply(ollama_chat_stream_objects(pieces, **kw), **reply_kw)


def ollama_chat_response(content: str = "Hello world", *, thinking: str | None = None,
                         tool_calls: list | None = None, done_reason: str = "stop",
                         model: str = "up-model", **metrics: Any) -> dict:
    return ollama_chat_chunk(content, thinking=thinking, tool_calls=tool_calls, done=True,
                             done_reason=done_reason, model=model,
                             **{**DEFAULT_METRICS, **metrics})


def ollama_tool_call(name: str, arguments: dict, *, id: str | None = None,
                     index: int | None = None) -> dict:
    fn: dict[str, Any] = {"name": name, "arguments": arguments}
    if index is not None:
        fn["index"] = index
    call: dict[str, Any] = {"function": fn}
    if id is not None:
        call["id"] = id
    return call


def ollama_generate_chunk(response: str = "", *, thinking: str | None = None, done: bool = False,
                          done_reason: str | None = None, model: str = "up-model",
                          **metrics: Any) -> dict:
    obj: dict[str, Any] = {"model": model, "created_at": OLLAMA_TS, "response": response,
                           "done": done}
    if thinking is not None:
        obj["thinking"] = thinking
    if done_reason is not None:
        obj["done_reason"] = done_reason
    obj.update(metrics)
    return obj


def ollama_generate_stream_objects(pieces: Iterable[str] = ("Hello", " world"), *,
                                   model: str = "up-model", **metrics: Any) -> list[dict]:
    out = [ollama_generate_chunk(p, model=model) for p in pieces]
    out.append(ollama_generate_chunk("", done=True, done_reason="stop", model=model,
                                     **{**DEFAULT_METRICS, **metrics}))
    return out


def ollama_generate_response(response: str = "Hello world", *, thinking: str | None = None,
                             model: str = "up-model", **metrics: Any) -> dict:
    return ollama_generate_chunk(response, thinking=thinking, done=True, done_reason="stop",
                                 model=model, **{**DEFAULT_METRICS, **metrics})


def ollama_tags(*names: str) -> dict:
    return {"models": [
        {"name": n, "model": n, "modified_at": "2025-05-04T17:37:44.706015396-07:00",
         "size": 2019393189, "digest": uuid.uuid5(uuid.NAMESPACE_URL, n).hex * 2,
         "details": {"parent_model": "", "format": "gguf", "family": "llama",
                     "families": ["llama"], "parameter_size": "3.2B",
                     "quantization_level": "Q4_K_M"}}
        for n in names]}


def ollama_show(*, family: str = "llama", context_length: int = 131072,
                capabilities: Iterable[str] = ("completion", "tools")) -> dict:
    return {
        "modelfile": "# fake\nFROM x\n", "parameters": 'stop "<|eot_id|>"',
        "template": "{{ .Prompt }}",
        "details": {"parent_model": "", "format": "gguf", "family": family,
                    "families": [family], "parameter_size": "3.2B",
                    "quantization_level": "Q4_K_M"},
        "model_info": {"general.architecture": family, "general.parameter_count": 3212749888,
                       f"{family}.context_length": context_length,
                       f"{family}.embedding_length": 3072},
        "capabilities": list(capabilities),
        "modified_at": "2025-05-04T17:37:44.706015396-07:00",
    }


def ollama_embed(vectors: list[list[float]], *, model: str = "up-embed",
                 prompt_eval_count: int = 3) -> dict:
    return {"model": model, "embeddings": vectors, "total_duration": 14143917,
            "load_duration": 1019500, "prompt_eval_count": prompt_eval_count}


# -- images -----------------------------------------------------------------------------------

# 1x1 images; only the magic bytes matter for MIME sniffing.
PNG_1PX = base64.b64encode(
    bytes.fromhex("89504e470d0a1a0a0000000d4948445200000001000000010806000000"
                  "1f15c4890000000d49444154789c6360000002000154a24f5d0000000049454e44ae426082")
).decode()
JPEG_MAGIC = base64.b64encode(bytes.fromhex("ffd8ffe000104a46494600010100000100010000ffd9")).decode()
GIF_1PX = base64.b64encode(b"GIF89a\x01\x00\x01\x00\x00\x00\x00;").decode()
WEBP_MAGIC = base64.b64encode(b"RIFF\x1a\x00\x00\x00WEBPVP8L\x0d\x00\x00\x00/\x00\x00\x00\x00").decode()


# --------------------------------------------------------------------------------------------
# Responders: one script that answers stream and non-stream requests alike
# --------------------------------------------------------------------------------------------

_REPLY_KW = ("delay", "gate", "gate_at", "close_after", "hang")


def _split_reply_kw(kw: dict) -> dict:
    return {k: kw.pop(k) for k in _REPLY_KW if k in kw}


def openai_chat_responder(pieces: Iterable[str] = ("Hello", " world"), *,
                          reasoning: Iterable[str] = (), reasoning_field: str = "reasoning_content",
                          tool_calls: Iterable[tuple[str, str, str]] = (), finish: str | None = None,
                          prompt_tokens: int = 7, completion_tokens: int | None = None,
                          usage_on_finish_chunk: bool = False, model: str = "up-model",
                          **reply_kw: Any) -> Callable[[RecordedRequest], Reply]:
    """An OpenAI /v1/chat/completions upstream answering like a real one: SSE when the request
    says `stream: true` (usage-only chunk only if `stream_options.include_usage`, or usage on
    the finish chunk like llama.cpp when `usage_on_finish_chunk`), JSON otherwise.
    `tool_calls` holds (name, arguments JSON string, id) triples."""
    pieces, reasoning, tool_calls = list(pieces), list(reasoning), list(tool_calls)
    finish = finish or ("tool_calls" if tool_calls else "stop")
    n_completion = completion_tokens if completion_tokens is not None else len(pieces) + len(reasoning)

    def respond(req: RecordedRequest) -> Reply:
        body = req.json or {}
        if not body.get("stream"):
            msg_reasoning = "".join(reasoning) or None
            return json_reply(openai_completion(
                "".join(pieces) if pieces or not tool_calls else None,
                tool_calls=[openai_tool_call(n, a, i) for n, a, i in tool_calls] or None,
                finish=finish, prompt_tokens=prompt_tokens, completion_tokens=n_completion,
                model=model, **({reasoning_field: msg_reasoning} if msg_reasoning else {})))
        frags = [f for idx, (n, a, i) in enumerate(tool_calls)
                 for f in tool_call_fragments(n, a, index=idx, id=i)]
        include = bool((body.get("stream_options") or {}).get("include_usage"))
        events = openai_stream_events(pieces, finish=finish, prompt_tokens=prompt_tokens,
                                      completion_tokens=n_completion, reasoning=reasoning,
                                      reasoning_field=reasoning_field, tool_calls=frags,
                                      usage_chunk=include and not usage_on_finish_chunk,
                                      model=model)
        if usage_on_finish_chunk:
            events[-2]["usage"] = usage(prompt_tokens, n_completion)
        return sse_reply(events, **dict(reply_kw))

    return respond


def ollama_chat_responder(pieces: Iterable[str] = ("Hello", " world"), *,
                          thinking: Iterable[str] = (), tool_calls: list | None = None,
                          done_reason: str = "stop", model: str = "up-model",
                          **kw: Any) -> Callable[[RecordedRequest], Reply]:
    """An Ollama /api/chat upstream: NDJSON unless the request says `stream: false`."""
    reply_kw = _split_reply_kw(kw)
    pieces, thinking = list(pieces), list(thinking)

    def respond(req: RecordedRequest) -> Reply:
        body = req.json or {}
        if body.get("stream", True) is False:
            return json_reply(ollama_chat_response(
                "".join(pieces), thinking="".join(thinking) or None, tool_calls=tool_calls,
                done_reason=done_reason, model=model, **kw))
        return ndjson_reply(ollama_chat_stream_objects(
            pieces, thinking=thinking, tool_calls=tool_calls, done_reason=done_reason,
            model=model, **kw), **reply_kw)

    return respond


def ollama_generate_responder(pieces: Iterable[str] = ("Hello", " world"), *,
                              model: str = "up-model", **kw: Any) -> Callable[[RecordedRequest], Reply]:
    """An Ollama /api/generate upstream: NDJSON unless the request says `stream: false`."""
    reply_kw = _split_reply_kw(kw)
    pieces = list(pieces)

    def respond(req: RecordedRequest) -> Reply:
        if (req.json or {}).get("stream", True) is False:
            return json_reply(ollama_generate_response("".join(pieces), model=model, **kw))
        return ndjson_reply(ollama_generate_stream_objects(pieces, model=model, **kw), **reply_kw)

    return respond


def openai_text_completion_responder(pieces: Iterable[str] = ("Hello", " world"), *,
                                     model: str = "up-model",
                                     **reply_kw: Any) -> Callable[[RecordedRequest], Reply]:
    """An OpenAI /v1/completions upstream: SSE when `stream: true`, JSON otherwise."""
    pieces = list(pieces)

    def respond(req: RecordedRequest) -> Reply:
        body = req.json or {}
        if not body.get("stream"):
            return json_reply(openai_text_completion("".join(pieces), model=model,
                                                     completion_tokens=len(pieces)))
        include = bool((body.get("stream_options") or {}).get("include_usage"))
        events = openai_text_completion_events(pieces, model=model,
                                               prompt_tokens=5 if include else None)
        return sse_reply(events, **dict(reply_kw))

    return respond


def openai_embeddings_responder(vectors: list[list[float]], *, model: str = "up-embed",
                                prompt_tokens: int = 3) -> Callable[[RecordedRequest], Reply]:
    """An OpenAI /v1/embeddings upstream honouring `encoding_format`."""
    def respond(req: RecordedRequest) -> Reply:
        fmt = (req.json or {}).get("encoding_format") or "float"
        return json_reply(openai_embeddings(vectors, model=model, encoding_format=fmt,
                                            prompt_tokens=prompt_tokens))

    return respond
