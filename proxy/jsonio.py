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
    """One NDJSON line."""
    return orjson.dumps(obj, option=orjson.OPT_APPEND_NEWLINE)


def dumps_str(obj: Any) -> str:
    """JSON text for embedding in another JSON value (OpenAI tool arguments); keeps key order."""
    return orjson.dumps(obj).decode()
