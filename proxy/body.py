"""The request body, read from the WSGI input once into one bytes object that every reader shares.

werkzeug's own read gathers the body in pieces and then copies them into its result, so a large body
briefly exists twice; here the pieces are written straight into the object returned (a ``BufferedReader``
fills the bytes it hands out). The result becomes werkzeug's ``get_data`` cache, so the gate, the views and
the log see that one object. A body past MAX_REQUEST_BYTES is refused while it is read.
"""
from __future__ import annotations

import io
from typing import Any

from werkzeug.exceptions import ClientDisconnected

from .errors import PayloadTooLarge

PIECE = 65536  # what one read from the WSGI input asks for


class _Input(io.RawIOBase):
    """The WSGI input as a raw stream that stops after ``remaining`` bytes (None: at its end), so a read never
    reaches into the next request on a kept-alive connection."""

    def __init__(self, stream: Any, remaining: int | None):
        super().__init__()
        self.stream = stream
        self.remaining = remaining

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        want = len(buffer) if self.remaining is None else min(len(buffer), self.remaining)
        if want <= 0:
            return 0
        try:
            piece = self.stream.read(min(want, PIECE))
        except (OSError, ValueError):
            raise ClientDisconnected() from None
        size = len(piece)
        buffer[:size] = piece
        if self.remaining is not None:
            self.remaining -= size
        return size


def read_body(req: Any, limit: int) -> bytes:
    """The body of ``req`` (a werkzeug request), read on the first call; ``limit`` bytes at most (0: no limit).
    A body cut short by the client raises werkzeug's ClientDisconnected (a 400), as werkzeug's own read does."""
    cached = getattr(req, "_cached_data", None)  # werkzeug's cache behind get_data(cache=True)
    if cached is not None:
        return cached
    environ = req.environ
    length = req.content_length
    if length is None and not (environ.get("wsgi.input_terminated")
                               or "chunked" in environ.get("HTTP_TRANSFER_ENCODING", "").lower()):
        body = b""  # no length and no framing: werkzeug reads nothing either
    elif length is not None:
        if limit and length > limit:
            raise PayloadTooLarge(f"the request body is {length} bytes; this proxy accepts at most {limit} bytes "
                                  "(MAX_REQUEST_BYTES)", code="request_too_large")
        body = _read(environ["wsgi.input"], length, length) if length else b""
        if len(body) < length:
            raise ClientDisconnected()
    else:  # chunked: as much as the client sends, refused one byte past the limit
        body = _read(environ["wsgi.input"], None, limit + 1 if limit else -1)
        if limit and len(body) > limit:
            raise PayloadTooLarge(f"the request body is larger than the {limit} bytes this proxy accepts "
                                  "(MAX_REQUEST_BYTES)", code="request_too_large")
    req._cached_data = body
    return body


def _read(stream: Any, remaining: int | None, size: int) -> bytes:
    """Up to ``size`` bytes (-1: all) into one bytes object. For a bounded read the BufferedReader allocates
    ``size`` bytes at once and shrinks them to what came; untouched pages of that allocation cost no memory."""
    with io.BufferedReader(_Input(stream, remaining), PIECE) as reader:
        return reader.read(size)


def release_body(req: Any) -> None:
    """Let the raw body go once what the request needs of it is parsed, copied for the log and re-encoded for
    the backend: a long answer then does not keep it. (werkzeug would read the spent input again if asked.)"""
    if getattr(req, "_cached_data", None) is not None:
        req._cached_data = b""
