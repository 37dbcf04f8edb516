"""The field checks request validation is built from, in both dialects: each takes (value, field name) and
returns the value to keep (an integral float given for an integer comes back as an int) or raises a
BadRequest naming the field. Pure: no Flask, no I/O."""
from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import Any, NoReturn

from ..errors import BadRequest

INT64 = 2 ** 63
MAX_DIMENSIONS = 65536  # embedding sizes: the largest models have a few thousand


def fail(name: str, what: str) -> NoReturn:
    raise BadRequest(f"'{name}' must be {what}", param=name.split(".", 1)[0].split("[", 1)[0])


def _of_type(kind: type, what: str) -> Callable[[Any, str], Any]:
    def check(value: Any, name: str) -> Any:
        if not isinstance(value, kind):
            fail(name, what)
        return value
    return check


boolean = _of_type(bool, "a boolean")
string = _of_type(str, "a string")
an_object = _of_type(dict, "an object")
array = _of_type(list, "an array")


def number(value: Any, name: str) -> int | float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        fail(name, "a number")
    return value


def integer(low: int = -INT64, high: int = INT64 - 1, *, truncate: bool = False) -> Callable[[Any, str], int]:
    """A checker for an integer field within [low, high]; an integral float (16.0) counts and becomes an int
    (with ``truncate``, any finite float does, cut toward zero: Ollama reads its integer options so)."""
    def check(value: Any, name: str) -> int:
        if isinstance(value, float) and (value.is_integer() or truncate and math.isfinite(value)):
            value = int(value)
        if isinstance(value, bool) or not isinstance(value, int):
            fail(name, "an integer")
        if not low <= value <= high:
            fail(name, f"an integer from {low} to {high}")
        return value
    return check


def string_or_strings(value: Any, name: str) -> str | list:
    if not isinstance(value, str) and not (isinstance(value, list) and all(isinstance(x, str) for x in value)):
        fail(name, "a string or an array of strings")
    return value


def one_of(*choices: str) -> Callable[[Any, str], str]:
    def check(value: Any, name: str) -> str:
        if value not in choices:
            fail(name, " or ".join(repr(c) for c in choices))
        return value
    return check


def fields(table: dict[str, Callable[[Any, str], Any]]) -> Callable[[Any, str], dict]:
    """A checker for an object whose listed fields (when present and not null) must pass their checks."""
    def check(value: Any, name: str) -> dict:
        check_fields(an_object(value, name), table, f"{name}.")
        return value
    return check


def check_fields(body: dict, table: Mapping[str, Callable[[Any, str], object]], prefix: str = "") -> None:
    for key, check in table.items():
        value = body.get(key)
        if value is not None:
            checked = check(value, prefix + key)
            if checked is not value:
                body[key] = checked


def items(check: Callable[[Any, str], Any]) -> Callable[[Any, str], list]:
    """A checker for an array whose every element (null ones too) must pass ``check``."""
    def each(value: Any, name: str) -> list:
        for i, item in enumerate(array(value, name)):
            checked = check(item, f"{name}[{i}]")
            if checked is not item:
                value[i] = checked
        return value
    return each
