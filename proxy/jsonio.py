"""JSON encode/decode through orjson: bytes in, bytes out, one place to change it."""
from __future__ import annotations

from typing import Any

import orjson

JSONDecodeError = orjson.JSONDecodeError  # subclass of ValueError


def loads(data: bytes | str) -> Any:
    return orjson.loads(data)


def dumps(obj: Any) -> bytes:
    return orjson.dumps(obj)


def dumps_line(obj: Any) -> bytes:
    """One NDJSON line.

    Not ``OPT_APPEND_NEWLINE``: orjson's output object keeps its whole 4 KiB working buffer, and a
    stream holds its last line until the next one (the server's loop variable), so every open
    stream would pin 4 KiB. Adding the newline copies the line into an object of its own size."""
    return orjson.dumps(obj) + b"\n"


def dumps_str(obj: Any) -> str:
    """JSON text for embedding in another JSON value (OpenAI tool arguments); keeps key order."""
    return orjson.dumps(obj).decode()
