"""The doctor's HTTP client for a running proxy (standard library only): each request bounded by one deadline
(connect, head, every read), JSON and streamed bodies read line by line, and every transport failure turned
into ``Failed`` saying what to do. Nothing here knows a client's handshake."""
from __future__ import annotations

import http.client
import json
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from .report import Failed, one_line

MAX_BODY = 16 * 1048576  # what the doctor reads of one answer at most
MAX_LINE = 1048576
AUTH_FIX = "pass the proxy's key with --api-key (or LLM_PROXY_API_KEY); the clients need it configured too"


@dataclass
class Answer:
    status: int
    headers: dict[str, str]
    body: bytes = b""
    lines: list[bytes] = field(default_factory=list)  # of a streamed body, without their line ends

    def json(self, what: str) -> Any:
        try:
            return json.loads(self.body)
        except ValueError:
            raise Failed(f"{what} answered a body that is not JSON: {self.body[:120]!r}",
                         "point --url at the proxy (or an Ollama), not at another server") from None


class Client:
    """Requests to one base URL with an optional bearer key, each within ``timeout`` seconds."""

    def __init__(self, base_url: str, api_key: str = "", timeout: float = 20.0):
        parts = urlsplit(base_url.rstrip("/"))
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise Failed(f"--url {base_url!r} is not an http:// or https:// URL", "give e.g. http://127.0.0.1:11434")
        self.base_url, self.parts = base_url.rstrip("/"), parts
        self.api_key, self.timeout = api_key, timeout

    def _connect(self, timeout: float) -> http.client.HTTPConnection:
        kind = http.client.HTTPSConnection if self.parts.scheme == "https" else http.client.HTTPConnection
        return kind(self.parts.hostname or "", self.parts.port, timeout=timeout)

    def request(self, method: str, path: str, body: Any = None, *, stream: bool = False,
                headers: dict[str, str] | None = None, timeout: float | None = None) -> Answer:
        """Send and read the whole answer (``stream``: as lines) before the deadline; Failed on any transport
        failure, on 401/403, and on a status of 400 or more (with the server's message)."""
        limit = self.timeout if timeout is None else min(timeout, self.timeout)
        deadline = time.monotonic() + limit
        sent = {"Accept": "application/json", "User-Agent": "llm-proxy-doctor", **(headers or {})}
        data = None if body is None else json.dumps(body).encode()
        if data is not None:
            sent["Content-Type"] = "application/json"
        if self.api_key:
            sent["Authorization"] = f"Bearer {self.api_key}"
        where = f"{method} {self.base_url}{path}"
        conn = self._connect(limit)
        try:
            conn.request(method, self.parts.path + path, body=data, headers=sent)
            resp = conn.getresponse()
            answer = Answer(resp.status, {k.lower(): v for k, v in resp.getheaders()})
            if stream and resp.status < 400:
                answer.lines = list(_lines(resp, deadline, conn))
            else:
                answer.body = _body(resp, deadline, conn)
        except TimeoutError:
            raise Failed(f"{where} did not answer within {limit:g} s", "check that the proxy and its backend "
                         "are up (`llm-proxy doctor` without --url checks the backends); --timeout waits longer"
                         ) from None
        except ConnectionRefusedError:
            raise Failed(f"cannot connect to {self.base_url}: connection refused",
                         "start the proxy, or fix --url (its HOST and PORT)") from None
        except (OSError, http.client.HTTPException) as exc:
            raise Failed(f"{where} failed: {one_line(str(exc) or type(exc).__name__)}",
                         "check --url and that the proxy is running") from None
        finally:
            conn.close()
        if answer.status in (401, 403):
            raise Failed(f"{where} was refused with HTTP {answer.status}: {_message(answer.body)}", AUTH_FIX)
        if answer.status >= 400:
            raise Failed(f"{where} answered HTTP {answer.status}: {_message(answer.body)}",
                         "check the proxy's log for this request; a 404 means --url is not this proxy")
        return answer


def _message(body: bytes) -> str:
    try:
        error = json.loads(body).get("error")
    except (ValueError, AttributeError):
        return one_line(body[:200].decode("utf-8", "replace")) or "(no body)"
    if isinstance(error, dict):
        error = error.get("message")
    return one_line(str(error))


def _remaining(deadline: float, conn: http.client.HTTPConnection) -> None:
    left = deadline - time.monotonic()
    if left <= 0:
        raise TimeoutError
    if conn.sock is not None:
        conn.sock.settimeout(left)


def _body(resp: http.client.HTTPResponse, deadline: float, conn: http.client.HTTPConnection) -> bytes:
    pieces: list[bytes] = []
    size = 0
    while True:
        _remaining(deadline, conn)
        piece = resp.read1(65536)
        if not piece:
            return b"".join(pieces)
        size += len(piece)
        if size > MAX_BODY:
            raise Failed(f"the answer is larger than {MAX_BODY} bytes", "point --url at the proxy")
        pieces.append(piece)


def _lines(resp: http.client.HTTPResponse, deadline: float, conn: http.client.HTTPConnection) -> Iterator[bytes]:
    """A streamed body's lines, blank ones included (SSE separates events with them)."""
    while True:
        _remaining(deadline, conn)
        line = resp.readline(MAX_LINE)
        if not line:
            return
        yield line.rstrip(b"\r\n")
