"""JSON encode/decode through orjson: bytes in, bytes out, one place to change it; and the bound on how
deeply a client's JSON may nest (the proxy writes back what it reads, and orjson's encoder stops short of
its decoder's depth)."""
from __future__ import annotations

from typing import Any

import orjson

JSONDecodeError = orjson.JSONDecodeError  # subclass of ValueError
# Deepest nesting a request body may have: well inside what orjson writes (it refuses values 255 deep, while
# it reads up to 1024), leaving room for the objects a translation wraps around a client's value (an Ollama
# `format` schema becomes `response_format.json_schema.schema`). serde_json's default is the same.
MAX_DEPTH = 128


def loads(data: bytes | str) -> Any:
    return orjson.loads(data)


def too_deep(value: Any, raw: bytes | str) -> bool:
    """Whether ``value`` (parsed from ``raw``) nests arrays and objects more than MAX_DEPTH deep. A body with
    fewer brackets than that cannot be, and is not walked: the walk is for the rare body that might."""
    if isinstance(raw, str):
        brackets = raw.count("[") + raw.count("{")
    else:
        brackets = raw.count(b"[") + raw.count(b"{")
    if brackets <= MAX_DEPTH:
        return False
    level = [value] if isinstance(value, (dict, list)) else []
    depth = 0
    while level:  # a level at a time: no recursion, and it stops at the first level past it
        depth += 1
        if depth > MAX_DEPTH:
            return True
        deeper: list[Any] = []
        for item in level:
            children = item.values() if isinstance(item, dict) else item
            deeper.extend(child for child in children if isinstance(child, (dict, list)))
        level = deeper
    return False


def dumps(obj: Any) -> bytes:
    return orjson.dumps(obj)


def dumps_line(obj: Any) -> bytes:
    """One NDJSON line.

    Not ``OPT_APPEND_NEWLINE``: orjson's output object keeps its whole working buffer, and a
    stream holds its last line until the next one (the server's loop variable), so every open
    stream would pin one. Adding the newline copies the line into an object of its own size."""
    return orjson.dumps(obj) + b"\n"


def dumps_sorted(obj: Any) -> bytes:
    """Canonical JSON: keys sorted at every level (a cache key is the same whatever order a client sent)."""
    return orjson.dumps(obj, option=orjson.OPT_SORT_KEYS)


def dumps_str(obj: Any) -> str:
    """JSON text for embedding in another JSON value (OpenAI tool arguments); keeps key order."""
    return orjson.dumps(obj).decode()
