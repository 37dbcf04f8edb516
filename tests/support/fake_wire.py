"""What a fake upstream puts on the wire: the `Reply` script object, readers for the recorded
fixtures in tests/data/wire, and the generic JSON / text / SSE / NDJSON reply builders."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.support import TESTS_DIR

DATA_DIR = TESTS_DIR / "data"
WIRE_DIR = DATA_DIR / "wire"

SSE = "text/event-stream"
NDJSON = "application/x-ndjson"
JSON = "application/json"

REPLY_KW = ("delay", "gate", "gate_at", "close_after", "hang")


@dataclass
class Reply:
    """One scripted upstream response.

    chunks       body pieces, each written and flushed on its own (one HTTP chunk each when
                 `chunked`); an empty list means an empty body.
    delay        seconds to sleep before every chunk after the first.
    gate         a threading.Event the server waits on before sending chunk number `gate_at`
                 (0-based); the wait ends when the gate is set or the server stops.
    close_after  after this many chunks, close the socket abruptly (no terminating chunk).
    hang         seconds to wait before sending anything (status line included);
                 math.inf waits until the server stops. Provokes client timeouts.
    chunked      use chunked transfer encoding; None = chunked when there is more than one
                 chunk or any stream control (gate/close_after/delay) is set.
    """

    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)
    chunks: list[bytes] = field(default_factory=list)
    delay: float = 0.0
    gate: threading.Event | None = None
    gate_at: int = 1
    close_after: int | None = None
    hang: float | None = None
    chunked: bool | None = None

    @property
    def body(self) -> bytes:
        return b"".join(self.chunks)

    def use_chunked(self) -> bool:
        if self.chunked is not None:
            return self.chunked
        return (
            len(self.chunks) > 1
            or self.gate is not None
            or self.close_after is not None
            or self.delay > 0
        )



def split_reply_kw(kw: dict) -> dict:
    """Pop the stream-control keywords (delay, gate, ...) meant for the Reply out of `kw`."""
    return {k: kw.pop(k) for k in REPLY_KW if k in kw}


# --------------------------------------------------------------------------------------------
# Fixture files
# --------------------------------------------------------------------------------------------


def wire_path(name: str) -> Path:
    path = WIRE_DIR / name
    assert path.exists(), f"no wire fixture {name}"
    return path


def load_json(name: str) -> Any:
    return json.loads(wire_path(name).read_text())


def sse_events(name_or_bytes: str | bytes) -> list[bytes]:
    """Split an SSE body into events, each with its trailing blank line (`event:` kept with
    its `data:`)."""
    raw = wire_path(name_or_bytes).read_bytes() if isinstance(name_or_bytes, str) else name_or_bytes
    raw = raw.replace(b"\r\n", b"\n")
    return [part + b"\n\n" for part in raw.split(b"\n\n") if part.strip()]


def sse_payloads(name_or_bytes: str | bytes) -> list[Any]:
    """The parsed `data:` objects of an SSE body (the string "[DONE]" kept as is)."""
    out = []
    for event in sse_events(name_or_bytes):
        data = [ln[5:].lstrip() for ln in event.split(b"\n") if ln.startswith(b"data:")]
        if not data:
            continue
        joined = b"\n".join(data)
        out.append("[DONE]" if joined == b"[DONE]" else json.loads(joined))
    return out


def ndjson_lines(name_or_bytes: str | bytes) -> list[bytes]:
    raw = wire_path(name_or_bytes).read_bytes() if isinstance(name_or_bytes, str) else name_or_bytes
    return [ln + b"\n" for ln in raw.split(b"\n") if ln.strip()]


def ndjson_objects(name_or_bytes: str | bytes) -> list[Any]:
    return [json.loads(ln) for ln in ndjson_lines(name_or_bytes)]



# --------------------------------------------------------------------------------------------
# Reply builders
# --------------------------------------------------------------------------------------------


def json_reply(obj: Any, status: int = 200, **kw: Any) -> Reply:
    headers = {"Content-Type": JSON, **kw.pop("headers", {})}
    return Reply(status=status, headers=headers, chunks=[json.dumps(obj).encode()], **kw)


def text_reply(text: str | bytes, status: int = 200, content_type: str = "text/plain", **kw) -> Reply:
    body = text.encode() if isinstance(text, str) else text
    return Reply(status=status, headers={"Content-Type": content_type}, chunks=[body], **kw)


def sse_reply(events: str | bytes | Iterable[Any], **kw: Any) -> Reply:
    """An SSE stream: a fixture name, raw SSE bytes, or objects (dicts become `data: json`,
    bytes are sent verbatim, "[DONE]" becomes the terminator)."""
    if isinstance(events, (str, bytes)) and not (isinstance(events, str) and events == "[DONE]"):
        chunks = sse_events(events)
    else:
        chunks = [encode_sse(e) for e in events]
    headers = {"Content-Type": SSE, "Cache-Control": "no-cache", **kw.pop("headers", {})}
    return Reply(status=kw.pop("status", 200), headers=headers, chunks=chunks, chunked=True, **kw)


def ndjson_reply(lines: str | bytes | Iterable[Any], **kw: Any) -> Reply:
    """An NDJSON stream: a fixture name, raw bytes, or objects (one line each)."""
    if isinstance(lines, (str, bytes)):
        chunks = ndjson_lines(lines)
    else:
        chunks = [line if isinstance(line, bytes) else json.dumps(line).encode() + b"\n" for line in lines]
    headers = {"Content-Type": NDJSON, **kw.pop("headers", {})}
    return Reply(status=kw.pop("status", 200), headers=headers, chunks=chunks, chunked=True, **kw)


def encode_sse(obj: Any) -> bytes:
    if isinstance(obj, bytes):
        return obj
    if obj == "[DONE]":
        return b"data: [DONE]\n\n"
    return b"data: " + json.dumps(obj).encode() + b"\n\n"
