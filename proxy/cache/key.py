"""The cache key: a generation or embedding request as the backend would see it, one form for both dialects.

Pure: dict in, ``Ask`` out. ``Ask.fields`` holds what decides the answer — messages (or prompt, or inputs),
tools, format, thinking and every sampling field, under one name per meaning whichever dialect asked
(Ollama's ``options.num_predict`` and OpenAI's ``max_tokens`` are both ``max_tokens``) — and nothing that
does not: ``stream``, ``stream_options``, ``keep_alive``, ``user``, metadata. ``digest`` adds the backend's
model name (``foo`` = ``foo:latest``) and the backend(s) that may answer, and hashes the JSON with sorted keys.
A field this module does not know is kept as it came: it may change the answer.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any

from .. import jsonio
from ..dialects.ollama import canonical

VERSION = "v1"  # of the key's layout: a new layout never meets entries of the old one
# Fields that never change what the backend answers (framing, identity, loading).
NOT_IN_KEY = frozenset({"model", "stream", "stream_options", "user", "metadata", "store", "keep_alive",
                        "service_tier", "safety_identifier", "prompt_cache_key", "encoding_format"})
# Fields an answer cannot be replayed for: several choices, token log-probabilities, an echoed prompt.
UNREPLAYABLE = ("logprobs", "top_logprobs", "best_of", "echo")
# One name per meaning: Ollama options and OpenAI fields that are the same sampler.
RENAMES = {"num_predict": "max_tokens", "max_completion_tokens": "max_tokens", "repetition_penalty": "repeat_penalty"}
# OpenAI reasoning_effort -> Ollama think, where both mean the same; other efforts stay themselves.
EFFORT_TO_THINK = {"none": False, "low": "low", "medium": "medium", "high": "high"}


@dataclass(frozen=True, slots=True)
class Reply:
    """How a hit is answered: the client's dialect and endpoint kind, streamed or not, and its framing wishes."""

    dialect: str  # "ollama" or "openai"
    kind: str  # "chat", "generate" (Ollama), "completion" (OpenAI), "embed", "embeddings" (Ollama's legacy)
    stream: bool = False
    include_usage: bool = False  # OpenAI stream_options.include_usage
    encoding_format: str | None = None  # OpenAI embeddings: "float" or "base64"


@dataclass(frozen=True, slots=True)
class Ask:
    """A request as the cache sees it: ``op`` and ``fields`` make the key; ``why_not`` says why it is never
    cached (None: it may be); ``deterministic`` is temperature 0 or a seed (embeddings: always)."""

    op: str  # "chat", "generate" or "embed"
    fields: dict
    reply: Reply
    deterministic: bool
    why_not: str | None = None


def digest(ask: Ask, model: str, target: str) -> str:
    """The key: a hash of the normalised request, the backend's model name and the backend(s) that answer it."""
    doc = {"v": VERSION, "op": ask.op, "model": canonical(model), "target": target, "fields": ask.fields}
    return hashlib.sha256(jsonio.dumps_sorted(doc)).hexdigest()


# --- sampling ------------------------------------------------------------------------------------

def _sampling(items: dict) -> dict:
    out = {}
    for name, value in items.items():
        if value is None or name in NOT_IN_KEY:
            continue
        name = RENAMES.get(name, name)
        if name == "stop" and isinstance(value, str):
            value = [value]
        if name == "max_tokens" and isinstance(value, int) and value < 0:  # Ollama's -1: no limit
            continue
        if name == "n" and value == 1:
            continue
        if isinstance(value, float) and value.is_integer():  # 0 and 0.0 are the same temperature
            value = int(value)
        out[name] = value
    return out


def _deterministic(sampling: dict) -> bool:
    return sampling.get("temperature") == 0 or sampling.get("seed") is not None


def _why_not(body: dict, sampling: dict) -> str | None:
    for name in UNREPLAYABLE:
        if body.get(name) or sampling.get(name):
            return f"{name} is asked for"
    n = sampling.get("n")
    if isinstance(n, int) and n > 1:
        return "several choices (n > 1) are asked for"
    return None


def _format(fmt: Any) -> Any:
    """Ollama's format and OpenAI's response_format, one form: None, "json" or a JSON schema."""
    if isinstance(fmt, dict) and "type" in fmt and fmt.get("type") in ("text", "json_object", "json_schema"):
        kind = fmt["type"]
        if kind == "text":
            return None
        if kind == "json_object":
            return "json"
        schema = (fmt.get("json_schema") or {}).get("schema") if isinstance(fmt.get("json_schema"), dict) else None
        return schema if schema is not None else fmt
    return fmt or None


# --- messages ------------------------------------------------------------------------------------

def _image(value: str) -> str:
    """A base64 image as Ollama sends it; an OpenAI data URI is reduced to the same base64."""
    if value.startswith("data:") and ";base64," in value:
        return value.split(";base64,", 1)[1]
    return value


def _content(content: Any) -> tuple[Any, list[str]]:
    """(text, images) of a message content: a string, null, or OpenAI parts (one text part = its text)."""
    if content is None:
        return "", []
    if not isinstance(content, list):
        return content, []
    texts: list[Any] = []
    images: list[str] = []
    for part in content:
        if isinstance(part, dict) and part.get("type") == "text":
            texts.append(part.get("text", ""))
        elif isinstance(part, dict) and part.get("type") == "image_url":
            url = part.get("image_url")
            images.append(_image(url.get("url", "") if isinstance(url, dict) else str(url)))
        else:
            texts.append(part)
    if len(texts) == 1 and isinstance(texts[0], str):
        return texts[0], images
    return (texts if texts else ""), images


def _call(call: Any) -> Any:
    if not isinstance(call, dict):
        return call
    function = call.get("function") or {}
    arguments = function.get("arguments")
    if isinstance(arguments, str):
        try:
            arguments = jsonio.loads(arguments)
        except ValueError:
            pass
    out = {"name": function.get("name"), "arguments": arguments}
    if call.get("id"):
        out["id"] = call["id"]
    return out


def _message(message: Any) -> Any:
    if not isinstance(message, dict):
        return message
    content, images = _content(message.get("content"))
    out: dict[str, Any] = {"role": str(message.get("role") or "user").lower(), "content": content}
    images += [_image(i) for i in message.get("images") or () if isinstance(i, str)]
    if images:
        out["images"] = images
    thinking = message.get("thinking") or message.get("reasoning_content") or message.get("reasoning")
    if thinking:
        out["thinking"] = thinking
    calls = [_call(c) for c in message.get("tool_calls") or ()]
    if calls:
        out["tool_calls"] = calls
    for name in ("tool_call_id", "tool_name", "name"):
        if message.get(name):
            out[name] = message[name]
    return out


def _rest(body: dict, known: set[str]) -> dict:
    return {k: v for k, v in body.items() if k not in known and k not in NOT_IN_KEY and v is not None}


# --- one function per front door ---------------------------------------------------------------

def ollama_chat(body: dict, messages: list) -> Ask:
    """/api/chat, with ``messages`` as they go upstream (INJECT_TEXT applied)."""
    sampling = _sampling(body.get("options") or {})
    fields = {"messages": [_message(m) for m in messages], "tools": body.get("tools") or None,
              "format": _format(body.get("format")), "think": body.get("think"), "sampling": sampling,
              **_rest(body, {"messages", "tools", "format", "think", "options"})}
    reply = Reply("ollama", "chat", body.get("stream") is not False)
    return Ask("chat", _compact(fields), reply, _deterministic(sampling), _why_not(body, sampling))


OPENAI_CHAT_FIELDS = {"messages", "tools", "tool_choice", "response_format", "reasoning_effort"}


def openai_chat(body: dict) -> Ask:
    """/v1/chat/completions, with its messages as they go upstream."""
    rest = _rest(body, OPENAI_CHAT_FIELDS)
    sampling = _sampling({k: v for k, v in rest.items() if k not in UNREPLAYABLE})
    effort = body.get("reasoning_effort")
    tool_choice = body.get("tool_choice")
    fields = {"messages": [_message(m) for m in body.get("messages") or ()], "tools": body.get("tools") or None,
              "tool_choice": None if tool_choice == "auto" else tool_choice,
              "format": _format(body.get("response_format")),
              "think": EFFORT_TO_THINK.get(effort, effort) if effort is not None else None, "sampling": sampling}
    reply = Reply("openai", "chat", bool(body.get("stream")), _include_usage(body))
    return Ask("chat", _compact(fields), reply, _deterministic(sampling), _why_not(body, sampling))


def ollama_generate(body: dict) -> Ask:
    """/api/generate: a raw prompt (``raw``) is the same request as OpenAI's /v1/completions."""
    sampling = _sampling(body.get("options") or {})
    fields = {"prompt": body.get("prompt") or "", "raw": bool(body.get("raw")) and not body.get("suffix"),
              "format": _format(body.get("format")), "think": body.get("think"), "sampling": sampling,
              "images": [_image(i) for i in body.get("images") or ()] or None,
              **_rest(body, {"prompt", "raw", "format", "think", "options", "images", "context"})}
    why_not = _why_not(body, sampling) or ("a context from an earlier answer is sent" if body.get("context")
                                           else None)
    reply = Reply("ollama", "generate", body.get("stream") is not False)
    return Ask("generate", _compact(fields), reply, _deterministic(sampling), why_not)


def openai_completion(body: dict) -> Ask:
    rest = _rest(body, {"prompt"})
    sampling = _sampling({k: v for k, v in rest.items() if k not in UNREPLAYABLE and k != "suffix"})
    prompt = body.get("prompt")
    if isinstance(prompt, list) and len(prompt) == 1 and isinstance(prompt[0], str):
        prompt = prompt[0]
    fields = {"prompt": prompt, "raw": not body.get("suffix"), "suffix": body.get("suffix") or None,
              "sampling": sampling}
    why_not = _why_not(body, sampling) or (None if isinstance(prompt, str) else "several prompts are sent")
    reply = Reply("openai", "completion", bool(body.get("stream")), _include_usage(body))
    return Ask("generate", _compact(fields), reply, _deterministic(sampling), why_not)


def ollama_embed(body: dict, legacy: bool) -> Ask:
    """/api/embed, or the legacy /api/embeddings (keyed apart: Ollama answers it with other vectors)."""
    data = body.get("prompt") if legacy else body.get("input")
    fields = {"input": [data] if isinstance(data, str) else data, "legacy": legacy or None,
              "dimensions": body.get("dimensions"), "truncate": body.get("truncate"),
              "sampling": _sampling(body.get("options") or {})}
    reply = Reply("ollama", "embeddings" if legacy else "embed")
    return Ask("embed", _compact(fields), reply, True)


def openai_embed(body: dict) -> Ask:
    data = body.get("input")
    fields = {"input": [data] if isinstance(data, str) else data, "dimensions": body.get("dimensions")}
    reply = Reply("openai", "embed", encoding_format=body.get("encoding_format"))
    return Ask("embed", _compact(fields), reply, True)


def _include_usage(body: dict) -> bool:
    options = body.get("stream_options")
    return isinstance(options, dict) and bool(options.get("include_usage"))


def _compact(fields: dict) -> dict:
    """Absent and empty mean the same: both are left out."""
    return {k: v for k, v in fields.items() if v not in (None, {}, [])}
