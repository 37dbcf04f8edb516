"""The upstream HTTP client: one pooled ``requests.Session`` per backend, set up once.

``requests`` (and urllib3 under it) does the HTTP; this module only configures it through its public
extension points: the environment (``HTTPS_PROXY``/``NO_PROXY``, CA bundles) is read once here
rather than on every request, ``BACKEND_CA_BUNDLE`` adds trusted certificates to the TLS context, and
the response file ``http.client`` reads from bounds the one thing it reads without a bound of its own:
a run of lines with no body data between them (a head, or a chunked trailer that never ends).
"""
from __future__ import annotations

import http.client
import os
import ssl
from typing import Any
from urllib.parse import unquote, urlsplit

import requests
import requests.adapters
from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool

MAX_LINES = 65536  # bytes of lines read one after another: a response head, or a chunked trailer section
POOL_SIZE = 256  # idle keep-alive connections kept per backend
HEADERS = {"Content-Type": "application/json", "Accept": "*/*", "Accept-Encoding": "identity",
           "User-Agent": "llm-proxy"}


class ResponseTooLarge(Exception):
    """A bound was exceeded (head, trailer, body, decoded body); the message names what, to follow "sent".
    Not an ``OSError``: urllib3 passes it through unwrapped and drops the connection it came from."""

    def __init__(self, what: str, limit: int):
        super().__init__(f"{what} larger than {limit} bytes")
        self.limit = limit


class _LineBoundedFile:
    """The socket file of one response, as ``http.client`` reads it. Lines are read for the head, each
    chunk size and the trailer; a run of them longer than ``MAX_LINES`` with no body data read between
    them raises ``ResponseTooLarge`` (``http.client`` bounds each line, not how many follow)."""

    __slots__ = ("_fp", "_run", "_body")

    def __init__(self, fp: Any):
        self._fp = fp
        self._run = 0
        self._body = False

    def readline(self, size: int = -1) -> bytes:
        line = self._fp.readline(size)
        self._run += len(line)
        if self._run > MAX_LINES:
            raise ResponseTooLarge("a chunked trailer section" if self._body else "a response head", MAX_LINES)
        return line

    def read(self, size: int = -1) -> bytes:
        self._run, self._body = 0, True
        return self._fp.read(size)

    def read1(self, size: int = -1) -> bytes:
        self._run, self._body = 0, True
        return self._fp.read1(size)

    def readinto(self, buffer: Any) -> int:
        self._run, self._body = 0, True
        return self._fp.readinto(buffer)

    def __getattr__(self, name: str) -> Any:  # close, closed, peek, flush: as the file has them
        return getattr(self._fp, name)


class _Response(http.client.HTTPResponse):
    def __init__(self, sock: Any, *args: Any, **kwargs: Any):
        super().__init__(sock, *args, **kwargs)
        self.fp = _LineBoundedFile(self.fp)


class _Connection(HTTPConnection):
    response_class = _Response


class _TLSConnection(HTTPSConnection):
    response_class = _Response


class _Pool(HTTPConnectionPool):
    ConnectionCls = _Connection


class _TLSPool(HTTPSConnectionPool):
    ConnectionCls = _TLSConnection


POOL_CLASSES = {"http": _Pool, "https": _TLSPool}


class _Adapter(requests.adapters.HTTPAdapter):
    """urllib3 pools with the bounded response file and, when given, a TLS context trusting more CAs."""

    def __init__(self, tls: ssl.SSLContext | None):
        self._tls = tls
        super().__init__(pool_connections=1, pool_maxsize=POOL_SIZE, max_retries=0)

    def _extra(self, kwargs: dict) -> dict:
        if self._tls is not None:
            kwargs["ssl_context"] = self._tls
        return kwargs

    def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:
        super().init_poolmanager(*args, **self._extra(kwargs))
        self.poolmanager.pool_classes_by_scheme = POOL_CLASSES

    def proxy_manager_for(self, proxy: str, **kwargs: Any) -> Any:
        manager = super().proxy_manager_for(proxy, **self._extra(kwargs))
        manager.pool_classes_by_scheme = POOL_CLASSES
        return manager


def split_credentials(url: str) -> tuple[str, tuple[str, str] | None]:
    """``url`` without ``user:password@`` (the only form shown anywhere), and the pair, percent-decoded."""
    parts = urlsplit(url)
    if "@" not in parts.netloc:
        return url, None
    userinfo, _, host = parts.netloc.rpartition("@")
    user, _, password = userinfo.partition(":")
    return parts._replace(netloc=host).geturl(), (unquote(user), unquote(password))


def ca_bundle(configured: str, environ: Any = os.environ) -> str:
    """The extra certificates to trust: ``BACKEND_CA_BUNDLE``, else the bundle ``requests`` would read from
    the environment. ``SSL_CERT_FILE``/``SSL_CERT_DIR`` need nothing here: the default store honours them."""
    return configured or environ.get("REQUESTS_CA_BUNDLE") or environ.get("CURL_CA_BUNDLE") or ""


def tls_context(bundle: str) -> ssl.SSLContext | None:
    """The default trust store plus ``bundle`` (a file or a directory); None when nothing is added."""
    if not bundle:
        return None
    context = ssl.create_default_context()
    if os.path.isdir(bundle):
        context.load_verify_locations(capath=bundle)
    else:
        context.load_verify_locations(cafile=bundle)
    return context


def session_for(url: str, *, auth: tuple[str, str] | None, api_key: str, bundle: str) -> requests.Session:
    """One pooled session for the backend at ``url`` (credentials already split off). Proxies from the
    environment (``HTTP(S)_PROXY``, ``ALL_PROXY``, ``NO_PROXY``) are resolved for this URL now; the session
    then stops consulting the environment, which ``requests`` would otherwise do on every request."""
    session = requests.Session()
    proxies = session.merge_environment_settings(url, {}, False, None, None)["proxies"]
    session.trust_env = False
    session.proxies = dict(proxies)
    session.headers.clear()
    session.headers.update(HEADERS)
    if api_key:
        session.headers["Authorization"] = f"Bearer {api_key}"
    session.auth = auth
    adapter = _Adapter(tls_context(bundle))
    session.mount("http://", adapter)
    session.mount("https://", adapter)
    return session
