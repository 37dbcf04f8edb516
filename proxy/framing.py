"""Stream framing: an upstream body, split anywhere, into lines (``Lines``), SSE events (``SSEFraming``)
or NDJSON lines (``NDJSONFraming``). Push objects fed one chunk at a time (what a live stream's ``Relay``
drives, with no generator layer per chunk), and the same as generators. Bytes in, bytes out; no I/O.

A line or an event longer than ``MAX_FRAME`` raises ``FrameTooLarge``: a backend that never ends its line
would otherwise fill memory (and rescanning what waits would cost time growing with its square)."""
from __future__ import annotations

from collections.abc import Iterable, Iterator

from .errors import BackendUnavailable

MAX_FRAME = 16 * 1024 * 1024  # one SSE event or NDJSON line; a streamed chunk of any real server is far smaller


class FrameTooLarge(BackendUnavailable):
    """The backend sent a line or an event longer than ``MAX_FRAME``. The message starts with a verb so that
    ``Upstream.error_for`` can put the backend's name in front of it."""

    def __init__(self, what: str, limit: int):
        super().__init__(f"sent {what} longer than {limit} bytes")


class Lines:
    """Bytes -> complete lines (LF removed, a CR kept), split anywhere; a partial line waits for the next
    chunk, in pieces (each chunk is searched once), up to ``limit`` bytes. The framings below build on it."""

    __slots__ = ("pending", "waiting", "limit")

    def __init__(self, limit: int = MAX_FRAME) -> None:
        self.pending: list[bytes] = []  # the start of a line not ended yet, chunk by chunk
        self.waiting = 0  # their total size
        self.limit = limit

    def lines(self, chunk: bytes) -> list[bytes]:
        if b"\n" not in chunk:
            self.waiting += len(chunk)
            if self.waiting > self.limit:
                self.pending = []
                raise FrameTooLarge("a line", self.limit)
            self.pending.append(chunk)
            return []
        if self.pending:
            self.pending.append(chunk)
            chunk = b"".join(self.pending)
        lines = chunk.split(b"\n")
        last = lines.pop()
        if len(last) > self.limit:
            self.pending = []
            raise FrameTooLarge("a line", self.limit)
        self.pending = [last] if last else []
        self.waiting = len(last)
        return lines

    def rest(self) -> bytes:
        """The body ended: what followed the last LF."""
        pending, self.pending, self.waiting = self.pending, [], 0
        return pending[0] if len(pending) == 1 else b"".join(pending)


# The framings are push objects (fed one chunk, they return what is complete) so that a live stream's
# ``Relay`` can call them instead of iterating a chain of generators: every generator layer a stream is
# suspended in costs each open stream its frame and its share of the greenlet's saved C stack, and every
# chunk one more resumption. The generator forms at the end wrap the same objects.

class SSEFraming(Lines):
    """Bytes -> (event name, data) per SSE event, split anywhere; comments ignored, multi-line data joined
    with LF, LF or CRLF line ends."""

    __slots__ = ("event", "data", "size")

    def __init__(self, limit: int = MAX_FRAME) -> None:
        super().__init__(limit)
        self.event = ""
        self.data: list[bytes] = []
        self.size = 0  # bytes of data in the event so far

    def feed(self, chunk: bytes) -> list[tuple[str, bytes]]:
        lines = self.lines(chunk)
        if not lines:
            return []
        out: list[tuple[str, bytes]] = []
        data = self.data
        for line in lines:
            if line.endswith(b"\r"):
                line = line[:-1]
            if not line:
                if data:
                    out.append((self.event, data[0] if len(data) == 1 else b"\n".join(data)))
                    data = self.data = []
                    self.size = 0
                self.event = ""
            elif line.startswith(b"data:"):
                data.append(line[6:] if line.startswith(b"data: ") else line[5:])
                self.size += len(line)
                if self.size > self.limit:
                    self.data, self.size = [], 0
                    raise FrameTooLarge("an SSE event", self.limit)
            elif line.startswith(b"event:"):
                self.event = line[6:].strip().decode("utf-8", "replace")
            # ':' comments, 'id:' and 'retry:' fields are ignored
        return out

    def end(self) -> list[tuple[str, bytes]]:
        """The body ended: a last event not closed by a blank line."""
        pending = self.rest()
        if pending.endswith(b"\r"):
            pending = pending[:-1]
        if pending.startswith(b"data:"):
            self.data.append(pending[6:] if pending.startswith(b"data: ") else pending[5:])
        data, self.data, self.size = self.data, [], 0
        return [(self.event, b"\n".join(data))] if data else []


class NDJSONFraming(Lines):
    """Bytes -> non-blank NDJSON lines, split anywhere (a CRLF line keeps its CR, which JSON reads as
    whitespace)."""

    __slots__ = ()

    def feed(self, chunk: bytes) -> list[bytes]:
        return [line for line in self.lines(chunk) if line.strip()]

    def end(self) -> list[bytes]:
        pending = self.rest()
        return [pending] if pending.strip() else []


def iter_sse_events(chunks: Iterable[bytes]) -> Iterator[tuple[str, bytes]]:
    framing = SSEFraming()
    for chunk in chunks:
        yield from framing.feed(chunk)
    yield from framing.end()


def iter_ndjson_lines(chunks: Iterable[bytes]) -> Iterator[bytes]:
    framing = NDJSONFraming()
    for chunk in chunks:
        yield from framing.feed(chunk)
    yield from framing.end()
