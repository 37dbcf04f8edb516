"""The upstream connection: one geventhttpclient keep-alive pool per backend, set up once.

geventhttpclient (made for gevent, llhttp parsing the answers) does the HTTP. This module owns what it leaves
to its caller: the environment (``HTTPS_PROXY``/``NO_PROXY``, CA bundles) read once per backend, the request
head (fixed headers, ``Host``, absolute form through a plain proxy), per-call timeouts, and bounds on what
llhttp reads without one: a response head, or a run of chunk framing and trailers with no body data in it.
An idle pooled connection that became readable (the backend closed it, or sent stray bytes) is discarded by
the pool before reuse, so nothing on it is ever read as the next answer.
"""
from __future__ import annotations

import base64
import functools
import os
import re
import ssl
import urllib.request
import weakref
from typing import Any
from urllib.parse import unquote, urlsplit

import gevent
import gevent.ssl
from geventhttpclient.connectionpool import ConnectionPool, SSLConnectionPool
from geventhttpclient.response import HTTPConnectionClosed, HTTPSocketPoolResponse

MAX_LINES = 65536  # bytes read with no body data among them: a response head, or chunk framing and trailers
POOL_SIZE = 4096  # connections open at once per backend (idle ones are kept for reuse)
READ_SIZE = 65536  # most bytes one socket read takes
HEADERS = {"Content-Type": "application/json", "Accept": "*/*", "Accept-Encoding": "identity",
           "User-Agent": "llm-proxy"}
_FIELD_VALUE = re.compile(r"\A[\t\x20-\x7e]*\Z")


class ResponseTooLarge(Exception):
    """A bound was exceeded (head, trailer, body, decoded body); the message names what, to follow "sent"."""

    def __init__(self, what: str, limit: int):
        super().__init__(f"{what} larger than {limit} bytes")
        self.limit = limit


class ConnectTimeout(Exception):
    """No connection (or TLS handshake, or proxy tunnel) within the connect timeout."""


class ProxyFailed(Exception):
    """The outbound proxy could not be reached or refused the tunnel; wraps the cause."""


class Headers(dict):
    """A response's header fields by lower-cased name (a repeated field: its values joined by ", ")."""

    def get(self, name: str, default: Any = None) -> Any:
        return super().get(name.lower(), default)

    def __getitem__(self, name: str) -> str:
        return super().__getitem__(name.lower())

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and super().__contains__(name.lower())


class Response(HTTPSocketPoolResponse):
    """One answer on a pooled connection: llhttp parses it, this bounds the bytes read outside the body and
    hands on body data as soon as any has arrived (``read_some``)."""

    def __init__(self, sock: Any, pool: ConnectionPool, method: str):
        self._run = 0
        super().__init__(sock, pool, block_size=READ_SIZE, method=method)

    def feed(self, data: Any) -> None:
        self._run += len(data)
        super().feed(data)
        if self._run > MAX_LINES:
            raise ResponseTooLarge("a chunked trailer section" if self.headers_complete else "a response head",
                                   MAX_LINES)

    def _on_body(self, buf: Any) -> None:
        self._run = 0
        super()._on_body(buf)

    def header_fields(self) -> Headers:
        fields = Headers()
        for name, value in self.items():
            key = name.lower()
            fields[key] = f"{fields[key]}, {value}" if key in fields else value
        return fields

    def read_some(self, size: int) -> bytes:
        """Up to ``size`` bytes of body, waiting only when none has arrived; b"" at its end. A connection
        that closes before the end raises ``HTTPConnectionClosed``."""
        buffer = self._body_buffer
        try:
            while not buffer:
                if self.message_complete:
                    return b""
                sock = self._sock
                if sock is None:
                    raise HTTPConnectionClosed("connection closed before the end of the body")
                data = sock.recv(size)
                self.feed(data)  # b"": the end, for a body read until close; else llhttp raises
        except BaseException:
            self.release()
            raise
        if len(buffer) <= size:
            data = bytes(buffer)
            buffer.clear()
        else:
            data = bytes(buffer[:size])
            del buffer[:size]
        return data

    def close(self) -> None:
        """Release the connection: back to the pool when the answer was read to its end, else closed."""
        self.release()


def split_credentials(url: str) -> tuple[str, tuple[str, str] | None]:
    """``url`` without ``user:password@`` (the only form shown anywhere), and the pair, percent-decoded."""
    parts = urlsplit(url)
    if "@" not in parts.netloc:
        return url, None
    userinfo, _, host = parts.netloc.rpartition("@")
    user, _, password = userinfo.partition(":")
    return parts._replace(netloc=host).geturl(), (unquote(user), unquote(password))


def ca_bundle(configured: str, environ: Any = os.environ) -> str:
    """The extra certificates to trust: ``BACKEND_CA_BUNDLE``, else ``REQUESTS_CA_BUNDLE``/``CURL_CA_BUNDLE``.
    ``SSL_CERT_FILE``/``SSL_CERT_DIR`` need nothing here: the default store honours them."""
    return configured or environ.get("REQUESTS_CA_BUNDLE") or environ.get("CURL_CA_BUNDLE") or ""


def tls_context(bundle: str) -> ssl.SSLContext:
    """The default trust store plus ``bundle`` (a file or a directory), when one is named."""
    context = gevent.ssl.create_default_context()  # gevent's: it wraps gevent sockets, patched or not
    if bundle and os.path.isdir(bundle):
        context.load_verify_locations(capath=bundle)
    elif bundle:
        context.load_verify_locations(cafile=bundle)
    return context


def proxy_for(url: str) -> str | None:
    """The proxy the environment names for ``url`` (``HTTP(S)_PROXY``, ``ALL_PROXY``), unless ``NO_PROXY``
    lets its host bypass it."""
    parts = urlsplit(url)
    proxies = urllib.request.getproxies()
    proxy = proxies.get(parts.scheme) or proxies.get("all")
    if not proxy or urllib.request.proxy_bypass(parts.netloc):
        return None
    return proxy if "://" in proxy else "http://" + proxy


def _basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode("ascii")


class _Proxied:
    """Connecting to the proxy, or opening a tunnel through it, fails as ``ProxyFailed``."""

    def _create_socket(self) -> Any:
        try:
            return super()._create_socket()  # type: ignore[misc]
        except ssl.SSLError:
            raise  # the backend's TLS, through the tunnel
        except (OSError, RuntimeError) as exc:
            raise ProxyFailed(str(exc) or type(exc).__name__) from exc


class _ProxiedPool(_Proxied, ConnectionPool):
    pass


class _ProxiedTLSPool(_Proxied, SSLConnectionPool):
    pass


class Connection:
    """Requests to one backend over a keep-alive pool (through a proxy when the environment names one)."""

    def __init__(self, url: str, *, auth: tuple[str, str] | None, api_key: str, bundle: str,
                 connect_timeout: float):
        parts = urlsplit(url)
        tls = parts.scheme == "https"
        host, port = parts.hostname or "", parts.port or (443 if tls else 80)
        self.prefix = parts.path.rstrip("/")
        shown = f"[{host}]" if ":" in host else host
        authority = shown if port == (443 if tls else 80) else f"{shown}:{port}"
        head = {"Host": authority, **HEADERS}
        if auth is not None:
            head["Authorization"] = _basic(*auth)
        elif api_key:
            head["Authorization"] = f"Bearer {api_key}"
        proxy = proxy_for(url)
        options: dict[str, Any] = {"size": POOL_SIZE, "connection_timeout": connect_timeout,
                                   "network_timeout": connect_timeout}
        self.absolute = ""  # the scheme and authority a plain proxy needs in front of each path
        if proxy is not None:
            via = urlsplit(proxy)
            options.update(use_proxy=True, proxy_user=unquote(via.username) if via.username else None,
                           proxy_password=unquote(via.password) if via.password else None)
            address = (via.hostname or "", via.port or 80)
            if not tls:
                self.absolute = f"http://{authority}"
                if via.username:
                    head["Proxy-Authorization"] = _basic(unquote(via.username), unquote(via.password or ""))
        else:
            address = (host, port)
        if tls:
            context = tls_context(bundle)
            options["ssl_context_factory"] = lambda **_: context
            pool_class: type[ConnectionPool] = _ProxiedTLSPool if proxy else SSLConnectionPool
        else:
            pool_class = _ProxiedPool if proxy else ConnectionPool
        self._new_pool = functools.partial(pool_class, *address, host, port, **options)
        # A gevent socket belongs to the hub of the thread that made it: one pool per hub. Served by gevent
        # that is one pool per process; served by threads (the tests' in-process server), one per thread.
        self._pools: weakref.WeakKeyDictionary[Any, ConnectionPool] = weakref.WeakKeyDictionary()
        self.head = "".join(f"{name}: {value}\r\n" for name, value in head.items())
        self.closed = False

    def close(self, hub: Any = None) -> None:
        """Close the keep-alive connections of one hub's pool (a thread ending), or of every pool: from then on
        requests fail as an unreachable backend would (sockets given back later are closed, not kept)."""
        if hub is not None:
            pool = self._pools.pop(hub, None)
            if pool is not None:
                pool.close()
            return
        self.closed = True
        while True:
            try:
                pools = list(self._pools.values())
                break
            except RuntimeError:  # another thread added its pool meanwhile (threads: the tests' server)
                continue
        for pool in pools:
            pool.close()

    def request(self, method: str, path: str, body: bytes | None, *, request_id: str | None,
                connect: float, read: float, headers: dict[str, str] | None = None) -> Response:
        """Send one request and read the answer's head; the body is left for ``Response.read_some``.
        ``headers``: more fields for this request only (the usage webhooks' signature)."""
        extra = ""
        for name, value in (headers or {}).items():
            if not _FIELD_VALUE.match(value):
                raise ValueError(f"{name} holds characters a header field cannot carry")
            extra += f"{name}: {value}\r\n"
        if request_id:
            if not _FIELD_VALUE.match(request_id):
                raise ValueError("X-Request-ID holds characters a header field cannot carry")
            extra = f"X-Request-ID: {request_id}\r\n"
        if body is not None or method in ("POST", "PUT", "PATCH"):
            extra += f"Content-Length: {len(body or b'')}\r\n"
        head = f"{method} {self.absolute}{self.prefix}{path} HTTP/1.1\r\n{self.head}{extra}\r\n".encode("latin-1")
        if self.closed:
            raise ConnectionAbortedError("the backend was closed (dropped from BACKENDS_FILE, or the proxy stops)")
        hub = gevent.get_hub()
        pool = self._pools.get(hub)
        if pool is None:
            pool = self._pools[hub] = self._new_pool()
        try:
            with gevent.Timeout(connect, ConnectTimeout(f"no connection within {connect:g} s")):
                sock = pool.get_socket()
        except TimeoutError as exc:  # the socket's own connect timeout
            raise ConnectTimeout(f"no connection within {connect:g} s") from exc
        except RuntimeError:  # "connection pool closed": closed (``close``) since the look above
            raise ConnectionAbortedError("the backend was closed (dropped from BACKENDS_FILE, or the proxy "
                                         "stops)") from None
        try:
            sock.settimeout(read)
            sock.sendall(head + body if body else head)
        except BaseException:
            pool.release_socket(sock)
            raise
        return Response(sock, pool, method)
