"""Ollama wire shapes: request checks, response lines and small helpers (names, times, images).

Pure: no Flask, no network, no clock — times come in as arguments. The mapping to and from
OpenAI's format lives in ``ollama_openai``.
"""
from __future__ import annotations

import hashlib
import math
import re
from datetime import UTC, datetime
from typing import Any

from .. import jsonio
from ..errors import BadRequest
from .checks import (
    MAX_DIMENSIONS,
    an_object,
    boolean,
    check_fields,
    fail,
    fields,
    integer,
    items,
    number,
    string,
    string_or_strings,
)

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
        return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    fraction, whole = math.modf(ts)  # rounded as datetime.fromtimestamp rounds (half to even, on the fraction)
    second, micros = int(whole), round(fraction * 1e6)
    if micros >= 1_000_000:
        second, micros = second + 1, micros - 1_000_000
    cached = _SECOND
    if cached[0] != second:
        cached = _SECOND = (second, datetime.fromtimestamp(second, UTC).strftime("%Y-%m-%dT%H:%M:%S"))
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


# --- request validation ---------------------------------------------------------------------
# One table per endpoint of the fields the proxy reads, translates or forwards (built from ``checks``): a wrong
# type is a 400, never an exception deeper down. Integer options given as floats are read as Ollama reads them
# (cut toward zero); the other integers take an integral float only.

INTEGER_OPTIONS = ("num_keep", "seed", "num_predict", "top_k", "repeat_last_n", "mirostat", "num_ctx", "num_batch",
                   "num_gpu", "main_gpu", "num_thread")
NUMBER_OPTIONS = ("temperature", "top_p", "min_p", "typical_p", "repeat_penalty", "presence_penalty",
                  "frequency_penalty", "mirostat_tau", "mirostat_eta", "tfs_z")
BOOLEAN_OPTIONS = ("penalize_newline", "numa", "use_mmap", "use_mlock", "low_vram", "f16_kv", "vocab_only")
OPTIONS = {**{k: integer(truncate=True) for k in INTEGER_OPTIONS}, **{k: number for k in NUMBER_OPTIONS},
           **{k: boolean for k in BOOLEAN_OPTIONS}, "stop": string_or_strings}


def _strings(value: Any, name: str) -> list:
    if not isinstance(value, list) or not all(isinstance(x, str) for x in value):
        fail(name, "an array of strings")
    return value


def _format(value: Any, name: str) -> Any:
    if value not in ("", "json") and not isinstance(value, dict):
        raise BadRequest('format must be "json" or a JSON schema object', param="format")
    return value


def _think(value: Any, name: str) -> Any:
    if not isinstance(value, bool) and value not in THINK_LEVELS:
        raise BadRequest('think must be true, false or one of "low", "medium", "high", "max"', param="think")
    return value


def _duration(value: Any, name: str) -> Any:
    if isinstance(value, bool) or not isinstance(value, (str, int, float)):
        fail(name, 'a duration ("5m", "0") or a number of seconds')
    return value


def _arguments(value: Any, name: str) -> Any:
    if not isinstance(value, (dict, str)):
        fail(name, "an object")
    return value


TOOL_CALL = fields({"id": string, "function": fields({"name": string, "arguments": _arguments, "index": integer()})})
MESSAGE = {"role": string, "content": string, "thinking": string, "images": _strings, "tool_calls": items(TOOL_CALL),
           "tool_name": string, "tool_call_id": string}
TOOL = fields({"type": string, "function": fields({"name": string, "description": string,
                                                   "parameters": an_object})})
LOADING = {"keep_alive": _duration, "options": fields(OPTIONS)}
GENERATION = {**LOADING, "stream": boolean, "format": _format, "think": _think, "tools": items(TOOL),
              "logprobs": boolean, "top_logprobs": integer(0, 20), "raw": boolean, "truncate": boolean,
              "shift": boolean}
CHAT = {**GENERATION, "messages": items(fields(MESSAGE))}
GENERATE = {**GENERATION, "prompt": string, "suffix": string, "system": string, "template": string,
            "images": _strings, "context": items(integer())}
EMBED = {**LOADING, "truncate": boolean, "dimensions": integer(1, MAX_DIMENSIONS)}
MANAGE = {"stream": boolean, "insecure": boolean, "from": string, "quantize": string, "template": string,
          "system": string, "license": string_or_strings, "files": an_object, "adapters": an_object}


def check_model(body: Any) -> str:
    if not isinstance(body, dict):
        raise BadRequest("the request body must be a JSON object")
    model = body.get("model", body.get("name"))
    if not isinstance(model, str) or not model.strip():
        raise BadRequest("model is required and must be a non-empty string", param="model")
    return model


def check_chat_request(body: Any) -> str:
    model = check_model(body)
    messages = body.get("messages")
    for i, message in enumerate(messages if isinstance(messages, list) else ()):
        if not isinstance(message, dict) or not isinstance(message.get("role"), str):
            raise BadRequest(f"messages[{i}] must be an object with a string role", param="messages")
    check_fields(body, CHAT)
    return model


def check_generate_request(body: Any) -> str:
    model = check_model(body)
    check_fields(body, GENERATE)
    return model


def check_embed_request(body: Any) -> str:
    """/api/embed (`input`: a string or strings) and the older /api/embeddings (`prompt`: a string)."""
    model = check_model(body)
    data = body.get("input")
    if data is not None and not isinstance(data, str) and not (isinstance(data, list) and all(
            isinstance(x, str) for x in data)):
        raise BadRequest("input must be a string or an array of strings", param="input")
    check_fields(body, {**EMBED, "prompt": string})
    return model


def check_manage_request(body: Any, action: str) -> str:
    """pull, push, create and delete name a model (`model`, or the older `name`); copy names two."""
    if action == "copy":
        if not isinstance(body, dict):
            raise BadRequest("the request body must be a JSON object")
        for key in ("source", "destination"):
            if not isinstance(body.get(key), str) or not body[key].strip():
                raise BadRequest(f"{key} is required and must be a non-empty string", param=key)
        return body["source"]
    model = check_model(body)
    check_fields(body, MANAGE)
    return model


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
