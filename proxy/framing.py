"""Stream framing: an upstream body, split anywhere, into lines (``Lines``), SSE events (``SSEFraming``)
or NDJSON lines (``NDJSONFraming``). Push objects fed one chunk at a time (what a live stream's ``Relay``
drives, with no generator layer per chunk), and the same as generators. Bytes in, bytes out; no I/O."""
from __future__ import annotations

from typing import Iterable, Iterator

class Lines:
    """Bytes -> complete lines (LF removed, a CR kept), split anywhere; a partial line waits for the next
    chunk. The framings below build on it."""

    __slots__ = ("pending",)

    def __init__(self) -> None:
        self.pending = b""

    def lines(self, chunk: bytes) -> list[bytes]:
        if self.pending:
            chunk = self.pending + chunk
        if b"\n" not in chunk:
            self.pending = chunk
            return []
        lines = chunk.split(b"\n")
        self.pending = lines.pop()
        return lines

    def rest(self) -> bytes:
        """The body ended: what followed the last LF."""
        pending, self.pending = self.pending, b""
        return pending


# The framings are push objects (fed one chunk, they return what is complete) so that a live stream's
# ``Relay`` can call them instead of iterating a chain of generators: every generator layer a stream is
# suspended in costs each open stream its frame and its share of the greenlet's saved C stack, and every
# chunk one more resumption. The generator forms at the end wrap the same objects.

class SSEFraming(Lines):
    """Bytes -> (event name, data) per SSE event, split anywhere; comments ignored, multi-line data joined
    with LF, LF or CRLF line ends."""

    __slots__ = ("event", "data")

    def __init__(self) -> None:
        super().__init__()
        self.event = ""
        self.data: list[bytes] = []

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
                self.event = ""
            elif line.startswith(b"data:"):
                data.append(line[6:] if line.startswith(b"data: ") else line[5:])
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
        data, self.data = self.data, []
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
