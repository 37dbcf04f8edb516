"""The backend seam: ``Backend`` and ``Upstream``, the Protocols the views program against, and their HTTP
implementation: requests over the backend's pooled connection (``wire``), bodies read as they arrive and
bounded, and the one table that turns every upstream failure into a ``ProxyError`` naming the backend."""
from __future__ import annotations

import logging
import socket
import ssl
import time
import zlib
from collections.abc import Callable, Iterator
from typing import Any, Protocol

from geventhttpclient.response import HTTPParseError

from .. import jsonio
from ..catalog import ModelInfo
from ..config import Settings
from ..errors import (
    BackendTimeout,
    BackendUnavailable,
    ProxyError,
    UpstreamStatus,
    code_from_upstream_body,
    message_from_upstream_body,
)
from ..framing import FrameTooLarge
from .wire import (
    READ_SIZE,
    Connection,
    ConnectTimeout,
    ProxyFailed,
    Response,
    ResponseTooLarge,
    ca_bundle,
    split_credentials,
)

log = logging.getLogger(__name__)
MAX_ERROR_BODY = 1048576  # of an error answer, what is read for its message; the rest is dropped with the connection
YIELD_EVERY = 1048576  # bytes read before a reader lets other greenlets run, waiting or not
# What talking to an upstream can raise besides ProxyErrors: the parser's, the socket's, the wire's, the bounds'.
UPSTREAM_ERRORS = (HTTPParseError, OSError, zlib.error, ResponseTooLarge, ConnectTimeout, ProxyFailed)
# Content-Encoding -> zlib window bits for the decoder (the proxy asks for none, a backend may send one anyway)
DECODERS = {"gzip": 16 + zlib.MAX_WBITS, "x-gzip": 16 + zlib.MAX_WBITS, "deflate": zlib.MAX_WBITS}


# --------------------------------------------------------------------------------------------
# upstream failures -> ProxyError: one table, first match wins, each rule looks down the cause chain
# --------------------------------------------------------------------------------------------


def _chain(exc: BaseException) -> Iterator[BaseException]:
    """``exc`` and what it wraps: exception arguments, ``__cause__``/``__context__``."""
    seen: set[int] = set()
    todo = [exc]
    while todo:
        current = todo.pop(0)
        if id(current) in seen:
            continue
        seen.add(id(current))
        yield current
        inner = [current.__cause__, current.__context__, *getattr(current, "args", ())]
        todo.extend(e for e in inner if isinstance(e, BaseException))


def _text(exc: BaseException) -> str:
    if isinstance(exc, ssl.SSLCertVerificationError) and exc.verify_message:
        return f"certificate verify failed: {exc.verify_message}"
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    if exc.args and isinstance(exc.args[0], str):
        return exc.args[0]
    return str(exc) or type(exc).__name__


def _innermost(exc: BaseException) -> BaseException:
    *_, last = _chain(exc)
    return last


_READ_TIMEOUTS = (socket.timeout, TimeoutError)
DEADLINE_SLACK_S = 0.01  # a socket timeout set to end at the deadline may fire this much before it
_NAME_FAILURES = (socket.gaierror,)

# (what the failure is, when it is met, the error). ``n``: the backend named; ``c``: the call's timeouts,
# whether the body was being read; ``e``: the matching exception in the chain.
FAILURES: tuple[tuple[Any, Callable[..., ProxyError]], ...] = (
    (ResponseTooLarge, lambda n, c, e: BackendUnavailable(f"{n} sent {e}{c.hint(e)}")),
    (FrameTooLarge, lambda n, c, e: BackendUnavailable(f"{n} {e.message}")),
    (ssl.SSLError, lambda n, c, e: BackendUnavailable(f"cannot reach {n}: TLS failed: {_text(e)}")),
    (ProxyFailed, lambda n, c, e: BackendUnavailable(
        f"cannot reach {n} through the proxy: {_text(_innermost(e))}")),
    (_NAME_FAILURES, lambda n, c, e: BackendUnavailable(f"cannot connect to {n}: {_text(_innermost(e))}")),
    (ConnectionRefusedError, lambda n, c, e: BackendUnavailable(f"cannot connect to {n}: connection refused")),
    (ConnectTimeout, lambda n, c, e: BackendTimeout(f"{n} did not accept a connection within {c.connect:g} s")),
    (_READ_TIMEOUTS, lambda n, c, e: c.over() or BackendTimeout(f"{n} stopped sending for {c.read:g} s" if c.reading
                                                                else f"{n} did not answer within {c.read:g} s")),
    (zlib.error, lambda n, c, e: BackendUnavailable(
        f"{n} sent a compressed body that does not decode: {_text(_innermost(e))}")),
    (BaseException, lambda n, c, e: BackendUnavailable(f"the connection to {n} broke: {_text(_innermost(e))}"
                                                       if c.reading else
                                                       f"cannot reach {n}: {_text(_innermost(e))}")),
)


class Call:
    """What the failure table needs to know about the call that failed, and the call's own deadline
    (BACKENDS_FILE's ``total_s``: the whole exchange with the backend, head and body)."""

    __slots__ = ("connect", "read", "reading", "limits", "name", "total", "deadline")

    def __init__(self, connect: float, read: float, reading: bool = False, limits: tuple = (), name: str = "",
                 total: float | None = None):
        self.connect, self.read, self.reading, self.limits = connect, read, reading, limits
        self.name, self.total = name, total
        self.deadline = time.monotonic() + total if total else None

    def over(self) -> BackendTimeout | None:
        """The timeout to raise when the call's deadline has passed, else None."""
        if self.deadline is None or time.monotonic() < self.deadline - DEADLINE_SLACK_S:
            return None
        return BackendTimeout(f"{self.name} did not finish within {self.total:g} s (total_s); the exchange was ended")

    def hint(self, exc: ResponseTooLarge) -> str:
        return " (MAX_RESPONSE_BYTES)" if exc.limit in self.limits else ""


def failure(exc: BaseException, name: str, call: Call) -> ProxyError:
    """The ProxyError, naming the backend, for anything that went wrong talking to it."""
    if isinstance(exc, ProxyError) and not isinstance(exc, FrameTooLarge):
        return exc
    chain = list(_chain(exc))
    for kind, make in FAILURES:
        for link in chain:
            if isinstance(link, kind):
                return make(name, call, link)
    raise AssertionError("unreachable: the last rule matches everything")  # pragma: no cover


# --------------------------------------------------------------------------------------------
# responses
# --------------------------------------------------------------------------------------------


class ResponseHeaders(Protocol):
    """An upstream answer's headers, looked up without regard to letter case."""

    def get(self, name: str, default: str | None = None, /) -> str | None: ...


class Upstream(Protocol):
    """An open upstream answer: status, headers, its body as chunks, close() (which drops a connection whose
    body was not read to the end). Every failure while reading is turned into a ProxyError naming the backend."""

    @property
    def status(self) -> int: ...
    @property
    def headers(self) -> ResponseHeaders: ...

    def stream(self, tap: Callable[[bytes], None] | None = None) -> Iterator[bytes]:
        """The body as it arrives, for a ``Relay``: one generator between the socket and the client; failures
        raise as ProxyErrors naming the backend."""
        ...

    def error_for(self, exc: Exception) -> ProxyError: ...

    def read(self) -> bytes:
        """The whole body; the connection is released however the read ends."""
        ...

    def json(self) -> Any:
        """The whole body as JSON (a ProxyError when it is not); the connection is released."""
        ...

    def close(self) -> None: ...


class Backend(Protocol):
    """What the views use of a backend: what it is (``type``, the ``dialect`` it speaks, its ``flavor`` of
    OpenAI-compatible server), how it is named, its models, and requests to it."""

    type: str
    dialect: str
    base_url: str  # without credentials: what /healthz and the log show

    @property
    def flavor(self) -> str: ...
    def describe(self) -> str: ...
    def reachable(self) -> tuple[bool, str]: ...
    def close(self) -> None: ...
    def list_models(self, timeout: float | None = None) -> list[ModelInfo]: ...
    def get_json(self, path: str, timeout: float | None = None) -> Any: ...
    def post_json(self, path: str, body: dict, *, request_id: str | None = None) -> tuple[bytes, Any]: ...

    def open(self, method: str, path: str, body: bytes | None = None, *, request_id: str | None = None,
             timeout: float | None = None, stream: bool = False) -> HTTPUpstream:
        """Send a request and return the answer unread; error statuses raise ``UpstreamStatus``."""
        ...


class HTTPUpstream:
    """An open upstream response: status, headers, its body as chunks, close().

    A body read whole (``stream=False``) is bounded by MAX_RESPONSE_BYTES; a stream is not (it is relayed,
    not kept), but a compressed one is, once decoded, and its lines and events are bounded by the framing."""

    __slots__ = ("_resp", "_name", "_call", "status", "headers", "limit", "compressed", "_wbits")

    def __init__(self, resp: Response, name: str, call: Call, limit: int | None, decoded_limit: int | None):
        self._resp = resp
        self._name = name
        self._call = call
        self.status = resp.status_code
        self.headers = resp.header_fields()
        encoding = (self.headers.get("Content-Encoding") or "identity").strip().lower()
        self.compressed = encoding != "identity"
        self._wbits = DECODERS.get(encoding)
        self.limit = decoded_limit if self.compressed else limit  # a compressed body is bounded once decoded, always

    def stream(self, tap: Callable[[bytes], None] | None = None) -> Iterator[bytes]:
        """The body as it arrives (for a ``Relay`` too: one generator between the socket and the client);
        ``tap(chunk)`` sees each chunk first. Failures raise as ProxyErrors naming the backend."""
        return self._chunks(tap, self.limit)

    def _decoded(self) -> Iterator[bytes]:
        """A compressed body decoded in pieces of at most READ_SIZE (a bomb never inflates at once)."""
        read_some = self._resp.read_some
        decoder = zlib.decompressobj(self._wbits)  # type: ignore[arg-type]
        first = True
        while data := read_some(READ_SIZE):
            if first and self._wbits == zlib.MAX_WBITS and (data[0] & 0x0F != 8 or int.from_bytes(data[:2]) % 31):
                decoder = zlib.decompressobj(-zlib.MAX_WBITS)  # deflate sent raw, without its zlib header
            first = False
            while data:
                out = decoder.decompress(data, READ_SIZE)
                data = decoder.unconsumed_tail
                if out:
                    yield out
        if tail := decoder.flush():
            yield tail

    def _chunks(self, tap: Callable[[bytes], None] | None, limit: int | None) -> Iterator[bytes]:
        total = unyielded = 0
        what = "a compressed body that decodes to" if self.compressed else "a body"
        try:
            if limit is not None and not self.compressed:
                length = self.headers.get("Content-Length")
                if length is not None and length.isdigit() and int(length) > limit:
                    raise ResponseTooLarge(what, limit)  # refused before a byte of it is read
            # a plain body is read here, with no generator between the socket and the relay
            pieces = self._decoded() if self._wbits is not None else None
            read_some = self._resp.read_some
            call = self._call
            while True:
                if call.deadline is not None:
                    self._bound_read(call)
                data = next(pieces, b"") if pieces is not None else read_some(READ_SIZE)
                if not data:
                    return
                total += len(data)
                if limit is not None and total > limit:
                    raise ResponseTooLarge(what, limit)
                unyielded += len(data)
                if unyielded >= YIELD_EVERY:  # a flooding backend never makes a read wait: let others run
                    unyielded = 0
                    time.sleep(0)
                if tap is not None:
                    tap(data)
                yield data
                data = None  # type: ignore[assignment]  # not kept while waiting for the next
        except UPSTREAM_ERRORS as exc:
            self.close()
            raise failure(exc, self._name, self._call) from None

    def _bound_read(self, call: Call) -> None:
        """Before a read under a deadline (``total_s``): raise once it has passed, else wait no longer than it."""
        late = call.over()
        if late is not None:
            raise late
        sock = self._resp._sock
        if sock is not None:
            assert call.deadline is not None
            sock.settimeout(max(0.001, min(call.read, call.deadline - time.monotonic())))

    def error_for(self, exc: BaseException) -> ProxyError:
        """The ProxyError, naming the backend, for a failure while the body was relayed (a stream's line
        or event beyond the framing's bound, or anything the reading raised)."""
        return failure(exc, self._name, self._call)

    def read(self) -> bytes:
        try:
            return b"".join(self.stream())
        finally:
            self.close()

    def json(self) -> Any:
        body = self.read()
        try:
            return jsonio.loads(body)
        except ValueError:
            raise BackendUnavailable(f"{self._name} sent a body that is not JSON: {body[:200]!r}") from None

    def error_body(self) -> bytes:
        """The start of an error answer (its message is all that is wanted); the connection is released."""
        pieces: list[bytes] = []
        size = 0
        try:
            for piece in self._chunks(None, MAX_ERROR_BODY * 4 if self.compressed else None):
                pieces.append(piece)
                size += len(piece)
                if size >= MAX_ERROR_BODY:
                    break
        except ProxyError:
            pass
        finally:
            self.close()
        return b"".join(pieces)[:MAX_ERROR_BODY]

    def close(self) -> None:
        # A body read to the end has gone back to the pool already; one not read to the end
        # cannot: the connection is dropped so the backend sees the client leave and stops.
        self._resp.release()


# --------------------------------------------------------------------------------------------
# backends
# --------------------------------------------------------------------------------------------


class HTTPBackend:
    """Base for HTTP backends: pooled requests to ``settings.backend_url``."""

    type = "http"
    dialect = "openai"
    first_byte_timeout: float | None = None  # BACKENDS_FILE's first_byte_s; else the read timeout covers the head
    total_timeout: float | None = None  # BACKENDS_FILE's total_s: the whole exchange (head and body) ends after it

    def __init__(self, settings: Settings):
        self.settings = settings
        self.read_timeout = settings.backend_timeout
        self.connect_timeout = settings.backend_connect_timeout
        # without credentials: what describe(), /healthz and the log show; user:password@ goes as Basic auth
        self.base_url, auth = split_credentials(settings.backend_url)
        self.connection = Connection(self.base_url, auth=auth, api_key=settings.backend_api_key,
                                     bundle=ca_bundle(settings.backend_ca_bundle), connect_timeout=self.connect_timeout)
        self._limit = settings.max_response_bytes or None

    @property
    def name(self) -> str:
        return f"{self.type} backend"

    def describe(self) -> str:
        return f"{self.type} backend at {self.base_url}"

    @property
    def flavor(self) -> str:
        """Which OpenAI-compatible server this is (``OpenAIBackend`` finds out); others need no extra fields."""
        return "generic"

    def open(self, method: str, path: str, body: bytes | None = None, *, request_id: str | None = None,
             timeout: float | None = None, stream: bool = False) -> HTTPUpstream:
        """Send a request and return the response unread; error statuses raise ``UpstreamStatus``.
        ``stream``: the body is relayed as it arrives rather than read whole (no MAX_RESPONSE_BYTES)."""
        read = self.read_timeout if timeout is None else timeout
        first = read if timeout is not None or self.first_byte_timeout is None else self.first_byte_timeout
        total = self.total_timeout if timeout is None else None
        connect = self.connect_timeout if timeout is None else min(timeout, self.connect_timeout)
        name = self.describe()
        if total:
            connect, first = min(connect, total), min(first, total)
        call = Call(connect, first, limits=(self._limit,), name=name, total=total)
        try:
            resp = self.connection.request(method, path, body, request_id=request_id, connect=call.connect,
                                           read=first)
            if first != read:  # the head came within the first-byte timeout; the body has the idle one
                call.read = read
                if resp._sock is not None:  # None: the whole answer is in already
                    resp._sock.settimeout(read)
        except (*UPSTREAM_ERRORS, ValueError) as exc:  # ValueError: a request head that cannot be sent
            raise failure(exc, name, call) from None
        call.reading = True
        upstream = HTTPUpstream(resp, name, call, None if stream else self._limit, self._limit)
        if upstream.status >= 400:
            raw = upstream.error_body()
            message = message_from_upstream_body(raw, f"{name} answered HTTP {upstream.status}")
            error = UpstreamStatus(message, status=upstream.status, code=code_from_upstream_body(raw))
            error.body = raw  # type: ignore[attr-defined]  # the log stores the backend's own error body
            raise error
        return upstream

    def get_json(self, path: str, timeout: float | None = None) -> Any:
        return self.open("GET", path, timeout=timeout).json()

    def post_json(self, path: str, body: dict, *, request_id: str | None = None) -> tuple[bytes, Any]:
        """POST a JSON body and return (raw bytes, parsed JSON) of a non-streamed answer."""
        raw = self.open("POST", path, jsonio.dumps(body), request_id=request_id).read()
        try:
            return raw, jsonio.loads(raw)
        except ValueError:
            raise BackendUnavailable(f"{self.describe()} sent a body that is not JSON: {raw[:200]!r}") from None

    def close(self) -> None:
        """Close its keep-alive connections; a request after it fails as if the backend were unreachable."""
        self.connection.close()

    def reachable(self) -> tuple[bool, str]:
        try:
            self.list_models(timeout=3)
            return True, "ok"
        except ProxyError as exc:
            return False, exc.message

    def list_models(self, timeout: float | None = None) -> list[ModelInfo]:  # pragma: no cover - abstract
        raise NotImplementedError
