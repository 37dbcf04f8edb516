"""Passthrough streams (same dialect on both sides): upstream bytes go to the client as they arrive,
with only the byte-level edits the proxy owes the client — the alias put back in `"model"`, and the
usage-only chunk removed when the client did not ask for usage. Framing happens only when an edit is due.
"""
from __future__ import annotations

from collections.abc import Iterable, Iterator

from . import jsonio
from .framing import MAX_FRAME, FrameTooLarge


def rename_model(data: bytes, renames: tuple[tuple[bytes, bytes], ...]) -> bytes:
    """``data`` with the client's model name put back (``renames`` from ``model_renames``)."""
    for old, new in renames:
        if old in data:
            data = data.replace(old, new)
    return data


def model_renames(backend_model: str, client_model: str) -> tuple[tuple[bytes, bytes], ...]:
    """Byte patterns that put the client's model name back into upstream JSON."""
    if backend_model == client_model:
        return ()
    old, new = jsonio.dumps(backend_model), jsonio.dumps(client_model)
    return ((b'"model":' + old, b'"model":' + new), (b'"model": ' + old, b'"model": ' + new))


_EMPTY_CHOICES = (b'"choices":[]', b'"choices": []')


def passthrough_sse(chunks: Iterable[bytes], *, strip_usage_chunk: bool,
                    renames: tuple[tuple[bytes, bytes], ...] = ()) -> Iterator[bytes]:
    """Forward SSE as it arrives. Event framing only when an edit is needed; with none, the chunks
    themselves are returned (no generator layer for them to pass through)."""
    if not strip_usage_chunk and not renames:
        return iter(chunks)
    return _edited_sse(chunks, strip_usage_chunk, renames)


def _edited_sse(chunks: Iterable[bytes], strip_usage_chunk: bool,
                renames: tuple[tuple[bytes, bytes], ...]) -> Iterator[bytes]:
    pending = bytearray()  # an event not complete yet: grown in place and searched only where it grew
    for chunk in chunks:
        data: bytes | bytearray
        if pending:
            start = max(0, len(pending) - 3)  # a separator may straddle the two
            pending += chunk
            data = pending
        else:
            start, data = 0, chunk
        cut = max(data.rfind(b"\n\n", start), data.rfind(b"\r\n\r\n", start))
        if cut < 0:
            if data is chunk:
                pending += chunk
            if len(pending) > MAX_FRAME:
                raise FrameTooLarge("an SSE event", MAX_FRAME)
            continue
        end = cut + (4 if data[cut:cut + 4] == b"\r\n\r\n" else 2)
        ready = bytes(data[:end])  # a slice of bytes is bytes already: bytes() returns it as it is
        pending = bytearray(data[end:])
        if strip_usage_chunk and (_EMPTY_CHOICES[0] in ready or _EMPTY_CHOICES[1] in ready):
            ready = b"".join(ev + b"\n\n" for ev in ready.replace(b"\r\n", b"\n").split(b"\n\n")
                             if ev and not (_EMPTY_CHOICES[0] in ev or _EMPTY_CHOICES[1] in ev))
        if renames:
            ready = rename_model(ready, renames)
        if ready:
            yield ready
    if pending:
        yield rename_model(bytes(pending), renames) if renames else bytes(pending)


def passthrough_lines(chunks: Iterable[bytes], renames: tuple[tuple[bytes, bytes], ...] = ()) -> Iterator[bytes]:
    """Forward NDJSON as it arrives; with renames, whole lines only (without, the chunks themselves)."""
    if not renames:
        return iter(chunks)
    return _renamed_lines(chunks, renames)


def _renamed_lines(chunks: Iterable[bytes], renames: tuple[tuple[bytes, bytes], ...]) -> Iterator[bytes]:
    pending = bytearray()  # a line not complete yet, grown in place
    for chunk in chunks:
        cut = chunk.rfind(b"\n")
        if cut < 0:
            pending += chunk
            if len(pending) > MAX_FRAME:
                raise FrameTooLarge("a line", MAX_FRAME)
            continue
        ready = bytes(pending + chunk[:cut + 1]) if pending else chunk[:cut + 1]
        pending = bytearray(chunk[cut + 1:])
        yield rename_model(ready, renames)
    if pending:
        yield rename_model(bytes(pending), renames)
