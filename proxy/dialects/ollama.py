"""Ollama wire shapes: request checks, response lines and small helpers (names, times, images).

Pure: no Flask, no network, no clock — times come in as arguments. The mapping to and from
OpenAI's format lives in ``ollama_openai``.
"""
from __future__ import annotations

import hashlib
import math
import re
from datetime import datetime, timezone
from typing import Any

from .. import jsonio
from ..errors import BadRequest


THINK_LEVELS = ("low", "medium", "high", "max")
IMAGE_MAGIC = (("iVBOR", "image/png"), ("/9j/", "image/jpeg"), ("R0lGOD", "image/gif"),
               ("UklGR", "image/webp"), ("Qk", "image/bmp"))
_DATA_URI = re.compile(r"^data:(?P<mime>[\w.+-]+/[\w.+-]+)?(?:;[^,]*)?;base64,(?P<data>.*)$", re.S)


# --- small helpers ----------------------------------------------------------------------------

_SECOND: tuple[int, str] = (-1, "")  # the last whole second formatted: a stream stamps many lines a second


def rfc3339(ts: float) -> str:
    """UTC timestamp with microseconds and a Z suffix (Java Instant and Python parse it). Every streamed
    Ollama line carries one, so the date and time of day are formatted once per second, not per line."""
    global _SECOND
    if ts < 0:
        return datetime.fromtimestamp(ts, timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    fraction, whole = math.modf(ts)  # rounded as datetime.fromtimestamp rounds (half to even, on the fraction)
    second, micros = int(whole), round(fraction * 1e6)
    if micros >= 1_000_000:
        second, micros = second + 1, micros - 1_000_000
    cached = _SECOND
    if cached[0] != second:
        cached = _SECOND = (second, datetime.fromtimestamp(second, timezone.utc).strftime("%Y-%m-%dT%H:%M:%S"))
    return f"{cached[1]}.{micros:06d}Z"


def ns(seconds: float) -> int:
    return max(0, int(seconds * 1e9))


def canonical(name: str) -> str:
    """`foo` and `foo:latest` are the same model."""
    return name[:-7] if name.endswith(":latest") else name


def with_tag(name: str) -> str:
    return name if ":" in name.rsplit("/", 1)[-1] else name + ":latest"


def digest_of(name: str) -> str:
    return hashlib.sha256(name.encode()).hexdigest()


def image_mime(b64: str) -> str:
    for prefix, mime in IMAGE_MAGIC:
        if b64.startswith(prefix):
            return mime
    return "image/png"


def image_to_data_uri(b64: str) -> str:
    if b64.startswith("data:"):
        return b64
    return f"data:{image_mime(b64)};base64,{b64}"


def image_from_url(url: str) -> str:
    match = _DATA_URI.match(url)
    if not match:
        raise BadRequest("only data: URIs are supported for images (remote image URLs are not fetched)",
                         param="messages")
    return match.group("data")


def parse_arguments(raw: Any) -> tuple[dict, bool]:
    """OpenAI JSON-string arguments -> an object for Ollama clients. Returns (object, parsed_ok)."""
    if isinstance(raw, dict):
        return raw, True
    if raw is None or (isinstance(raw, str) and not raw.strip()):
        return {}, True
    if not isinstance(raw, str):
        return {}, False
    try:
        value = jsonio.loads(raw)
    except ValueError:
        return {}, False
    if isinstance(value, str):  # double-encoded
        try:
            value = jsonio.loads(value)
        except ValueError:
            return {}, False
    return (value, True) if isinstance(value, dict) else ({}, False)


def _check_options(body: dict) -> dict:
    options = body.get("options")
    if options is None:
        return {}
    if not isinstance(options, dict):
        raise BadRequest("'options' must be an object")
    for key in ("temperature", "top_p", "top_k", "min_p", "num_predict", "seed", "num_ctx", "repeat_penalty"):
        value = options.get(key)
        if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float))):
            raise BadRequest(f"option '{key}' must be a number")
    stop = options.get("stop")
    if stop is not None and not isinstance(stop, (str, list)):
        raise BadRequest("option 'stop' must be a string or an array of strings")
    return options


def check_model(body: Any) -> str:
    if not isinstance(body, dict):
        raise BadRequest("the request body must be a JSON object")
    model = body.get("model", body.get("name"))
    if not isinstance(model, str) or not model.strip():
        raise BadRequest("model is required")
    return model


def check_chat_request(body: Any) -> str:
    model = check_model(body)
    messages = body.get("messages")
    if messages is not None and not isinstance(messages, list):
        raise BadRequest("messages must be an array")
    for i, message in enumerate(messages or ()):
        if not isinstance(message, dict) or not isinstance(message.get("role"), str):
            raise BadRequest(f"messages[{i}] must be an object with a string role")
        if message.get("content") is not None and not isinstance(message["content"], str):
            raise BadRequest(f"messages[{i}].content must be a string")
        images = message.get("images")
        if images is not None and (not isinstance(images, list) or not all(isinstance(x, str) for x in images)):
            raise BadRequest(f"messages[{i}].images must be an array of base64 strings")
        calls = message.get("tool_calls")
        if calls is not None and (not isinstance(calls, list) or not all(
                isinstance(c, dict) and isinstance(c.get("function"), dict) for c in calls)):
            raise BadRequest(f"messages[{i}].tool_calls must be an array of objects with a function")
    _check_common(body)
    return model


def check_generate_request(body: Any) -> str:
    model = check_model(body)
    for key in ("prompt", "suffix", "system"):
        if body.get(key) is not None and not isinstance(body[key], str):
            raise BadRequest(f"{key} must be a string")
    images = body.get("images")
    if images is not None and (not isinstance(images, list) or not all(isinstance(x, str) for x in images)):
        raise BadRequest("images must be an array of base64 strings")
    _check_common(body)
    return model


def _check_common(body: dict) -> None:
    if body.get("stream") is not None and not isinstance(body["stream"], bool):
        raise BadRequest("stream must be a boolean")
    if body.get("tools") is not None and not isinstance(body["tools"], list):
        raise BadRequest("tools must be an array")
    fmt = body.get("format")
    if fmt is not None and fmt not in ("", "json") and not isinstance(fmt, dict):
        raise BadRequest('format must be "json" or a JSON schema object')
    think = body.get("think")
    if think is not None and not isinstance(think, bool) and think not in THINK_LEVELS:
        raise BadRequest('think must be true, false or one of "low", "medium", "high", "max"')
    _check_options(body)


def is_streaming(body: dict) -> bool:
    """Ollama streams unless `stream` is explicitly false."""
    return body.get("stream") is not False


def is_unload(body: dict) -> bool:
    keep_alive = body.get("keep_alive")
    return keep_alive == 0 or keep_alive in ("0", "0s", "0m")



# --- response lines ---------------------------------------------------------------------------

def metrics(prompt_tokens: int | None, completion_tokens: int | None, *, total_s: float,
            prompt_s: float | None, eval_s: float | None) -> dict[str, int]:
    """Ollama's final-line metrics; zeros are omitted as Ollama does."""
    out = {"total_duration": ns(total_s)}
    if prompt_tokens:
        out["prompt_eval_count"] = prompt_tokens
    if prompt_s:
        out["prompt_eval_duration"] = ns(prompt_s)
    if completion_tokens:
        out["eval_count"] = completion_tokens
    if eval_s:
        out["eval_duration"] = ns(eval_s)
    return out


def chat_line(model: str, created_at: str, content: str = "", thinking: str | None = None,
              tool_calls: list | None = None) -> dict[str, Any]:
    message: dict[str, Any] = {"role": "assistant", "content": content}
    if thinking:
        message["thinking"] = thinking
    if tool_calls:
        message["tool_calls"] = tool_calls
    return {"model": model, "created_at": created_at, "message": message, "done": False}


def generate_line(model: str, created_at: str, response: str = "", thinking: str | None = None) -> dict[str, Any]:
    line: dict[str, Any] = {"model": model, "created_at": created_at, "response": response, "done": False}
    if thinking:
        line["thinking"] = thinking
    return line


def final_line(line: dict, done_reason: str, metric_fields: dict) -> dict:
    line["done"] = True
    line["done_reason"] = done_reason
    line.update(metric_fields)
    return line


def probe_reply(kind: str, model: str, created_at: str, unload: bool) -> dict[str, Any]:
    """Answer to a load/unload probe (empty prompt or messages): never sent upstream."""
    line = chat_line(model, created_at) if kind == "chat" else generate_line(model, created_at)
    line["done"] = True
    line["done_reason"] = "unload" if unload else "load"
    return line
