"""Client-side wire checks: strict NDJSON/SSE parsing of what the proxy sends, and the field
rules strict Ollama clients (Zed, Koog, ollama-python) apply. Used where the official
libraries would hide a framing or typing mistake."""

from __future__ import annotations

import json
import re
from datetime import datetime
from typing import Any

import requests

RFC3339_UTC = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d{1,9})?Z$")
KOOG_CAPABILITIES = {"audio", "completion", "embedding", "insert", "vision", "thinking", "tools"}


def post(url: str, body: Any = None, *, raw: bytes | None = None, stream: bool = False,
         timeout: float = 15, **kw: Any) -> requests.Response:
    if raw is not None:
        headers = {"Content-Type": "application/json", **kw.pop("headers", {})}
        return requests.post(url, data=raw, headers=headers, stream=stream, timeout=timeout, **kw)
    return requests.post(url, json=body, stream=stream, timeout=timeout, **kw)


def ndjson_strict(raw: bytes) -> list[dict]:
    """Parse an NDJSON body the way ollama-python and Zed do: every line one JSON object,
    newline-terminated, no blank lines, no SSE prefixes."""
    assert raw, "empty NDJSON body"
    assert raw.endswith(b"\n"), f"NDJSON body does not end with a newline: {raw[-80:]!r}"
    lines = raw[:-1].split(b"\n")
    out = []
    for i, line in enumerate(lines):
        assert line.strip(), f"blank line {i} in NDJSON body: {raw[:300]!r}"
        assert not line.startswith(b"data:"), f"SSE framing in NDJSON: {line[:80]!r}"
        obj = json.loads(line)
        assert isinstance(obj, dict), f"NDJSON line {i} is not an object: {line[:80]!r}"
        out.append(obj)
    return out


def sse_strict(raw: bytes) -> list[Any]:
    """Parse an SSE body: events separated by blank lines, `data: <json>` lines (comments
    allowed), ending with `data: [DONE]`. Returns the payloads, "[DONE]" included."""
    text = raw.decode("utf-8")
    assert text.endswith("\n\n"), f"SSE body does not end with a blank line: {text[-120:]!r}"
    out: list[Any] = []
    for event in text.replace("\r\n", "\n").split("\n\n"):
        if not event.strip():
            continue
        data = []
        for line in event.split("\n"):
            if line.startswith(":") or line.startswith("event:") or line.startswith("id:"):
                continue
            assert line.startswith("data:"), f"unexpected SSE line {line[:120]!r}"
            data.append(line[5:].lstrip(" "))
        if not data:
            continue
        joined = "\n".join(data)
        out.append("[DONE]" if joined == "[DONE]" else json.loads(joined))
    return out


def sse_ends_with_done(payloads: list[Any]) -> None:
    assert payloads and payloads[-1] == "[DONE]", f"stream does not end with [DONE]: {payloads[-2:]}"
    assert payloads.count("[DONE]") == 1, "more than one [DONE]"


def assert_ollama_chat_line(obj: dict, *, translated: bool = True) -> None:
    """Fields every /api/chat line (final one included) must carry (api-surface.md trap 2)."""
    for key in ("model", "created_at", "message", "done"):
        assert key in obj, f"/api/chat line lacks {key!r}: {obj}"
    assert isinstance(obj["done"], bool)
    msg = obj["message"]
    assert msg.get("role") == "assistant", obj
    assert isinstance(msg.get("content"), str), f"message.content must be a string: {obj}"
    for call in msg.get("tool_calls") or []:
        assert isinstance(call["function"]["arguments"], dict), f"arguments not an object: {obj}"
    if translated:
        assert_rfc3339_utc(obj["created_at"])


def assert_ollama_generate_line(obj: dict, *, translated: bool = True) -> None:
    for key in ("model", "created_at", "response", "done"):
        assert key in obj, f"/api/generate line lacks {key!r}: {obj}"
    assert isinstance(obj["response"], str) and isinstance(obj["done"], bool)
    if translated:
        assert_rfc3339_utc(obj["created_at"])


def assert_rfc3339_utc(value: Any) -> None:
    assert isinstance(value, str) and RFC3339_UTC.match(value), \
        f"not an RFC 3339 UTC time with Z: {value!r}"
    datetime.fromisoformat(value.replace("Z", "+00:00"))


def assert_tags_entry(entry: dict) -> None:
    """The strict /api/tags entry of Zed/Koog (api-surface.md trap 8)."""
    for key, typ in (("name", str), ("model", str), ("modified_at", str), ("size", int),
                     ("digest", str), ("details", dict)):
        assert isinstance(entry.get(key), typ) and not isinstance(entry.get(key), bool), \
            f"/api/tags entry field {key!r} must be {typ.__name__}: {entry}"
    details = entry["details"]
    for key in ("parent_model", "format", "family", "parameter_size", "quantization_level"):
        assert isinstance(details.get(key), str), f"details.{key} must be a string: {entry}"
    assert isinstance(details.get("families"), list), f"details.families must be a list: {entry}"
    datetime.fromisoformat(entry["modified_at"].replace("Z", "+00:00"))


def bare(name: str) -> str:
    """`foo:latest` -> `foo` (Ollama treats them as the same model)."""
    return name[: -len(":latest")] if name.endswith(":latest") else name


def user_texts(messages: list[dict]) -> list[str]:
    """The text of every user message of an upstream request, either dialect."""
    out = []
    for m in messages:
        if m.get("role") != "user":
            continue
        content = m.get("content")
        if isinstance(content, list):
            out.append("\n".join(p.get("text", "") for p in content if p.get("type") == "text"))
        else:
            out.append(content or "")
    return out
