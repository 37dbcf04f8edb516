"""The gevent HTTP server of `python wsgi.py`: pywsgi's WSGIServer with a leaner request handler.

Every request passes through the handler, so what pywsgi does generically is done cheaper here
(measured with py-spy under bench/run.py: together about a tenth of the CPU of a small request):

- request headers are split by hand instead of by the ``email`` package (``http.client.parse_headers``);
  the limits stay those of ``http.client`` (100 header lines, 64 KiB per line) and a violation
  answers 400, as before;
- the status line, the headers and the first piece of the body leave in one send, not two;
- a response piece goes out in one ``send`` when the kernel takes it whole (gevent's ``sendall`` asks
  for the socket's buffer size first, a system call per piece);
- pywsgi formats no access line of its own (``accesslog.AccessLog`` writes ours);
- the connection's read buffer is 1 KiB, not 8 KiB: it lives as long as the connection (a stream
  holds it for minutes) while a request head is a few hundred bytes, and bodies larger than the
  buffer are read past it, straight into their destination.

Under ``gunicorn -k gevent`` gunicorn's own parser and writer serve instead; nothing here is needed.
"""
from __future__ import annotations

import socket
from typing import Any, BinaryIO, Iterator

from gevent.pywsgi import WSGIHandler, WSGIServer

from .backends.http11 import send_all

MAX_LINE = 65536
MAX_HEADERS = 100
READ_BUFFER = 1024


class RequestHeaders:
    """What pywsgi reads of a request's headers: ``status`` ('' when well-formed), ``get``/``getheader``
    (first value, name case-insensitive), ``del``, ``typeheader`` and ``headers`` (the raw lines, which
    pywsgi turns into ``HTTP_*`` environ keys, folding continuation lines itself)."""

    __slots__ = ("status", "headers", "_first")

    def __init__(self, lines: list[str], status: str = ""):
        self.status = status
        self.headers = lines
        first: dict[str, str] = {}
        for line in lines:
            if line[:1] in " \t":
                continue
            name, sep, value = line.partition(":")
            if sep:
                first.setdefault(name.strip().lower(), value.strip())
        self._first = first

    @classmethod
    def read(cls, fp: BinaryIO) -> "RequestHeaders":
        lines: list[str] = []
        while True:
            line = fp.readline(MAX_LINE + 1)
            if len(line) > MAX_LINE:
                return cls(lines, "Line too long")
            if line in (b"\r\n", b"\n", b""):
                return cls(lines)
            if len(lines) >= MAX_HEADERS:
                return cls(lines, f"more than {MAX_HEADERS} header lines")
            lines.append(line.decode("latin-1"))

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
        kept, skipping = [], False
        for line in self.headers:
            if line[:1] in " \t":
                if not skipping:
                    kept.append(line)
                continue
            skipping = line.partition(":")[0].strip().lower() == key
            if not skipping:
                kept.append(line)
        self.headers = kept

    @property
    def typeheader(self) -> str | None:
        return self._first.get("content-type")

    def __iter__(self) -> Iterator[str]:
        return iter(self._first)


NO_HEADERS = RequestHeaders([])


class Handler(WSGIHandler):
    """pywsgi's handler with the savings above; everything else is pywsgi's."""

    def __init__(self, sock: socket.socket, address: Any, server: WSGIServer, rfile: Any = None):
        super().__init__(sock, address, server, rfile if rfile is not None else sock.makefile("rb", READ_BUFFER))

    def MessageClass(self, fp: BinaryIO, *_args: Any) -> RequestHeaders:  # noqa: N802 - pywsgi's name
        return RequestHeaders.read(fp)

    def log_request(self) -> None:
        return None

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


def make_server(host: str, port: int, app: Any, error_log: Any = None) -> WSGIServer:
    """A WSGIServer on ``host:port`` (IPv6 when the host has a colon) with ``Handler`` and TCP_NODELAY."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    listener = WSGIServer.get_listener((host, port), backlog=1024, family=family)
    # Without TCP_NODELAY, Nagle holds the second of two small writes until the client's delayed ACK
    # (~40 ms). Accepted sockets inherit the option from the listener.
    listener.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return WSGIServer(listener, app, log=None, error_log=error_log, handler_class=Handler)
