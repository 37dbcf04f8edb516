"""Upstream HTTP: one pooled connection pool per backend, responses read chunk by chunk.

The hot path uses the urllib3 pool under a ``requests.Session`` directly (``requests`` adds
~0.2 ms of header and cookie handling per call and cannot hand over HTTP chunks as they come).
This is the only place that turns urllib3 failures into ``ProxyError``s.
"""
from __future__ import annotations

import logging
import socket
from typing import Any, Iterator

import requests
import urllib3
from urllib3.exceptions import (ConnectTimeoutError, HTTPError, NewConnectionError, ProtocolError,
                                ReadTimeoutError)

from .. import jsonio
from ..config import Settings
from ..errors import (BackendTimeout, BackendUnavailable, ProxyError, UpstreamStatus, code_from_upstream_body,
                      message_from_upstream_body)

log = logging.getLogger(__name__)

READ_SIZE = 65536


class Upstream:
    """An open upstream response: status, headers, its body as chunks, close()."""

    def __init__(self, resp: urllib3.HTTPResponse, backend: "HTTPBackend"):
        self._resp = resp
        self._backend = backend
        self.status = resp.status
        self.headers = resp.headers

    def iter_bytes(self) -> Iterator[bytes]:
        resp = self._resp
        try:
            if resp.chunked and resp.supports_chunked_reads():
                for chunk in resp.read_chunked(decode_content=True):
                    if chunk:
                        yield chunk
            else:
                while True:
                    chunk = resp.read1(READ_SIZE)
                    if not chunk:
                        break
                    yield chunk
        except (ReadTimeoutError, socket.timeout):
            raise BackendTimeout(f"{self._backend.describe()} stopped sending for "
                                 f"{self._backend.read_timeout:g} s") from None
        except (ProtocolError, HTTPError, OSError) as exc:
            raise BackendUnavailable(f"the connection to {self._backend.describe()} broke: {exc}") from None

    def read(self) -> bytes:
        return b"".join(self.iter_bytes())

    def json(self) -> Any:
        body = self.read()
        try:
            return jsonio.loads(body)
        except ValueError:
            raise BackendUnavailable(f"{self._backend.describe()} sent a body that is not JSON: {body[:200]!r}") from None

    def close(self) -> None:
        resp = self._resp
        if resp.isclosed() or resp.fp is None:
            resp.release_conn()
            return
        # A body not read to the end cannot go back to the pool: drop the connection so the
        # backend sees the client leave and stops generating.
        resp.close()
        resp.release_conn()


class HTTPBackend:
    """Base for HTTP backends: pooled requests to ``settings.backend_url``."""

    type = "http"
    dialect = "openai"

    def __init__(self, settings: Settings, session: requests.Session | None = None):
        self.settings = settings
        self.base_url = settings.backend_url
        self.read_timeout = settings.backend_timeout
        self.session = session or requests.Session()
        adapter = requests.adapters.HTTPAdapter(pool_connections=1, pool_maxsize=256)
        self.session.mount(self.base_url, adapter)
        self.pool = adapter.poolmanager.connection_from_url(self.base_url)
        self._path_prefix = urllib3.util.parse_url(self.base_url).path or ""
        self._timeout = urllib3.Timeout(connect=settings.backend_connect_timeout, read=settings.backend_timeout)
        self._headers = {"Content-Type": "application/json", "Accept": "*/*", "User-Agent": "llm-proxy"}
        if settings.backend_api_key:
            self._headers["Authorization"] = f"Bearer {settings.backend_api_key}"

    @property
    def name(self) -> str:
        return f"{self.type} backend"

    def describe(self) -> str:
        return f"{self.type} backend at {self.base_url}"

    def open(self, method: str, path: str, body: bytes | None = None, *, request_id: str | None = None,
             timeout: float | None = None) -> Upstream:
        """Send a request and return the response unread; error statuses raise ``UpstreamStatus``."""
        headers = self._headers
        if request_id:
            headers = {**headers, "X-Request-ID": request_id}
        t = self._timeout if timeout is None else urllib3.Timeout(connect=min(timeout, self._timeout.connect_timeout),
                                                                  read=timeout)
        try:
            resp = self.pool.urlopen(method, self._path_prefix + path, body=body, headers=headers, retries=False,
                                     redirect=False, preload_content=False, timeout=t, decode_content=True)
        except NewConnectionError as exc:  # before ConnectTimeoutError: urllib3 2 subclasses it
            reason = str(exc).rsplit(":", 1)[-1].strip() or "connection failed"
            raise BackendUnavailable(f"cannot connect to {self.describe()}: {reason}") from None
        except (ConnectTimeoutError, ReadTimeoutError, socket.timeout):
            raise BackendTimeout(f"{self.describe()} did not answer within "
                                 f"{t.read_timeout if t.read_timeout else self.read_timeout:g} s") from None
        except (HTTPError, OSError) as exc:
            raise BackendUnavailable(f"cannot reach {self.describe()}: {exc}") from None
        upstream = Upstream(resp, self)
        if resp.status >= 400:
            try:
                raw = resp.read()
            except (HTTPError, OSError):
                raw = b""
            finally:
                upstream.close()
            message = message_from_upstream_body(raw, f"{self.describe()} answered HTTP {resp.status}")
            raise UpstreamStatus(message, status=resp.status, code=code_from_upstream_body(raw))
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

    def list_models(self, timeout: float | None = None) -> list[dict]:  # pragma: no cover - abstract
        raise NotImplementedError
