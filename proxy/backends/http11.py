"""A small HTTP/1.1 client for backends: a keep-alive pool per backend, bodies read as they arrive.

Why not ``requests``/urllib3 on this path: every request and every stream chunk passes through
here, and on the benchmark box urllib3 + ``http.client`` (an ``email`` parser for the headers, a
buffered reader, timeout and retry objects) cost more CPU per request than the rest of the proxy.
A backend is one origin that speaks plain HTTP/1.1 with JSON, so the client needs only: one
request written with one ``sendall``; a status line and headers split by hand; bodies framed by
``Content-Length``, chunked transfer coding or the connection closing; keep-alive with stale
connections retried once; gzip/deflate decoded if a server compresses anyway; TLS for ``https``.

Nothing here knows about dialects; failures are plain ``OSError``/``HTTPProtocolError`` that
``base.py`` turns into ``ProxyError``s naming the backend. Under gevent the socket calls yield to
the hub (the standard ``socket`` and ``ssl`` modules are patched before this is imported).
"""
from __future__ import annotations

import collections
import select
import socket
import ssl
import time
import zlib
from typing import Callable, Iterator
from urllib.parse import unquote, urlsplit

RECV_SIZE = 65536
MAX_HEAD = 65536  # status line + headers
MAX_IDLE = 256  # idle connections kept per backend
MAX_TRAILER = 65536  # the chunked trailer section, bounded like a head
DECODE_STEP = 262144  # most bytes one decompress call may produce: a compressed body never inflates at once
YIELD_EVERY = 1048576  # bytes read without waiting before a reader lets other greenlets run

try:  # the kernel's poll, not gevent's: a zero-timeout look at one descriptor must not yield or allocate a watcher
    from gevent.monkey import get_original
    _poll = get_original("select", "poll")
except ImportError:  # pragma: no cover - gevent is a dependency
    _poll = select.poll
_READABLE = select.POLLIN | select.POLLPRI  # POLLHUP and POLLERR are always reported


def has_unread(sock: socket.socket) -> bool:
    """True when an idle connection has something to read: stray bytes after the last answer, or the
    backend's close. Either way it must not carry another request: those bytes would be read as its answer."""
    pending = getattr(sock, "pending", None)  # TLS: records already decrypted and buffered
    if pending is not None and pending():
        return True
    poller = _poll()
    poller.register(sock.fileno(), _READABLE)
    return bool(poller.poll(0))


def send_all(sock: socket.socket, data: bytes | bytearray) -> None:
    """``sock.sendall`` for the common case of a message the kernel takes at once: one ``send``.
    (gevent's ``sendall`` asks the kernel for the send-buffer size on every call and slices the data
    into views; for a request head or a stream chunk that is most of the cost.)"""
    sent = sock.send(data)
    if sent < len(data):
        sock.sendall(memoryview(data)[sent:])


class HTTPProtocolError(OSError):
    """The backend broke HTTP/1.1 framing (or closed the connection mid-message)."""


class ResponseTooLarge(HTTPProtocolError):
    """A bound was exceeded (trailer, body, decoded body); the message names what, to follow "sent"."""

    def __init__(self, what: str, limit: int):
        super().__init__(f"{what} larger than {limit} bytes")
        self.limit = limit


def _cooperate() -> None:
    """Let other greenlets run: a backend sending as fast as the socket delivers never makes ``recv`` wait,
    so without this one reader would hold the process (``time.sleep`` is gevent's once patched)."""
    time.sleep(0)


class ConnectTimeout(TimeoutError):
    """No connection to the backend within the connect timeout."""


class Headers:
    """Response headers: case-insensitive ``get``/``[]``/``in``; repeated names joined by ", "."""

    __slots__ = ("_items", "_index")

    def __init__(self, items: list[tuple[str, str]]):
        self._items = items
        index: dict[str, str] = {}
        for name, value in items:
            key = name.lower()
            index[key] = f"{index[key]}, {value}" if key in index else value
        self._index = index

    def get(self, name: str, default: str | None = None) -> str | None:
        return self._index.get(name.lower(), default)

    def __getitem__(self, name: str) -> str:
        return self._index[name.lower()]

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and name.lower() in self._index

    def items(self) -> list[tuple[str, str]]:
        return list(self._items)

    def __repr__(self) -> str:
        return f"Headers({self._items!r})"


class Origin:
    """Where a backend lives and how to open a connection to it. Credentials in the URL (user:password@)
    are kept apart (``username``, ``password``; percent-decoded) and ``url`` is the URL without them,
    the only form shown anywhere."""

    def __init__(self, url: str):
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https"):
            raise ValueError(f"unsupported URL scheme {parts.scheme!r} (http or https)")
        netloc = parts.netloc
        self.username: str | None = None
        self.password: str | None = None
        if "@" in netloc:
            userinfo, _, netloc = netloc.rpartition("@")
            user, _, password = userinfo.partition(":")
            self.username, self.password = unquote(user), unquote(password)
        self.url = parts._replace(netloc=netloc).geturl()
        self.tls = parts.scheme == "https"
        self.host = parts.hostname or "localhost"
        self.port = parts.port or (443 if self.tls else 80)
        default_port = 443 if self.tls else 80
        host = f"[{self.host}]" if ":" in self.host else self.host
        self.host_header = host if self.port == default_port else f"{host}:{self.port}"
        self.path_prefix = parts.path.rstrip("/")
        self._tls_context = ssl.create_default_context() if self.tls else None

    def connect(self, timeout: float) -> socket.socket:
        try:
            sock = socket.create_connection((self.host, self.port), timeout=timeout)
        except TimeoutError:
            raise ConnectTimeout(f"no connection within {timeout:g} s") from None
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            if self._tls_context is not None:
                sock = self._tls_context.wrap_socket(sock, server_hostname=self.host)
        except BaseException:
            sock.close()
            raise
        return sock


class Pool:
    """Idle keep-alive connections to one origin, most recently used first."""

    def __init__(self, origin: Origin, connect_timeout: float, max_idle: int = MAX_IDLE):
        self.origin = origin
        self.connect_timeout = connect_timeout
        self._idle: collections.deque = collections.deque()
        self._max_idle = max_idle

    def request(self, method: str, target: str, head_lines: bytes, body: bytes | None,
                read_timeout: float, connect_timeout: float | None = None) -> "Response":
        """Send one request; the response's head is read, its body is not.

        ``head_lines`` are the encoded header lines after Host (each ending in CRLF). A reused
        connection that turns out to be closed before any byte of the answer arrives is replaced
        by a fresh one once (the backend closed it while idle: the request was never processed).
        """
        head = b"%s %s HTTP/1.1\r\nHost: %s\r\n%s" % (method.encode(), target.encode("utf-8", "surrogateescape"),
                                                       self.origin.host_header.encode("idna"), head_lines)
        if body is not None or method in ("POST", "PUT", "PATCH"):
            head += b"Content-Length: %d\r\n" % (len(body) if body else 0)
        head += b"\r\n"
        # a large body is sent after the head, not joined to it: joining would copy it
        message = (head + body,) if body and len(body) <= RECV_SIZE else (head, body) if body else (head,)
        while self._idle:
            sock = self._idle.pop()
            if has_unread(sock):
                sock.close()  # stray bytes or the backend's close: never reused
                continue
            try:
                sock.settimeout(read_timeout)
                for part in message:
                    send_all(sock, part)
                return Response(self, sock, method, read_timeout)
            except (_Stale, BrokenPipeError, ConnectionResetError):
                sock.close()  # closed by the backend while idle: try the next one, or a new one
            except BaseException:
                sock.close()
                raise
        sock = self.origin.connect(self.connect_timeout if connect_timeout is None else connect_timeout)
        try:
            sock.settimeout(read_timeout)
            for part in message:
                send_all(sock, part)
            return Response(self, sock, method, read_timeout, fresh=True)
        except BaseException:
            sock.close()
            raise

    def put_back(self, sock: socket.socket) -> None:
        if len(self._idle) < self._max_idle:
            self._idle.append(sock)
        else:
            sock.close()

    def close(self) -> None:
        while self._idle:
            self._idle.pop().close()

    def idle(self) -> int:
        return len(self._idle)


class _Stale(OSError):
    """A reused keep-alive connection was already closed by the backend."""


# Body framing modes
_LENGTH, _CHUNKED, _UNTIL_CLOSE, _NONE = range(4)


class Response:
    """One response: ``status``, ``reason``, ``headers``; the body from ``iter_bytes()`` or ``read()``.

    Chunked bodies are yielded as they arrive (the bytes of every complete or partial chunk in
    one receive, joined); the connection goes back to the pool once the body was read to its end
    and the server did not ask to close. ``close()`` before the end drops the connection, so the
    backend sees the client leave.
    """

    __slots__ = ("_pool", "_sock", "_buf", "_mode", "_remaining", "_keep", "_done", "_decoder",
                 "status", "reason", "headers", "chunked")

    def __init__(self, pool: Pool, sock: socket.socket, method: str, read_timeout: float, fresh: bool = False):
        self._pool = pool
        self._sock = sock
        self._done = False
        self._decoder = None
        buf = b""
        while True:
            while True:
                end = buf.find(b"\r\n\r\n")
                if end >= 0:
                    break
                if len(buf) > MAX_HEAD:
                    raise HTTPProtocolError("the response head is larger than 64 KiB")
                data = sock.recv(RECV_SIZE)
                if not data:
                    if not buf and not fresh:
                        raise _Stale("connection closed while idle")
                    raise HTTPProtocolError("the connection closed before a complete response head")
                buf += data
            lines = buf[:end].decode("latin-1").split("\r\n")
            buf = buf[end + 4:]
            status_line = lines[0].split(" ", 2)
            try:
                version = status_line[0]
                self.status = int(status_line[1])
            except (IndexError, ValueError):
                raise HTTPProtocolError(f"malformed status line {lines[0][:100]!r}") from None
            if not version.startswith("HTTP/1."):
                raise HTTPProtocolError(f"not an HTTP/1.x response: {lines[0][:100]!r}")
            if not 100 <= self.status < 200 or self.status == 101:
                break
            fresh = True  # an interim answer (100 Continue, 103 Early Hints): the final head follows
        self._buf = buf
        self.reason = status_line[2] if len(status_line) > 2 else ""
        items = []
        for line in lines[1:]:
            name, sep, value = line.partition(":")
            if sep:
                items.append((name.strip(), value.strip()))
        self.headers = headers = Headers(items)
        connection = (headers.get("connection") or "").lower()
        self._keep = "close" not in connection and (version != "HTTP/1.0" or "keep-alive" in connection)
        encoding = (headers.get("transfer-encoding") or "").lower()
        self.chunked = "chunked" in encoding
        if method == "HEAD" or self.status in (204, 304) or 100 <= self.status < 200:
            self._mode, self._remaining = _NONE, 0
        elif self.chunked:
            self._mode, self._remaining = _CHUNKED, -1
        elif headers.get("content-length") is not None:
            length = headers["content-length"]
            if not (length.isascii() and length.isdigit()):  # int() would also take "-1", "+5", "1_0"
                raise HTTPProtocolError(f"bad Content-Length {length!r}")
            self._remaining = int(length)
            self._mode = _LENGTH
        else:
            self._mode, self._remaining, self._keep = _UNTIL_CLOSE, -1, False
        content_encoding = (headers.get("content-encoding") or "").lower()
        if content_encoding in ("gzip", "x-gzip"):
            self._decoder = zlib.decompressobj(16 + zlib.MAX_WBITS)
        elif content_encoding == "deflate":
            self._decoder = zlib.decompressobj()
        if self._mode == _NONE or (self._mode == _LENGTH and self._remaining == 0):
            self._finish()

    # --- body -------------------------------------------------------------------------------------
    def iter_bytes(self, tap: Callable[[bytes], None] | None = None, limit: int | None = None,
                   decoded_limit: int | None = None) -> Iterator[bytes]:
        """The body as it arrives; ``tap(chunk)`` sees each chunk just before it is yielded (a call
        rather than one more generator around this one). Not a generator itself: a stream's greenlet
        keeps every generator frame it is suspended in on its saved C stack, so an uncompressed,
        unbounded body (a stream) is one layer, not three.

        ``limit`` bounds the whole body, ``decoded_limit`` a compressed body once decoded (the proxy asks
        for none); past either, ``ResponseTooLarge`` and the connection is dropped."""
        if self._decoder is not None:
            if limit is not None:
                decoded_limit = limit if decoded_limit is None else min(limit, decoded_limit)
            return self._decoded(self._raw(None), tap, decoded_limit)
        if limit is None:
            return self._raw(tap)
        if self._mode == _LENGTH and self._remaining > limit:  # refused before a byte of it is read
            self.close()
            return self._refused(limit)
        return self._bounded(self._raw(None), tap, limit)

    def _refused(self, limit: int) -> Iterator[bytes]:
        raise ResponseTooLarge("a body", limit)
        yield b""  # pragma: no cover - makes this a generator: the error comes when the body is read

    def _bounded(self, raw: Iterator[bytes], tap: Callable[[bytes], None] | None, limit: int) -> Iterator[bytes]:
        total = 0
        for data in raw:
            total += len(data)
            if total > limit:
                self.close()
                raise ResponseTooLarge("a body", limit)
            if tap is not None:
                tap(data)
            yield data

    def _decoded(self, raw: Iterator[bytes], tap: Callable[[bytes], None] | None,
                 limit: int | None) -> Iterator[bytes]:
        decoder = self._decoder
        total = 0
        try:
            for data in raw:
                while True:  # a step at a time: a few compressed bytes may stand for gigabytes
                    out = decoder.decompress(data, DECODE_STEP)
                    data = decoder.unconsumed_tail
                    if out:
                        total += len(out)
                        if limit is not None and total > limit:
                            self.close()
                            raise ResponseTooLarge("a compressed body that decodes to", limit)
                        if tap is not None:
                            tap(out)
                        yield out
                    if not data and len(out) < DECODE_STEP:
                        break
            tail = decoder.flush()
            if tail:
                total += len(tail)
                if limit is not None and total > limit:
                    self.close()
                    raise ResponseTooLarge("a compressed body that decodes to", limit)
                if tap is not None:
                    tap(tail)
                yield tail
        except zlib.error as exc:
            raise HTTPProtocolError(f"the compressed body does not decode: {exc}") from None

    def read(self) -> bytes:
        return b"".join(self.iter_bytes())

    def _raw(self, tap: Callable[[bytes], None] | None) -> Iterator[bytes]:
        if self._done:
            return iter(())
        mode = self._mode
        if mode == _LENGTH:
            return self._read_length(tap)
        if mode == _CHUNKED:
            return self._read_chunked(tap)
        return self._read_until_close(tap)

    def _read_length(self, tap: Callable[[bytes], None] | None) -> Iterator[bytes]:
        buf, self._buf = self._buf, b""
        remaining = self._remaining
        sock = self._sock
        unyielded = 0  # bytes read since other greenlets last ran
        while True:
            if buf:
                if len(buf) > remaining:
                    buf = buf[:remaining]  # a server must not send more: the excess is dropped with the connection
                    self._keep = False
                remaining -= len(buf)
                self._remaining = remaining
                if tap is not None:
                    tap(buf)
                if remaining == 0:
                    self._finish()
                    yield buf
                    return
                yield buf
            buf = sock.recv(RECV_SIZE)
            if not buf:
                raise HTTPProtocolError(f"the connection closed with {remaining} bytes of the body unread")
            unyielded += len(buf)
            if unyielded >= YIELD_EVERY:
                unyielded = 0
                _cooperate()

    def _read_until_close(self, tap: Callable[[bytes], None] | None) -> Iterator[bytes]:
        buf, self._buf = self._buf, b""
        sock = self._sock
        unyielded = 0
        while True:
            if buf:
                if tap is not None:
                    tap(buf)
                yield buf
            buf = sock.recv(RECV_SIZE)
            if not buf:
                self._finish()
                return
            unyielded += len(buf)
            if unyielded >= YIELD_EVERY:
                unyielded = 0
                _cooperate()

    def _read_chunked(self, tap: Callable[[bytes], None] | None) -> Iterator[bytes]:
        """Decode chunked transfer coding; yields each receive's payload bytes at once."""
        buf = self._buf
        self._buf = b""
        sock = self._sock
        size = -1  # bytes left in the current chunk; -1: a size line is expected next
        unyielded = 0
        while True:
            out = []
            pos = 0
            end_of_body = False
            while True:
                if size > 0:
                    take = buf[pos:pos + size]
                    if take:
                        out.append(take)
                        size -= len(take)
                        pos += len(take)
                    if size > 0:
                        break  # need more bytes
                    size = -2  # the CRLF after the chunk data
                if size == -2:
                    if len(buf) - pos < 2:
                        break
                    if buf[pos:pos + 2] != b"\r\n":
                        raise HTTPProtocolError("a chunk did not end with CRLF")
                    pos += 2
                    size = -1
                nl = buf.find(b"\r\n", pos)
                if nl < 0:
                    if len(buf) - pos > 1024:
                        raise HTTPProtocolError("a chunk size line is longer than 1 KiB")
                    break
                line = buf[pos:nl]
                pos = nl + 2
                try:
                    size = int(line.split(b";", 1)[0].strip(), 16)
                except ValueError:
                    raise HTTPProtocolError(f"bad chunk size line {bytes(line[:40])!r}") from None
                if size == 0:
                    end_of_body = True
                    break
            if end_of_body:
                # trailer fields until an empty line, bounded like a head
                rest = buf[pos:]
                while True:
                    if rest.startswith(b"\r\n"):
                        after = 2
                        break
                    end = rest.find(b"\r\n\r\n")
                    if end >= 0:
                        after = end + 4
                        break
                    if len(rest) > MAX_TRAILER:
                        raise ResponseTooLarge("a chunked trailer section", MAX_TRAILER)
                    data = sock.recv(RECV_SIZE)
                    if not data:
                        raise HTTPProtocolError("the connection closed inside the chunked trailer")
                    rest += data
                if len(rest) > after:
                    self._keep = False  # bytes after the end of the message: the connection is not reused
                self._finish()
                if out:
                    piece = out[0] if len(out) == 1 else b"".join(out)
                    if tap is not None:
                        tap(piece)
                    yield piece
                return
            buf = buf[pos:]
            if out:
                piece = out[0] if len(out) == 1 else b"".join(out)
                out = take = None  # type: ignore[assignment]  # not kept while waiting for the next
                if tap is not None:
                    tap(piece)
                yield piece
                piece = None  # type: ignore[assignment]
            data = None  # type: ignore[assignment]  # the last receive is not kept while waiting
            data = sock.recv(RECV_SIZE)
            if not data:
                raise HTTPProtocolError("the connection closed in the middle of a chunked body")
            unyielded += len(data)
            if unyielded >= YIELD_EVERY:
                unyielded = 0
                _cooperate()
            buf = buf + data if buf else data

    # --- connection -------------------------------------------------------------------------------
    def _finish(self) -> None:
        self._done = True
        sock, self._sock = self._sock, None
        if sock is None:
            return
        if self._keep and not self._buf:  # bytes left over after the message: not reused
            self._pool.put_back(sock)
        else:
            sock.close()

    @property
    def complete(self) -> bool:
        return self._done

    def close(self) -> None:
        """Release the connection: back to the pool when the body was read, else closed."""
        sock, self._sock = self._sock, None
        if sock is not None:
            self._done = True
            sock.close()


def encode_headers(headers: dict[str, str]) -> bytes:
    """Header lines (CRLF-terminated) for ``Pool.request``; CR/LF in values are refused."""
    out = []
    for name, value in headers.items():
        if "\r" in value or "\n" in value or "\r" in name or "\n" in name:
            raise ValueError(f"header {name!r} contains a line break")
        out.append(f"{name}: {value}\r\n")
    return "".join(out).encode("latin-1")
