"""A raw TCP server for HTTP client tests: it reads requests (head until CRLFCRLF, then a Content-Length
body), records them, and answers with scripted raw bytes — optionally in pieces with pauses, held back behind
a gate, endless (any iterable of pieces), or with the connection closed afterwards. Replies are taken in order,
or by route (method, path) when one is set; anything not scripted closes the connection. Used where a test
needs bytes no well-behaved server would send (stray data, hostile framing). Nothing here imports the proxy."""
from __future__ import annotations

import collections
import socket
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

# --------------------------------------------------------------------------------------------
# the raw server
# --------------------------------------------------------------------------------------------


@dataclass
class Reply:
    """What the server writes for one request.

    pieces  raw bytes, each written with its own sendall (an empty list writes nothing); any iterable,
            so a generator makes an endless reply (written until the client leaves or the server stops)
    pause   seconds slept before every piece after the first (so they arrive apart)
    gate    after the first piece, wait for this event before writing the rest
    close   close the connection after the last piece (else read the next request on it)
    hang    write nothing and hold the connection open until the server stops
    sent    set once the last piece is written (a test waits on it rather than sleeping)
    """

    pieces: Iterable[bytes] = field(default_factory=list)
    pause: float = 0.0
    gate: threading.Event | None = None
    close: bool = False
    hang: bool = False
    sent: threading.Event = field(default_factory=threading.Event)


@dataclass
class Received:
    conn: int  # index of the connection it came on (0 = first accepted)
    method: str
    target: str
    version: str
    headers: list[tuple[str, str]]
    body: bytes
    head: bytes  # the raw head, request line to the blank line included

    def header(self, name: str) -> str | None:
        values = [v for n, v in self.headers if n.lower() == name.lower()]
        assert len(values) <= 1, f"{name} sent {len(values)} times"
        return values[0] if values else None


@dataclass
class Conn:
    sock: socket.socket
    eof: threading.Event = field(default_factory=threading.Event)  # the client closed (or reset) it
    closed: threading.Event = field(default_factory=threading.Event)  # the server closed it


RouteReply = Reply | bytes | Callable[[], Reply]  # a callable builds a fresh Reply per request


class RawServer:
    def __init__(self) -> None:
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.listener.settimeout(0.05)
        self.port = self.listener.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self.requests: list[Received] = []
        self.conns: list[Conn] = []
        self._replies: collections.deque[Reply] = collections.deque()
        self._routes: dict[tuple[str, str], RouteReply] = {}
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._threads: list[threading.Thread] = []

    def script(self, *replies: Reply | bytes) -> RawServer:
        with self._lock:
            self._replies.extend(r if isinstance(r, Reply) else Reply([r]) for r in replies)
        return self

    def route(self, method: str, path: str, reply: RouteReply) -> RawServer:
        """Answer every request for (method, path) with `reply` (before the ordered script)."""
        with self._lock:
            self._routes[(method.upper(), path)] = reply
        return self

    def start(self) -> RawServer:
        self._acceptor = threading.Thread(target=self._accept_loop, daemon=True)
        self._acceptor.start()
        return self

    def stop(self) -> None:
        self._stopping.set()
        try:
            self.listener.shutdown(socket.SHUT_RDWR)  # wakes accept() at once on Linux
        except OSError:
            pass
        self._acceptor.join(timeout=2)
        self.listener.close()
        for conn in self.conns:
            try:
                conn.sock.shutdown(socket.SHUT_RDWR)  # wakes a recv() in its thread
            except OSError:
                pass
        for thread in self._threads:
            thread.join(timeout=2)

    def _spawn(self, target, *args) -> None:
        thread = threading.Thread(target=target, args=args, daemon=True)
        self._threads.append(thread)
        thread.start()

    def _accept_loop(self) -> None:
        while not self._stopping.is_set():
            try:
                sock, _ = self.listener.accept()
            except (TimeoutError, OSError):
                continue
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            with self._lock:
                self.conns.append(Conn(sock))
                index = len(self.conns) - 1
            self._spawn(self._serve, index)

    def _next_reply(self, method: str, target: str) -> Reply | None:
        with self._lock:
            routed = self._routes.get((method, target.split("?", 1)[0]))
            if routed is None:
                return self._replies.popleft() if self._replies else None
        if isinstance(routed, bytes):
            return Reply([routed])
        return routed if isinstance(routed, Reply) else routed()

    def _wait(self, event: threading.Event) -> None:
        while not event.wait(0.02) and not self._stopping.is_set():
            pass

    def _serve(self, index: int) -> None:
        conn = self.conns[index]
        sock = conn.sock
        buf = b""

        def more() -> bool:
            nonlocal buf
            try:
                data = sock.recv(65536)
            except OSError:
                data = b""
            if not data:
                conn.eof.set()
                return False
            buf += data
            return True

        try:
            while not self._stopping.is_set():
                while b"\r\n\r\n" not in buf:
                    if not more():
                        return
                head, _, buf = buf.partition(b"\r\n\r\n")
                lines = head.decode("latin-1").split("\r\n")
                method, target, version = lines[0].split(" ")
                headers = [(n.strip(), v.strip()) for n, _, v in (line.partition(":") for line in lines[1:])]
                length = int(next((v for n, v in headers if n.lower() == "content-length"), "0"))
                while len(buf) < length:
                    if not more():
                        return
                body, buf = buf[:length], buf[length:]
                self.requests.append(Received(index, method, target, version, headers, body, head + b"\r\n\r\n"))
                reply = self._next_reply(method, target)
                if reply is None:
                    return
                if reply.hang:
                    self._stopping.wait()
                    return
                for i, piece in enumerate(reply.pieces):
                    if self._stopping.is_set():
                        return
                    if i and reply.pause:
                        time.sleep(reply.pause)
                    sock.sendall(piece)
                    if i == 0 and reply.gate is not None:
                        self._wait(reply.gate)
                reply.sent.set()
                if reply.close:
                    return
        except OSError:
            conn.eof.set()
        finally:
            sock.close()
            conn.closed.set()


def http(status: int = 200, body: bytes = b"", *, headers: tuple[tuple[str, str], ...] = (), reason: str = "OK",
         version: str = "HTTP/1.1", length: bool = True) -> bytes:
    """A raw response; Content-Length is added unless `length` is False."""
    lines = [f"{version} {status} {reason}"] + [f"{n}: {v}" for n, v in headers]
    if length:
        lines.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body


def chunked(*chunks: bytes, trailer: bytes = b"") -> bytes:
    return b"".join(b"%x\r\n%s\r\n" % (len(c), c) for c in chunks) + b"0\r\n" + trailer + b"\r\n"


CHUNKED_HEAD = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Type: text/event-stream\r\n\r\n"
