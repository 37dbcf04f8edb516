"""The HTTP server of `python wsgi.py`: gevent's WSGIServer and WSGIHandler, with the bounds a server facing
hostile clients needs added through pywsgi's public hooks only (`docs/decisions/0013-stock-pywsgi.md`).

- a connection has HEADER_TIMEOUT for a request head once it opens or once the head's first byte arrived,
  and waits at most KEEPALIVE_TIMEOUT between requests;
- a request head that another HTTP parser could read differently (ambiguous framing, header lines pywsgi's
  parser would skip or fold) is refused with 400 and the connection closed, so nothing can be smuggled;
- at most MAX_CONNECTIONS are served at once; beyond them new connections wait in the listen backlog;
- ``Server.drain`` is the graceful stop.

Under ``gunicorn -k gevent`` gunicorn's parser serves instead (``gunicorn.conf.py`` maps the settings).
"""
from __future__ import annotations

import http.client
import io
import logging
import resource
import socket
import time
from typing import Any

import gevent
from gevent import Timeout
from gevent.pool import Pool
from gevent.pywsgi import WSGIHandler, WSGIServer, headers_factory

from . import draining
from .clientgone import CLIENT_SOCKET
from .sessions import RAW_SESSION_ID

log = logging.getLogger(__name__)

MAX_HEAD_BYTES = 65536  # the header lines of one request together
READ_BUFFER = 1024  # a connection's read buffer lives as long as it (a stream holds it for minutes)
END_GRACE_S = 3.0  # after the drain time: for ended requests to send their last chunk
FD_RESERVE = 64  # open files kept for the listener, the log database, logs and the backend's pool


class HeadRefused(ValueError):
    """A request head that cannot be served safely; pywsgi answers a ValueError from ``read_request`` with
    400 and closes the connection."""


def framing_problem(headers: http.client.HTTPMessage, version: str) -> str | None:
    """Why the request's body framing is ambiguous (None when it is not): the request would mean one thing
    here and another to a proxy in front of this one."""
    lengths = headers.get_all("content-length") or []
    codings = [c.strip(" \t").lower() for v in headers.get_all("transfer-encoding") or [] for c in v.split(",")]
    if codings:
        if version == "HTTP/1.0":
            return "Transfer-Encoding is not allowed in an HTTP/1.0 request"
        if lengths:
            return "a request cannot have both Content-Length and Transfer-Encoding"
        if codings != ["chunked"]:
            return "Transfer-Encoding must be chunked, once (no other coding is served)"
        return None
    values = {part.strip(" \t") for value in lengths for part in value.split(",")}
    if len(values) > 1:
        return "conflicting Content-Length values"
    if values and not all(v.isascii() and v.isdigit() for v in values):
        return "Content-Length is not a number of bytes"
    return None


class OneSend:
    """The connection as the handler writes to it: ``sendall`` tries one ``send`` first, since gevent's asks the
    kernel for the send-buffer size on every call; everything else is the gevent socket's."""

    __slots__ = ("sock",)

    def __init__(self, sock: Any):
        self.sock = sock

    def sendall(self, data: bytes | bytearray) -> None:
        sent = self.sock.send(data)
        if sent < len(data):
            self.sock.sendall(memoryview(data)[sent:])

    def __getattr__(self, name: str) -> Any:
        return getattr(self.sock, name)


class Handler(WSGIHandler):
    """One connection: pywsgi's handler, its waits bounded and its framing strict."""

    requests = 0  # requests read on this connection
    _head_timer: Timeout | None = None

    def read_requestline(self) -> str:
        server = self.server
        if self.requests and not self._await_next_request():
            return ""
        self._head_timer = Timeout.start_new(server.header_timeout, HeadRefused(
            f"the request head did not arrive within {server.header_timeout:g} s (HEADER_TIMEOUT)"))
        try:
            return super().read_requestline()
        except HeadRefused:  # not even a request line: close without an answer
            return ""

    def _await_next_request(self) -> bool:
        """Keep-alive: wait for the next request's first byte, at most KEEPALIVE_TIMEOUT; a draining server
        ends waiting connections at once."""
        server = self.server
        if server.draining:
            return False
        me = gevent.getcurrent()
        server.idle.add(me)
        try:
            with Timeout(server.keepalive_timeout, False):
                return bool(self.rfile.peek(1))
            return False
        finally:
            server.idle.discard(me)

    def MessageClass(self, fp: Any, *_args: Any) -> Any:  # noqa: N802 - pywsgi's name
        """The request's header lines, read within MAX_HEAD_BYTES and parsed by pywsgi's own parser; refused
        when another parser could read them differently (a bare CR or NUL, a folded or malformed line) or
        when their framing is ambiguous."""
        lines, size, framing = [], 0, False
        while True:
            line = fp.readline(MAX_HEAD_BYTES + 1 - size)
            size += len(line)
            if size > MAX_HEAD_BYTES:
                raise HeadRefused(f"the request head is larger than {MAX_HEAD_BYTES // 1024} KiB")
            if not line.endswith(b"\n"):
                raise HeadRefused("the connection ended inside the request head")
            if line in (b"\r\n", b"\n"):
                break
            lines.append(line)
            first = line[:1]
            if first in b" \t":
                raise HeadRefused("obsolete line folding (a header line starting with a space or tab) is refused")
            if b"\x00" in line or b"\r" in line[:-2]:  # a CR only as the end of line
                raise HeadRefused("a header line has a bare CR or a NUL in it")
            framing = framing or first in b"cCtT"  # Content-Length or Transfer-Encoding, perhaps
        lines.append(b"\r\n")
        headers = headers_factory(io.BytesIO(b"".join(lines)))
        if headers.defects:  # a line without a colon, or with space before it: the parser would skip it
            raise HeadRefused("a header line is malformed (no colon, or whitespace before the colon)")
        problem = framing and framing_problem(headers, self.request_version)  # before pywsgi drops a length
        if problem:
            raise HeadRefused(problem)
        return headers

    def log_request(self) -> None:
        """No access line of pywsgi's (``accesslog.AccessLog`` writes ours)."""

    def read_request(self, raw_requestline: str) -> bool:
        try:
            super().read_request(raw_requestline)
        except http.client.HTTPException as exc:  # more than 100 header lines: a client's error, no traceback
            raise HeadRefused(str(exc) or type(exc).__name__) from None
        finally:
            self._stop_head_timer()
        if self.request_version not in ("HTTP/1.1", "HTTP/1.0"):
            raise HeadRefused(f"{self.request_version[:20]} is not served (HTTP/1.1 and HTTP/1.0 are)")
        self.requests += 1
        return True

    def get_environ(self) -> dict[str, Any]:
        """pywsgi's environ, and the client's socket in it: a request can look whether its client has gone
        (``proxy.clientgone``) before it spends more on an answer nobody will read; and Codex's ``session_id``
        header, which pywsgi leaves out."""
        environ = super().get_environ()
        environ[CLIENT_SOCKET] = self.socket
        session_id = self.headers.get("session_id")  # dropped by pywsgi for its underscore (``proxy.sessions``)
        if session_id:
            environ[RAW_SESSION_ID] = session_id
        return environ

    def _stop_head_timer(self) -> None:
        if self._head_timer is not None:
            self._head_timer.close()
            self._head_timer = None

    def handle(self) -> None:
        try:
            super().handle()
        finally:
            self._stop_head_timer()


class Server(WSGIServer):
    """pywsgi's server with the connection cap, the idle connections a drain ends, and the drain itself."""

    handler_class = Handler

    def __init__(self, listener: Any, application: Any, *, max_connections: int, header_timeout: float,
                 keepalive_timeout: float, **kwargs: Any):
        super().__init__(listener, application, spawn=Pool(max_connections), log=None, **kwargs)
        self.header_timeout = header_timeout
        self.keepalive_timeout = keepalive_timeout
        self.idle: set[Any] = set()  # greenlets of connections waiting for their next request
        self.draining = False

    def handle(self, sock: Any, address: Any) -> None:
        self.handler_class(OneSend(sock), address, self, sock.makefile("rb", READ_BUFFER)).handle()

    def drain(self, timeout: float, hurry: Any = None) -> None:
        """The graceful stop: accept no more connections and end the idle ones; let running requests finish
        for ``timeout`` seconds (less if ``hurry`` is set: a second signal); then end the rest (a stream gets
        a final error chunk, a request waiting for the backend a 503, both recorded cancelled: see
        ``draining.end_running``); whatever still runs after END_GRACE_S is killed. Responses finishing
        meanwhile carry ``Connection: close``."""
        self.draining = draining.stopping = True
        self.close()
        gevent.killall(list(self.idle), block=False)
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
    the backend's connects would fail with EMFILE."""
    fits = max(1, (open_files - FD_RESERVE) // 2)
    if max_connections > fits:
        log.warning("MAX_CONNECTIONS=%d needs about %d open files; the limit is %d: serving %d connections at "
                    "most (raise `ulimit -n` for more)", max_connections, 2 * max_connections + FD_RESERVE,
                    open_files, fits)
        return fits
    return max_connections


def make_server(host: str, port: int, app: Any, error_log: Any = None, *, max_connections: int = 8192,
                header_timeout: float = 10.0, keepalive_timeout: float = 60.0) -> Server:
    """A ``Server`` on ``host:port`` (IPv6 when the host has a colon) with TCP_NODELAY; the open-file limit
    is raised first and the connection cap fitted to it."""
    cap = connection_cap(max_connections, raise_open_file_limit())
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    listener = WSGIServer.get_listener((host, port), backlog=1024, family=family)
    # Without TCP_NODELAY, Nagle holds the second of two small writes until the client's delayed ACK.
    # Accepted sockets inherit the option from the listener.
    listener.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return Server(listener, app, error_log=error_log, max_connections=cap, header_timeout=header_timeout,
                  keepalive_timeout=keepalive_timeout)
