"""What clients require of the proxy's answers (read from their sources), as pure checks of decoded bodies:
each function raises ``Failed`` naming the first field that would break a client, and how it breaks it, or
returns a short account of what it saw. No I/O here."""
from __future__ import annotations

import json
import re
from datetime import datetime
from typing import Any

from .report import Failed

NOT_THIS_PROXY = "point --url at this proxy, up to date (it answers this shape); another server may not"
TAG_FIELDS = (("name", str), ("model", str), ("modified_at", str), ("size", int), ("digest", str))
DETAIL_FIELDS = ("parent_model", "format", "family", "parameter_size", "quantization_level")
KOOG_CAPABILITIES = frozenset({"audio", "completion", "embedding", "insert", "vision", "thinking", "tools"})
MIN_VERSION = (0, 6, 4)  # VS Code Copilot refuses an older Ollama
CHAT_LINE = (("model", str), ("created_at", str), ("message", dict), ("done", bool))
KOOG_CHUNK = ("id", "object", "created", "model", "choices")


def _kind(value: Any) -> str:
    return "null" if value is None else {bool: "a boolean", int: "an integer", float: "a number", str: "a string",
                                         list: "an array", dict: "an object"}.get(type(value), type(value).__name__)


def _is(value: Any, kind: type) -> bool:
    return isinstance(value, kind) and not (kind is int and isinstance(value, bool))


def rfc3339(value: Any) -> bool:
    """Parses as clients parse times (Python 3.11's fromisoformat, which takes ``Z``; Java's Instant needs a zone)."""
    if not isinstance(value, str) or not re.search(r"(Z|[+-]\d\d:\d\d)$", value):
        return False
    try:
        datetime.fromisoformat(re.sub(r"(\.\d{6})\d+", r"\1", value))
        return True
    except ValueError:
        return False


def tags(body: Any, who: str) -> list[dict]:
    """/api/tags as strict clients read it: every entry with every field, of the right type."""
    models = body.get("models") if isinstance(body, dict) else None
    if not isinstance(models, list):
        raise Failed(f"/api/tags has no 'models' array (got {_kind(models)}); {who} lists no model", NOT_THIS_PROXY)
    if not models:
        raise Failed(f"/api/tags lists no model, so {who} offers none", "check the backends: `llm-proxy doctor` "
                     "without --url, on the proxy's machine, reaches each and lists its models")
    for i, entry in enumerate(models):
        if not isinstance(entry, dict):
            raise Failed(f"/api/tags models[{i}] is {_kind(entry)}, not an object", NOT_THIS_PROXY)
        for key, kind in TAG_FIELDS:
            if not _is(entry.get(key), kind):
                raise Failed(f"/api/tags models[{i}].{key} is {_kind(entry.get(key))}, not {_kind(kind())}; "
                             f"{who} rejects the list", NOT_THIS_PROXY)
        if not rfc3339(entry["modified_at"]):
            raise Failed(f"/api/tags models[{i}].modified_at {entry['modified_at']!r} is not an RFC 3339 time with "
                         "a zone", NOT_THIS_PROXY)
        details = entry.get("details")
        if not isinstance(details, dict) or any(not isinstance(details.get(k), str) for k in DETAIL_FIELDS):
            raise Failed(f"/api/tags models[{i}].details lacks one of {', '.join(DETAIL_FIELDS)} as strings; "
                         f"{who} rejects the list", NOT_THIS_PROXY)
    return models


def version(body: Any, who: str) -> str:
    """/api/version as Copilot (parseInt of each part, at least 0.6.4) and Open WebUI (int() after stripping a
    leading v and a -suffix) read it."""
    raw = body.get("version") if isinstance(body, dict) else None
    if not isinstance(raw, str):
        raise Failed(f"/api/version has no 'version' string (got {_kind(raw)}); {who} cannot verify the server",
                     NOT_THIS_PROXY)
    parts = raw.lstrip("v").split("-", 1)[0].split(".")
    if not all(p.isdigit() for p in parts):
        raise Failed(f"/api/version {raw!r} is not a dotted number; {who} cannot read it", NOT_THIS_PROXY)
    if tuple(int(p) for p in parts) < MIN_VERSION:
        raise Failed(f"/api/version {raw!r} is below 0.6.4; VS Code Copilot refuses the server", NOT_THIS_PROXY)
    return raw


def show(body: Any, model: str, who: str, *, closed: bool = False, tools: bool = False) -> str:
    """/api/show with a ``capabilities`` array (from Koog's closed set when ``closed``; with ``tools`` when asked)
    and a ``model_info`` object naming the architecture and its context length."""
    if not isinstance(body, dict):
        raise Failed(f"/api/show for {model} is {_kind(body)}, not an object", NOT_THIS_PROXY)
    caps = body.get("capabilities")
    if not isinstance(caps, list) or not all(isinstance(c, str) for c in caps):
        raise Failed(f"/api/show for {model} has no 'capabilities' array (got {_kind(caps)}); {who} fails on it "
                     "(Copilot: \"Cannot read properties of undefined (reading 'includes')\")", NOT_THIS_PROXY)
    if closed and (odd := sorted(set(caps) - KOOG_CAPABILITIES)):
        raise Failed(f"/api/show for {model} names capabilities {odd} outside {who}'s known set", NOT_THIS_PROXY)
    if tools and "tools" not in caps:
        raise Failed(f"{model} does not offer tools (capabilities {caps}); {who} hides it from agent mode",
                     "serve a model whose chat template takes tools (llama-server: start it with --jinja, and "
                     "its /props must say chat_template_caps.supports_tools true)")
    info = body.get("model_info")
    if not isinstance(info, dict):
        raise Failed(f"/api/show for {model} has no 'model_info' object (got {_kind(info)}); {who} fails on it",
                     NOT_THIS_PROXY)
    arch = info.get("general.architecture")
    length = info.get(f"{arch}.context_length") if isinstance(arch, str) else None
    if not _is(length, int):
        raise Failed(f"/api/show for {model}: model_info lacks general.architecture and <arch>.context_length; "
                     f"{who} falls back to a 4096-token context", NOT_THIS_PROXY)
    return f"{model}: {', '.join(caps)}; context {length}"


def ndjson_chat(lines: list[bytes], who: str, *, koog: bool = False) -> tuple[str, list[dict]]:
    """A streamed /api/chat: one JSON object a line, no blank line, each with model, created_at, message (role,
    content) and done, tool-call arguments as objects, and a last line with done true. (text, tool calls)."""
    text: list[str] = []
    calls: list[dict] = []
    done = False
    for n, raw in enumerate(lines, 1):
        if done:
            raise Failed(f"/api/chat sent line {n} after the line with done true", NOT_THIS_PROXY)
        try:
            line = json.loads(raw)
        except ValueError:
            raise Failed(f"/api/chat line {n} is not JSON ({raw[:80]!r}); {who} stops reading there",
                         NOT_THIS_PROXY) from None
        if isinstance(line, dict) and "error" in line:
            raise Failed(f"/api/chat streamed an error: {line['error']}", "run `llm-proxy doctor` without --url on "
                         "the proxy's machine to check its backends")
        for key, kind in CHAT_LINE:
            if not isinstance(line, dict) or not _is(line.get(key), kind):
                got = _kind(line.get(key)) if isinstance(line, dict) else _kind(line)
                raise Failed(f"/api/chat line {n}: '{key}' is {got}, not {_kind(kind())}; {who} "
                             f"{'rejects the line' if koog else 'fails on it'}", NOT_THIS_PROXY)
        message = line["message"]
        if not isinstance(message.get("role"), str) or not isinstance(message.get("content"), str):
            raise Failed(f"/api/chat line {n}: message lacks a role and a content string", NOT_THIS_PROXY)
        for call in message.get("tool_calls") or ():
            function = call.get("function") if isinstance(call, dict) else None
            if not isinstance(function, dict) or not isinstance(arguments := function.get("arguments"), dict):
                arguments = function.get("arguments") if isinstance(function, dict) else None
                raise Failed(f"/api/chat line {n}: a tool call's arguments are {_kind(arguments)}, not an object; "
                             f"{who} drops or crashes on the call (Home Assistant calls .items() on them)",
                             NOT_THIS_PROXY)
            calls.append(function)
        text.append(message["content"])
        done = line["done"]
    if not done:
        raise Failed(f"/api/chat's stream ended without a line with done true; {who} waits or reports an "
                     "unfinished answer", NOT_THIS_PROXY)
    return "".join(text), calls


def sse_chat(lines: list[bytes], who: str, *, koog: bool = False) -> tuple[str, list[dict]]:
    """A streamed /v1/chat/completions: `data:` events of chunks (every one with id, object, created, model and
    choices for Koog), tool-call arguments as strings, ended by `data: [DONE]`. (text, tool-call fragments)."""
    text: list[str] = []
    calls: list[dict] = []
    ended = False
    for n, raw in enumerate(lines, 1):
        if not raw.startswith(b"data:"):
            continue  # blank separators, comments, event names
        data = raw[5:].strip()
        if data == b"[DONE]":
            ended = True
            break
        try:
            chunk = json.loads(data)
        except ValueError:
            raise Failed(f"/v1/chat/completions event {n} is not JSON ({data[:80]!r})", NOT_THIS_PROXY) from None
        if isinstance(chunk, dict) and chunk.get("error"):
            raise Failed(f"/v1/chat/completions streamed an error: {chunk['error']}", "run `llm-proxy doctor` "
                         "without --url on the proxy's machine to check its backends")
        missing = [k for k in KOOG_CHUNK if not isinstance(chunk, dict) or k not in chunk] if koog else \
            [k for k in ("choices",) if not isinstance(chunk, dict) or not isinstance(chunk.get(k), list)]
        if missing:
            raise Failed(f"/v1/chat/completions chunk {n} lacks {', '.join(missing)}; {who} rejects it",
                         NOT_THIS_PROXY)
        for choice in chunk["choices"]:
            delta = choice.get("delta") if isinstance(choice, dict) else None
            if not isinstance(delta, dict):
                raise Failed(f"/v1/chat/completions chunk {n}: a choice has no 'delta' object", NOT_THIS_PROXY)
            text.append(delta.get("content") or "")
            for call in delta.get("tool_calls") or ():
                arguments = (call.get("function") or {}).get("arguments") if isinstance(call, dict) else None
                if arguments is not None and not isinstance(arguments, str):
                    raise Failed(f"/v1/chat/completions chunk {n}: tool-call arguments are {_kind(arguments)}, "
                                 "not a string", NOT_THIS_PROXY)
                calls.append(call)
    if not ended:
        raise Failed(f"/v1/chat/completions' stream ended without 'data: [DONE]'; {who} waits for it or reports "
                     "\"Connection closed before completion\"", NOT_THIS_PROXY)
    return "".join(text), calls
