"""The backend seam: ``Backend`` and ``Upstream``, the Protocols the views program against, and the HTTP
implementation of both, one keep-alive pool per backend, responses read chunk by chunk.

Requests go through ``http11`` (a small HTTP/1.1 client written for this path; see its docstring
for why not urllib3). This is the only place that turns transport failures into ``ProxyError``s,
each naming the backend.
"""
from __future__ import annotations

import base64
import logging
import socket
import ssl
from collections.abc import Callable, Iterator
from typing import Any, Protocol

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
from .http11 import ConnectTimeout, Origin, Pool, Response, ResponseTooLarge, encode_headers

log = logging.getLogger(__name__)
MAX_ERROR_BODY = 1048576  # of an error answer, what is read for its message; the rest is dropped with the connection


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

    def iter_bytes(self, tap: Callable[[bytes], None] | None = None) -> Iterator[bytes]:
        """The body as it arrives; a broken connection raises a ProxyError."""
        ...

    def stream(self, tap: Callable[[bytes], None] | None = None) -> Iterator[bytes]:
        """The body as it arrives, with no wrapper around the chunks: a broken connection raises the OSError
        itself, for the caller to turn into a ProxyError with ``error_for``."""
        ...

    def error_for(self, exc: Exception) -> ProxyError: ...
    def read(self) -> bytes: ...
    def json(self) -> Any: ...
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
    def list_models(self, timeout: float | None = None) -> list[ModelInfo]: ...
    def get_json(self, path: str, timeout: float | None = None) -> Any: ...
    def post_json(self, path: str, body: dict, *, request_id: str | None = None) -> tuple[bytes, Any]: ...

    def open(self, method: str, path: str, body: bytes | None = None, *, request_id: str | None = None,
             timeout: float | None = None, stream: bool = False) -> Upstream:
        """Send a request and return the answer unread; error statuses raise ``UpstreamStatus``."""
        ...


class HTTPUpstream:
    """An open upstream response: status, headers, its body as chunks, close().

    A body read whole (``stream=False``) is bounded by MAX_RESPONSE_BYTES; a stream is not (it is relayed,
    not kept), but a compressed one is, once decoded, and its lines and events are bounded by the framing."""

    __slots__ = ("_resp", "_backend", "status", "headers", "limit", "decoded_limit")

    def __init__(self, resp: Response, backend: HTTPBackend, stream: bool = False):
        self._resp = resp
        self._backend = backend
        self.status = resp.status
        self.headers = resp.headers
        self.decoded_limit = backend.settings.max_response_bytes or None
        self.limit = None if stream else self.decoded_limit

    def iter_bytes(self, tap: Callable[[bytes], None] | None = None) -> Iterator[bytes]:
        """The body as it arrives, a broken connection raised as a ProxyError naming the backend."""
        try:
            yield from self._resp.iter_bytes(tap, self.limit, self.decoded_limit)
        except OSError as exc:
            raise self.error_for(exc) from None

    def stream(self, tap: Callable[[bytes], None] | None = None) -> Iterator[bytes]:
        """The body as it arrives, for a ``Relay``: the client's chunks pass through no wrapper here,
        and a broken connection raises the OSError itself, which the Relay turns into a ProxyError
        with ``error_for``. ``tap`` sees each chunk first."""
        return self._resp.iter_bytes(tap, self.limit, self.decoded_limit)

    def error_for(self, exc: Exception) -> ProxyError:
        """The ProxyError, naming the backend, for a failure while the body was read: a broken connection,
        a bound exceeded (MAX_RESPONSE_BYTES, a trailer, a stream's line or event)."""
        name = self._backend.describe()
        if isinstance(exc, socket.timeout):
            return BackendTimeout(f"{name} stopped sending for {self._backend.read_timeout:g} s")
        if isinstance(exc, ResponseTooLarge):
            hint = " (MAX_RESPONSE_BYTES)" if exc.limit in (self.limit, self.decoded_limit) else ""
            return BackendUnavailable(f"{name} sent {exc}{hint}")
        if isinstance(exc, FrameTooLarge):
            return BackendUnavailable(f"{name} {exc.message}")
        return BackendUnavailable(f"the connection to {name} broke: {exc}")

    def read(self) -> bytes:
        return b"".join(self.iter_bytes())

    def json(self) -> Any:
        body = self.read()
        try:
            return jsonio.loads(body)
        except ValueError:
            described = self._backend.describe()
            raise BackendUnavailable(f"{described} sent a body that is not JSON: {body[:200]!r}") from None

    def close(self) -> None:
        # A body read to the end has gone back to the pool already; one not read to the end
        # cannot: the connection is dropped so the backend sees the client leave and stops.
        self._resp.close()


class HTTPBackend:
    """Base for HTTP backends: pooled requests to ``settings.backend_url``."""

    type = "http"
    dialect = "openai"

    def __init__(self, settings: Settings, session: Any = None):
        self.settings = settings
        self.read_timeout = settings.backend_timeout
        self.connect_timeout = settings.backend_connect_timeout
        self.origin = Origin(settings.backend_url)
        self.base_url = self.origin.url  # without credentials: what describe(), /healthz and the log show
        self.pool = Pool(self.origin, settings.backend_connect_timeout)
        self._path_prefix = self.origin.path_prefix
        headers = {"Content-Type": "application/json", "Accept": "*/*", "Accept-Encoding": "identity",
                   "User-Agent": "llm-proxy"}
        if settings.backend_api_key:
            headers["Authorization"] = f"Bearer {settings.backend_api_key}"
        elif self.origin.username is not None:  # user:password@ in BACKEND_URL, sent as requests would send it
            userpass = f"{self.origin.username}:{self.origin.password}".encode()
            headers["Authorization"] = "Basic " + base64.b64encode(userpass).decode("ascii")
        self._head_lines = encode_headers(headers)

    @property
    def name(self) -> str:
        return f"{self.type} backend"

    @property
    def flavor(self) -> str:
        """Which OpenAI-compatible server this is (``OpenAIBackend`` finds out); others need no extra fields."""
        return "generic"

    def describe(self) -> str:
        return f"{self.type} backend at {self.base_url}"

    def open(self, method: str, path: str, body: bytes | None = None, *, request_id: str | None = None,
             timeout: float | None = None, stream: bool = False) -> HTTPUpstream:
        """Send a request and return the response unread; error statuses raise ``UpstreamStatus``.
        ``stream``: the body is relayed as it arrives rather than read whole (no MAX_RESPONSE_BYTES)."""
        head_lines = self._head_lines
        if request_id:
            head_lines += encode_headers({"X-Request-ID": request_id})
        read_timeout = self.read_timeout if timeout is None else timeout
        connect_timeout = None if timeout is None else min(timeout, self.connect_timeout)
        try:
            resp = self.pool.request(method, self._path_prefix + path, head_lines, body, read_timeout,
                                     connect_timeout)
        except ConnectTimeout:
            raise BackendTimeout(f"{self.describe()} did not accept a connection within "
                                 f"{connect_timeout or self.connect_timeout:g} s") from None
        except TimeoutError:
            raise BackendTimeout(f"{self.describe()} did not answer within {read_timeout:g} s") from None
        except socket.gaierror as exc:
            raise BackendUnavailable(f"cannot connect to {self.describe()}: {exc.strerror or exc}") from None
        except ConnectionRefusedError:
            raise BackendUnavailable(f"cannot connect to {self.describe()}: connection refused") from None
        except ssl.SSLError as exc:
            raise BackendUnavailable(f"cannot reach {self.describe()}: TLS failed: {exc}") from None
        except OSError as exc:
            raise BackendUnavailable(f"cannot reach {self.describe()}: {exc.strerror or exc}") from None
        upstream = HTTPUpstream(resp, self, stream)
        if resp.status >= 400:
            pieces: list[bytes] = []
            size = 0
            try:  # only the start of an error body is read: its message is all that is wanted
                for piece in resp.iter_bytes(None, None, MAX_ERROR_BODY * 4):
                    pieces.append(piece)
                    size += len(piece)
                    if size >= MAX_ERROR_BODY:
                        break
            except OSError:
                pass
            finally:
                upstream.close()
            raw = b"".join(pieces)[:MAX_ERROR_BODY]
            message = message_from_upstream_body(raw, f"{self.describe()} answered HTTP {resp.status}")
            error = UpstreamStatus(message, status=resp.status, code=code_from_upstream_body(raw))
            error.body = raw  # type: ignore[attr-defined]  # the log stores the backend's own error body
            raise error
        return upstream

    def get_json(self, path: str, timeout: float | None = None) -> Any:
        upstream = self.open("GET", path, timeout=timeout)
        try:
            return upstream.json()
        finally:
            upstream.close()

    def post_json(self, path: str, body: dict, *, request_id: str | None = None) -> tuple[bytes, Any]:
        """POST a JSON body and return (raw bytes, parsed JSON) of a non-streamed answer."""
        upstream = self.open("POST", path, jsonio.dumps(body), request_id=request_id)
        try:
            raw = upstream.read()
        finally:
            upstream.close()
        try:
            return raw, jsonio.loads(raw)
        except ValueError:
            raise BackendUnavailable(f"{self.describe()} sent a body that is not JSON: {raw[:200]!r}") from None

    def reachable(self) -> tuple[bool, str]:
        try:
            self.list_models(timeout=3)
            return True, "ok"
        except ProxyError as exc:
            return False, exc.message

    def list_models(self, timeout: float | None = None) -> list[ModelInfo]:  # pragma: no cover - abstract
        raise NotImplementedError
