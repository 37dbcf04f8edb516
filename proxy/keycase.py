"""Request bodies that name a field twice in different letter cases (`model` and `Model`) are refused.

The proxy reads a body with exact key matching, but Ollama's Go decoder matches field names without regard
to case (with Unicode folding: `ſource` is `source`) and lets the last match win, so such a body would
send a backend another model than the one the gate allowed. No client means anything by it; refusing it is
the one reading both sides share. (Exact duplicates collapse to their last value when parsed, and what goes
upstream is encoded from the parsed body, so the backend sees the value that was checked.)
"""
from __future__ import annotations

from typing import Any

from .errors import BadRequest

# Values that are free-form maps to every backend (JSON schemas, tool arguments, metadata): Go decodes them
# into maps, which keep keys exactly as sent, so `ID` beside `id` there is a legitimate pair of names.
FREE_FORM = frozenset({"parameters", "arguments", "schema", "format", "input_schema", "metadata", "properties"})


def first_clash(value: Any) -> tuple[str, str] | None:
    """The first two keys of one object in ``value`` (parsed JSON, walked without recursion, free-form maps
    skipped) that differ only in letter case, or None. An object whose keys are all lower-case ASCII cannot
    hold such a pair and is not folded key by key: that is nearly every object."""
    stack = [value]
    pop, push = stack.pop, stack.append
    while stack:
        item = pop()
        if type(item) is dict:
            if len(item) > 1:
                joined = "".join(item)
                if not (joined.isascii() and joined.islower()):
                    clash = _clash(item)
                    if clash is not None:
                        return clash
            for key, child in item.items():
                if (type(child) is dict or type(child) is list) and key not in FREE_FORM:
                    push(child)
        elif type(item) is list:
            for child in item:
                if type(child) is dict or type(child) is list:
                    push(child)
    return None


def _clash(item: dict) -> tuple[str, str] | None:
    seen: dict[str, str] = {}
    for key in item:
        other = seen.setdefault(key.casefold(), key)
        if other != key:
            return other, key
    return None


def check(value: Any) -> None:
    """BadRequest when ``value`` holds an object with two keys that differ only in letter case."""
    clash = first_clash(value)
    if clash is not None:
        first, second = clash
        raise BadRequest(f"the request body has both {first!r} and {second!r}: keys that differ only in letter "
                         "case are ambiguous (some backends read one, some the other); send each field once",
                         code="duplicate_key", param=first)
