"""The gevent HTTP server of `python wsgi.py`: pywsgi's WSGIServer with a stricter, leaner request handler
and a connection life cycle of its own (timeouts, a connection cap, a graceful drain on stop).

Every request passes through the handler, so what pywsgi does generically is done cheaper here
(measured with py-spy under bench/run.py; figures in docs/performance.md):

- request headers are split by hand instead of by the ``email`` package (``http.client.parse_headers``),
  and checked as they are split: a line without a colon, whitespace before the colon, obsolete line
  folding, a bare CR or a NUL, a head larger than MAX_HEAD_BYTES or of more than MAX_HEADERS lines
  are refused (400 or 431) and the connection is closed;
- the framing of the body is decided strictly (``RequestHeaders.framing``): conflicting or malformed
  Content-Length values, Content-Length together with Transfer-Encoding, a Transfer-Encoding other
  than one ``chunked`` (or any in HTTP/1.0) answer 400 (501 for an unknown coding) and close the
  connection, so no request can be smuggled behind another;
- the status line, the headers and the first piece of the body leave in one send, not two;
- a response piece goes out in one ``send`` when the kernel takes it whole (gevent's ``sendall`` asks
  for the socket's buffer size first, a system call per piece);
- pywsgi formats no access line of its own (``accesslog.AccessLog`` writes ours);
- the connection's read buffer is small, not pywsgi's default: it lives as long as the connection (a stream
  holds it for minutes) while a request head is a few hundred bytes, and bodies larger than the
  buffer are read past it, straight into their destination.

Connections (``Server``): a new connection has HEADER_TIMEOUT to send a whole request head, later
requests on it the same once their first byte arrived; between requests a connection waits at most
KEEPALIVE_TIMEOUT. At most MAX_CONNECTIONS are served at once: at the cap the longest-idle connection
(one waiting for a request) is closed to make room, as nginx does; when none is idle the newcomer gets
a 503 in its dialect and is closed. ``Server.drain`` is the graceful stop (see its docstring).

Under ``gunicorn -k gevent`` gunicorn's own parser and writer serve instead (``gunicorn.conf.py`` maps
the same settings onto gunicorn's).
"""
from __future__ import annotations

import logging
import re
import resource
import socket
import time
from collections.abc import Iterator
from typing import Any, BinaryIO

from gevent import GreenletExit, Timeout
from gevent.pool import Pool
from gevent.pywsgi import MAX_REQUEST_LINE, WSGIHandler, WSGIServer

from . import draining, jsonio
from .errors import ProxyError, ShuttingDown, ollama_error_body, openai_error_body

log = logging.getLogger(__name__)


def send_all(sock, data: bytes | bytearray) -> None:
    """``sock.sendall`` for the common case of a message the kernel takes at once: one ``send``.
    (gevent's ``sendall`` asks the kernel for the send-buffer size on every call and slices the data.)"""
    sent = sock.send(data)
    if sent < len(data):
        sock.sendall(memoryview(data)[sent:])

MAX_LINE = 65536
MAX_HEADERS = 100
MAX_HEAD_BYTES = 65536  # request line and header lines together: a slow sender holds no more than this
READ_BUFFER = 1024
REFUSERS = 64  # connections being answered 503 at once (beyond the cap); past it they are closed unanswered
REFUSE_WAIT_S = 1.0  # how long a refused connection's request line (for its dialect) and close are awaited
END_GRACE_S = 3.0  # after the drain time: for ended requests to send their last chunk
FD_RESERVE = 64  # open files kept for the listener, the log database, logs and the backend's pool
WARN_EVERY_S = 60.0

# One header line: a token, a colon right after it, the value between optional spaces or tabs; no CR
# or NUL inside. Anything else (no colon, space before the colon, a folded continuation) fails.
_HEADER_LINE = re.compile(r"([!#$%&'*+.^_`|~0-9A-Za-z-]+):[ \t]*([^\r\n\x00]*?)[ \t]*\r?\n")
_TOKEN = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")
_DIGITS = re.compile(r"[0-9]{1,18}")
_FRAMING = ("content-length", "transfer-encoding")
_REASONS = {400: "Bad Request", 408: "Request Timeout", 413: "Content Too Large",
            431: "Request Header Fields Too Large", 501: "Not Implemented", 503: "Service Unavailable",
            505: "HTTP Version Not Supported"}


class BadHead(ValueError):
    """A request head that cannot be served safely; answered with ``status`` and the connection closed."""

    def __init__(self, message: str, status: int = 400):
        super().__init__(message)
        self.message = message
        self.status = status


class _HeadTimeout(Exception):
    """HEADER_TIMEOUT passed before the request head was complete."""


class _IdleTimeout(Exception):
    """KEEPALIVE_TIMEOUT passed without the first byte of a next request."""


def error_response(status: int, message: str, path: str | None, retry_after: int | None = None) -> bytes:
    """A whole response that closes the connection, its body in the dialect of ``path`` (``/v1``: OpenAI,
    ``/api``: Ollama, else plain text): for refusals made before the application sees the request."""
    if path and path.startswith("/v1"):
        body, ctype = jsonio.dumps(openai_error_body(ProxyError(message, status=status))), b"application/json"
    elif path and path.startswith("/api"):
        body, ctype = jsonio.dumps(ollama_error_body(ProxyError(message, status=status))), b"application/json"
    else:
        body, ctype = message.encode() + b"\n", b"text/plain; charset=utf-8"
    head = b"HTTP/1.1 %d %s\r\nConnection: close\r\nContent-Type: %s\r\nContent-Length: %d\r\n" % (
        status, _REASONS.get(status, "Error").encode(), ctype, len(body))
    if retry_after:
        head += b"Retry-After: %d\r\n" % retry_after
    return head + b"\r\n" + body


class RequestHeaders:
    """What pywsgi reads of a request's headers: ``status`` ('' when well-formed; else why not, with the
    HTTP ``code`` to answer), ``get``/``getheader`` (first value, name case-insensitive), ``del``,
    ``typeheader`` and ``headers`` (the raw lines, which pywsgi turns into ``HTTP_*`` environ keys)."""

    __slots__ = ("status", "code", "headers", "_first", "_framing")

    def __init__(self, lines: list[str], status: str = "", code: int = 400):
        self.status = status
        self.code = code
        self.headers = lines
        first: dict[str, str] = {}
        framing: list[tuple[str, str]] | None = None
        match = _HEADER_LINE.fullmatch
        for line in lines:
            parsed = match(line)
            if parsed is None:
                if not status:
                    self.status = self._why(line)
                    self.code = 400
                break
            name, value = parsed.groups()
            name = name.lower()
            first.setdefault(name, value)
            if name in _FRAMING:
                if framing is None:
                    framing = []
                framing.append((name, value))
        self._first = first
        self._framing = framing

    @staticmethod
    def _why(line: str) -> str:
        if line[:1] in " \t":
            return "obsolete line folding (a header line starting with a space or tab) is not accepted"
        name, sep, _ = line.partition(":")
        if not sep:
            return "a header line has no colon"
        if name != name.rstrip(" \t") or not name:
            return "no whitespace is allowed between a header name and its colon"
        if not _TOKEN.fullmatch(name):
            return "a header name has characters a header name cannot have"
        return "a header value has a CR or NUL character in it"

    @classmethod
    def read(cls, fp: BinaryIO, budget: int = MAX_HEAD_BYTES) -> RequestHeaders:
        """The header lines up to the blank line; ``budget`` bytes at most (what the request line left)."""
        lines: list[str] = []
        while True:
            line = fp.readline(MAX_LINE + 1)
            if len(line) > MAX_LINE:
                return cls(lines, "a header line is too long", 431)
            if line in (b"\r\n", b"\n"):
                return cls(lines)
            if not line:
                return cls(lines, "the connection ended inside the request head")
            budget -= len(line)
            if budget < 0:
                return cls(lines, f"the request head is larger than {MAX_HEAD_BYTES // 1024} KiB", 431)
            if len(lines) >= MAX_HEADERS:
                return cls(lines, f"more than {MAX_HEADERS} header lines", 431)
            lines.append(line.decode("latin-1"))

    def framing(self, version: str, method: str) -> int | None:
        """The body's Content-Length (None: no length, or chunked), or BadHead when the framing is ambiguous:
        the request would mean one thing here and another to a proxy in front of this one."""
        if self._framing is None:
            return None
        lengths = [v for n, v in self._framing if n == "content-length"]
        codings = [c.strip(" \t").lower() for n, v in self._framing if n == "transfer-encoding" for c in v.split(",")]
        if codings:
            if version == "HTTP/1.0":
                raise BadHead("Transfer-Encoding is not allowed in an HTTP/1.0 request")
            if lengths:
                raise BadHead("a request cannot have both Content-Length and Transfer-Encoding")
            if codings == ["chunked"]:
                self._first["transfer-encoding"] = "chunked"
                return None
            if codings.count("chunked") == 1 and codings[-1] == "chunked" and all(codings):
                raise BadHead(f"Transfer-Encoding {', '.join(codings)} is not supported (only chunked)", 501)
            raise BadHead("Transfer-Encoding must be chunked, once, and last")
        values = {part.strip(" \t") for value in lengths for part in value.split(",")}
        if len(values) != 1:
            raise BadHead("conflicting Content-Length values")
        value = values.pop()
        if not _DIGITS.fullmatch(value):
            raise BadHead(f"Content-Length {value[:40]!r} is not a number of bytes")
        length = int(value)
        if length and method == "HEAD":
            raise BadHead("a HEAD request cannot have a body")
        self._first["content-length"] = str(length)
        return length

    def get(self, name: str, default: Any = None) -> Any:
        return self._first.get(name.lower(), default)

    getheader = get

    def __getitem__(self, name: str) -> str | None:
        return self._first.get(name.lower())

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and name.lower() in self._first

    def __delitem__(self, name: str) -> None:
        key = name.lower()
        if key not in self._first:
            raise KeyError(name)
        del self._first[key]
        self.headers = [line for line in self.headers if line.partition(":")[0].lower() != key]

    @property
    def typeheader(self) -> str | None:
        return self._first.get("content-type")

    def __iter__(self) -> Iterator[str]:
        return iter(self._first)


NO_HEADERS = RequestHeaders([])


class Handler(WSGIHandler):
    """One connection: pywsgi's handler with the savings and checks above, the head and idle timeouts,
    and what a draining server asks of it; everything else is pywsgi's."""

    served = 0  # requests answered on this connection
    reclaimed = False  # closed while idle to make room for a new connection
    _head_timer: Timeout | None = None
    _idle_timer: Timeout | None = None

    def __init__(self, sock: socket.socket, address: Any, server: WSGIServer, rfile: Any = None):
        super().__init__(sock, address, server, rfile if rfile is not None else sock.makefile("rb", READ_BUFFER))

    def MessageClass(self, fp: BinaryIO, *_args: Any) -> RequestHeaders:  # noqa: N802 - pywsgi's name
        return RequestHeaders.read(fp)

    def log_request(self) -> None:
        return None

    # --- the connection's life ---------------------------------------------------------------------
    def handle(self) -> None:
        try:
            super().handle()
        finally:
            server = self.server
            server.idle.pop(self, None)
            if self.reclaimed:
                server.reclaiming -= 1
            for timer in (self._head_timer, self._idle_timer):
                if timer is not None:
                    timer.close()

    def close_idle(self) -> bool:
        """End this connection if it is waiting for a request (its wait sees the end of input at once)."""
        sock = getattr(self, "socket", None)
        if sock is None:
            return False
        try:
            sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            return False
        return True

    def _await_request(self, first: bool) -> bool:
        """Wait for the first byte of the next request (True) or the end of the connection (False): the
        time a connection is idle, when the server may close it (at the cap, or when it drains)."""
        server = self.server
        server.idle[self] = None
        try:
            if first:  # under the head timer already
                return bool(self.rfile.peek(1))
            timer = self._idle_timer
            if timer is None:
                timer = self._idle_timer = Timeout(server.keepalive_timeout, _IdleTimeout)
            timer.start()
            try:
                return bool(self.rfile.peek(1))
            except _IdleTimeout:
                return False
            finally:
                timer.cancel()
        except (OSError, ValueError):  # reset, or closed by the server
            return False
        finally:
            server.idle.pop(self, None)

    def handle_one_request(self) -> Any:
        """pywsgi's, with the waits bounded: HEADER_TIMEOUT for the head (from the connection's start for
        its first request, from the first byte for later ones), KEEPALIVE_TIMEOUT between requests."""
        if self.rfile.closed:
            return None
        server = self.server
        first = not self.served
        if not first and server.draining:
            return None
        timer = self._head_timer
        if timer is None:
            timer = self._head_timer = Timeout(server.header_timeout, _HeadTimeout)
        if first:
            timer.start()
        try:
            try:
                if not self._await_request(first):
                    return None
            except _HeadTimeout:  # nothing at all came
                return None
            if not first:
                timer.start()
            self.path = None  # not the previous request's, should this one's head be refused
            try:
                line = self.rfile.readline(MAX_REQUEST_LINE)
                if not line:
                    return None
                self.requestline = line.decode("latin-1")
                self.response_length = 0
                if len(line) >= MAX_REQUEST_LINE:
                    return self._refusal(BadHead("the request line is too long", 414))
                try:
                    self.read_request(self.requestline)
                except _HeadTimeout:
                    raise
                except Exception as ex:  # noqa: BLE001 - a client's error: answered, never a traceback
                    return self._handle_client_error(ex)
            except _HeadTimeout:
                return self._refusal(BadHead(f"the request head did not arrive within {server.header_timeout:g} s "
                                             "(HEADER_TIMEOUT)", 408))
            except OSError:
                return None
        finally:
            timer.cancel()
        self.served += 1
        self.environ = self.get_environ()
        self.application = server.application
        self.handle_one_response()
        if self.close_connection or self.rfile.closed or server.draining:
            return None
        return True

    # --- the request head --------------------------------------------------------------------------
    def read_request(self, raw_requestline: str) -> bool:
        """pywsgi's, stricter: exactly ``METHOD target HTTP/1.x``; framing decided by ``RequestHeaders.framing``."""
        self.requestline = raw_requestline.rstrip("\r\n")
        words = self.requestline.split(" ")
        if len(words) != 3 or not all(words):
            self.path = words[1] if len(words) > 1 else None
            raise BadHead("the request line is not METHOD TARGET HTTP/1.1")
        self.command, self.path, self.request_version = words
        if self.request_version not in ("HTTP/1.1", "HTTP/1.0"):
            raise BadHead(f"{self.request_version[:20]} is not served (HTTP/1.1 and HTTP/1.0 are)", 505)
        if not _TOKEN.fullmatch(self.command):
            raise BadHead("the request method is not a token")
        self.headers = RequestHeaders.read(self.rfile, MAX_HEAD_BYTES - len(raw_requestline))
        if self.headers.status:
            raise BadHead(self.headers.status, self.headers.code)
        self.content_length = self.headers.framing(self.request_version, self.command)
        if self.request_version == "HTTP/1.1":
            self.close_connection = self.headers.get("connection", "").lower() == "close"
        else:
            self.close_connection = self.headers.get("connection", "close").lower() != "keep-alive"
        return True

    def _handle_client_error(self, ex: Exception) -> tuple[str, bytes]:
        """A malformed request: logged in one line, answered in the dialect of its path, connection closed."""
        return self._refusal(ex if isinstance(ex, BadHead) else BadHead(str(ex) or type(ex).__name__))

    def _refusal(self, bad: BadHead) -> tuple[str, bytes]:
        self.close_connection = True
        address = self.client_address[0] if isinstance(self.client_address, tuple) else self.client_address
        self.server.note_refusal(f"refused a request from {address}: {bad.status} {bad.message}")
        return str(bad.status), error_response(bad.status, bad.message, self.path)

    # --- the response ------------------------------------------------------------------------------
    def run_application(self) -> None:
        try:
            super().run_application()
        except (ShuttingDown, GreenletExit):
            # The server ended this request after its drain time while the response was being written
            # (a stream's own end is a final error chunk, sent by its Relay): close without a 500.
            self.close_connection = True

    def _sendall(self, data: bytes | bytearray) -> None:
        try:
            send_all(self.socket, data)
        except OSError as exc:
            self.status = f"socket error: {exc}"
            if self.code > 0:
                self.code = -self.code
            raise
        self.response_length += len(data)

    def _write_with_headers(self, data: bytes) -> None:
        self.headers_sent = True
        self.finalize_headers()
        towrite = bytearray(b"HTTP/1.1 ")
        towrite += self.status  # start_response encoded the status and headers to latin-1 already
        towrite += b"\r\n"
        for header, value in self.response_headers:
            towrite += header
            towrite += b": "
            towrite += value
            towrite += b"\r\n"
        if self.server.draining and not self.close_connection:
            self.close_connection = True  # a stopping server serves no further request on this connection
            if not any(header.lower() == b"connection" for header, _ in self.response_headers):
                towrite += b"Connection: close\r\n"
        towrite += b"\r\n"
        if data:
            if self.response_use_chunked:
                towrite += b"%x\r\n" % len(data)
                towrite += data
                towrite += b"\r\n"
            else:
                towrite += data
        self._sendall(towrite)
        # pywsgi reads the request's headers only until the response head is out (environ has its own
        # copies): a stream would otherwise keep the raw lines and their index for its whole life.
        self.headers = NO_HEADERS


class Server(WSGIServer):
    """pywsgi's server with the connection cap, the idle connections it may close, and the drain."""

    def __init__(self, listener: Any, application: Any, *, max_connections: int, header_timeout: float,
                 keepalive_timeout: float, **kwargs: Any):
        super().__init__(listener, application, spawn=Pool(), handler_class=Handler, **kwargs)
        self.max_connections = max_connections
        self.header_timeout = header_timeout
        self.keepalive_timeout = keepalive_timeout
        self.idle: dict[Handler, None] = {}  # connections waiting for a request, longest-waiting first
        self.reclaiming = 0  # idle connections closed to make room, not yet gone from the pool
        self.draining = False
        self.refused = 0
        self._refusers = Pool(REFUSERS)
        self._warned: dict[str, float] = {}

    def do_handle(self, sock: Any, address: Any) -> None:  # called by the accept loop, in the hub
        if len(self.pool) - self.reclaiming >= self.max_connections and not self._reclaim_idle():
            self.refused += 1
            self._warn("cap", f"{self.max_connections} connections open (MAX_CONNECTIONS), none idle: new "
                              f"connections get 503 ({self.refused} so far)")
            if self._refusers.full():
                sock.close()
            else:
                self._refusers.spawn(_refuse, sock, self.max_connections)
            return
        super().do_handle(sock, address)

    def _reclaim_idle(self) -> bool:
        idle = self.idle
        while idle:
            handler = next(iter(idle))
            del idle[handler]
            if handler.close_idle():
                handler.reclaimed = True
                self.reclaiming += 1
                return True
        return False

    def note_refusal(self, message: str) -> None:
        self._warn("refusal", message)

    def _warn(self, kind: str, message: str) -> None:
        now = time.monotonic()
        if now - self._warned.get(kind, -WARN_EVERY_S) >= WARN_EVERY_S:
            self._warned[kind] = now
            log.warning(message)

    def drain(self, timeout: float, hurry: Any = None) -> None:
        """The graceful stop: accept no more connections and close the idle ones; let running requests
        finish for ``timeout`` seconds (less if ``hurry`` is set: a second signal); then end the rest —
        a stream gets a final error chunk in its dialect, a request still waiting for the backend a 503,
        and both are recorded as cancelled (``draining.end_running``); whatever still runs after
        END_GRACE_S is killed. Connections finishing meanwhile are told ``Connection: close``."""
        self.draining = True
        self.close()
        for handler in list(self.idle):
            handler.close_idle()
        self.idle.clear()
        pool = self.pool
        deadline = time.monotonic() + timeout
        if len(pool):
            log.info("draining: %d connections open; running requests get %g s (DRAIN_TIMEOUT)", len(pool), timeout)
        while len(pool) and time.monotonic() < deadline and not (hurry is not None and hurry.is_set()):
            pool.join(timeout=min(0.1, max(0.0, deadline - time.monotonic())))
        if len(pool):
            ended = draining.end_running()
            log.warning("drain time over: %d connections still open, %d running requests ended as cancelled",
                        len(pool), ended)
            pool.join(timeout=END_GRACE_S)
        if len(pool):
            pool.kill(block=True, timeout=1)
        self._refusers.kill(block=True, timeout=1)


def _refuse(sock: Any, cap: int) -> None:
    """Answer a connection beyond the cap with 503 (in the dialect of its path, when its request line
    arrives in time) and close it without a reset over the answer."""
    try:
        head = b""
        with Timeout(REFUSE_WAIT_S, False):
            head = sock.recv(2048)
        words = head.split(b"\r\n", 1)[0].split(b" ")
        path = words[1].decode("latin-1") if len(words) == 3 else None
        sock.sendall(error_response(503, f"the proxy is at its connection limit ({cap}, MAX_CONNECTIONS); "
                                         "try again shortly", path, retry_after=1))
        sock.shutdown(socket.SHUT_WR)
        with Timeout(REFUSE_WAIT_S, False):  # read what the client still sends until it closes
            while sock.recv(4096):
                pass
    except OSError:
        pass
    finally:
        sock.close()


def raise_open_file_limit() -> int:
    """Raise this process's soft limit of open files to its hard limit (each proxied connection needs
    two); returns the limit now in force."""
    try:
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        if hard == resource.RLIM_INFINITY:
            hard = 1 << 20
        if soft != resource.RLIM_INFINITY and soft < hard:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
            soft = hard
        return int(soft) if soft != resource.RLIM_INFINITY else 1 << 20
    except (ValueError, OSError) as exc:
        log.warning("could not raise the open-file limit: %s", exc)
        return int(resource.getrlimit(resource.RLIMIT_NOFILE)[0])


def connection_cap(max_connections: int, open_files: int) -> int:
    """MAX_CONNECTIONS, lowered (with a warning) to what the open-file limit can hold: past it accept and
    the backend's connects fail with EMFILE; within it the excess is refused politely."""
    fits = max(1, (open_files - FD_RESERVE) // 2)
    if max_connections > fits:
        log.warning("MAX_CONNECTIONS=%d needs about %d open files; the limit is %d: serving %d connections at "
                    "most (raise `ulimit -n` for more)", max_connections, 2 * max_connections + FD_RESERVE,
                    open_files, fits)
        return fits
    return max_connections


def make_server(host: str, port: int, app: Any, error_log: Any = None, *, max_connections: int = 8192,
                header_timeout: float = 10.0, keepalive_timeout: float = 60.0) -> Server:
    """A ``Server`` on ``host:port`` (IPv6 when the host has a colon) with ``Handler`` and TCP_NODELAY; the
    open-file limit is raised first and the connection cap fitted to it."""
    cap = connection_cap(max_connections, raise_open_file_limit())
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    listener = WSGIServer.get_listener((host, port), backlog=1024, family=family)
    # Without TCP_NODELAY, Nagle holds the second of two small writes until the client's delayed ACK.
    # Accepted sockets inherit the option from the listener.
    listener.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return Server(listener, app, log=None, error_log=error_log, max_connections=cap,
                  header_timeout=header_timeout, keepalive_timeout=keepalive_timeout)

