"""The Ollama <-> OpenAI mapping, both directions (OpenAI's chat format is the pivot).

Pure: dict in, dict out. Field renames, option names and finish reasons are the tables at the
top; the functions below walk them.
"""
from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from .. import jsonio
from ..errors import BadRequest
from . import openai as oa
from .ollama import image_from_url, image_to_data_uri, is_streaming, parse_arguments

OPTION_TO_OPENAI = {
    "temperature": "temperature",
    "top_p": "top_p",
    "seed": "seed",
    "stop": "stop",
    "presence_penalty": "presence_penalty",
    "frequency_penalty": "frequency_penalty",
}
# Non-standard samplers, per backend flavour (OpenAI proper rejects unknown fields: send none).
EXTRA_OPTIONS_BY_FLAVOUR = {
    "llamacpp": {"top_k": "top_k", "min_p": "min_p", "typical_p": "typical_p", "repeat_penalty": "repeat_penalty",
                 "repeat_last_n": "repeat_last_n", "mirostat": "mirostat", "mirostat_tau": "mirostat_tau",
                 "mirostat_eta": "mirostat_eta"},
    "vllm": {"top_k": "top_k", "min_p": "min_p", "repeat_penalty": "repetition_penalty"},
    "generic": {"top_k": "top_k", "min_p": "min_p", "repeat_penalty": "repeat_penalty"},
    "openai": {},
}
# OpenAI request field -> Ollama option (A->O).
OPENAI_TO_OPTION = {
    "temperature": "temperature",
    "top_p": "top_p",
    "seed": "seed",
    "presence_penalty": "presence_penalty",
    "frequency_penalty": "frequency_penalty",
    "top_k": "top_k",
    "min_p": "min_p",
    "typical_p": "typical_p",
    "repeat_penalty": "repeat_penalty",
    "repetition_penalty": "repeat_penalty",
}
FINISH_TO_DONE_REASON = {"stop": "stop", "length": "length", "tool_calls": "stop",
                         "function_call": "stop", "content_filter": "stop"}
DONE_REASON_TO_FINISH = {"stop": "stop", "length": "length"}
# OpenAI reasoning_effort -> Ollama think (Ollama's own rules).
EFFORT_TO_THINK = {"none": False, "minimal": "low", "low": "low", "medium": "medium", "high": "high",
                   "xhigh": "max", "max": "max"}

# --- requests: Ollama client -> OpenAI backend (O->A) ---------------------------------------

def options_to_openai(options: dict, flavour: str) -> dict:
    out: dict[str, Any] = {}
    table = {**OPTION_TO_OPENAI, **EXTRA_OPTIONS_BY_FLAVOUR.get(flavour, {})}
    for key, value in options.items():
        if value is None:
            continue
        target = table.get(key)
        if target == "stop":
            out["stop"] = [value] if isinstance(value, str) else value
        elif target:
            out[target] = value
    num_predict = options.get("num_predict")
    if isinstance(num_predict, int) and not isinstance(num_predict, bool) and num_predict > 0:
        out["max_tokens"] = num_predict
    return out


def format_to_response_format(fmt: Any) -> dict | None:
    if fmt == "json":
        return {"type": "json_object"}
    if isinstance(fmt, dict):
        return {"type": "json_schema", "json_schema": {"name": "response", "schema": fmt, "strict": True}}
    return None


def think_to_openai(think: Any, flavour: str) -> dict:
    if think is None:
        return {}
    if isinstance(think, str):
        return {"reasoning_effort": "high" if think == "max" else think}
    if flavour == "openai":
        return {} if think else {"reasoning_effort": "none"}
    return {"chat_template_kwargs": {"enable_thinking": bool(think)}}


def messages_to_openai(messages: Iterable[dict]) -> list[dict]:
    """Ollama history -> OpenAI messages, threading tool-call ids into the tool results."""
    out: list[dict] = []
    pending: list[tuple[str, str]] = []  # (id, name) of calls not yet answered, in order
    for message in messages:
        role = message.get("role", "user").lower()
        converted: dict[str, Any] = {"role": role}
        text = message.get("content") or ""
        images = message.get("images") or []
        if images and role == "user":
            parts: list[dict] = [{"type": "text", "text": text}] if text else []
            parts += [{"type": "image_url", "image_url": {"url": image_to_data_uri(img)}} for img in images]
            converted["content"] = parts
        else:
            converted["content"] = text
        if role == "assistant":
            if message.get("thinking"):
                converted["reasoning_content"] = message["thinking"]
            calls = []
            for call in message.get("tool_calls") or ():
                function = call.get("function") or {}
                call_id = call.get("id") or oa.new_call_id()
                name = function.get("name", "")
                arguments = function.get("arguments", {})
                calls.append({"id": call_id, "type": "function",
                              "function": {"name": name, "arguments": arguments if isinstance(arguments, str)
                                           else jsonio.dumps_str(arguments)}})
                pending.append((call_id, name))
            if calls:
                converted["tool_calls"] = calls
                if not text:
                    converted["content"] = None
        elif role == "tool":
            converted["tool_call_id"] = _answer_call(pending, message.get("tool_call_id"), message.get("tool_name"))
        out.append(converted)
    return out


def _answer_call(pending: list[tuple[str, str]], call_id: str | None, name: str | None) -> str:
    if call_id:
        for i, (pid, _) in enumerate(pending):
            if pid == call_id:
                del pending[i]
                break
        return call_id
    for i, (pid, pname) in enumerate(pending):
        if name is None or pname == name:
            del pending[i]
            return pid
    return oa.new_call_id()


def chat_to_openai(body: dict, backend_model: str, flavour: str) -> dict:
    out: dict[str, Any] = {"model": backend_model, "messages": messages_to_openai(body.get("messages") or [])}
    if body.get("tools"):
        out["tools"] = body["tools"]
    out.update(options_to_openai(body.get("options") or {}, flavour))
    response_format = format_to_response_format(body.get("format"))
    if response_format:
        out["response_format"] = response_format
    out.update(think_to_openai(body.get("think"), flavour))
    for key in ("logprobs", "top_logprobs"):
        if body.get(key) is not None:
            out[key] = body[key]
    stream = is_streaming(body)
    out["stream"] = stream
    if stream:
        out["stream_options"] = {"include_usage": True}
    return out


def generate_to_openai(body: dict, backend_model: str, flavour: str) -> tuple[str, dict]:
    """Ollama /api/generate -> (upstream path, OpenAI body): raw/suffix go to /v1/completions."""
    stream = is_streaming(body)
    common = options_to_openai(body.get("options") or {}, flavour)
    response_format = format_to_response_format(body.get("format"))
    if body.get("raw") or body.get("suffix"):
        out: dict[str, Any] = {"model": backend_model, "prompt": body.get("prompt", ""), **common}
        if body.get("suffix"):
            out["suffix"] = body["suffix"]
        if response_format and flavour != "openai":
            out["response_format"] = response_format
        path = "/v1/completions"
    else:
        messages: list[dict] = []
        if body.get("system"):
            messages.append({"role": "system", "content": body["system"]})
        messages.append({"role": "user", "content": body.get("prompt", ""), "images": body.get("images") or []})
        out = {"model": backend_model, "messages": messages_to_openai(messages), **common}
        if response_format:
            out["response_format"] = response_format
        out.update(think_to_openai(body.get("think"), flavour))
        path = "/v1/chat/completions"
    out["stream"] = stream
    if stream:
        out["stream_options"] = {"include_usage": True}
    return path, out


def embed_to_openai(body: dict, backend_model: str) -> dict:
    data = body.get("input", body.get("prompt"))
    if not isinstance(data, (str, list)) or (isinstance(data, list) and not all(isinstance(x, str) for x in data)):
        raise BadRequest("input must be a string or an array of strings")
    out: dict[str, Any] = {"model": backend_model, "input": data, "encoding_format": "float"}
    if isinstance(body.get("dimensions"), int):
        out["dimensions"] = body["dimensions"]
    return out



# --- responses: OpenAI backend -> Ollama client -------------------------------------------

def done_reason_from_finish(finish_reason: str | None) -> str:
    return FINISH_TO_DONE_REASON.get(finish_reason or "stop", "stop")


# --- requests: OpenAI client -> Ollama backend (A->O) ---------------------------------------

def messages_from_openai(messages: Iterable[dict]) -> list[dict]:
    out: list[dict] = []
    names_by_id: dict[str, str] = {}
    for message in messages:
        role = message.get("role", "user")
        role = "system" if role == "developer" else role
        converted: dict[str, Any] = {"role": role}
        content = message.get("content")
        images: list[str] = []
        if isinstance(content, list):
            texts = []
            for part in content:
                if not isinstance(part, dict):
                    continue
                if part.get("type") in ("text", "input_text"):
                    texts.append(str(part.get("text", "")))
                elif part.get("type") == "image_url":
                    image = part.get("image_url")
                    url = image.get("url") if isinstance(image, dict) else image
                    if not isinstance(url, str):
                        raise BadRequest("image_url must carry a url", param="messages")
                    images.append(image_from_url(url))
            converted["content"] = "\n".join(texts)
        else:
            converted["content"] = "" if content is None else str(content)
        if images:
            converted["images"] = images
        reasoning = oa.reasoning_of(message)
        if role == "assistant" and reasoning:
            converted["thinking"] = reasoning
        if message.get("tool_calls"):
            calls = []
            for call in message["tool_calls"]:
                if not isinstance(call, dict):
                    continue
                function = call.get("function") or {}
                arguments, _ = parse_arguments(function.get("arguments"))
                entry: dict[str, Any] = {"function": {"name": function.get("name", ""), "arguments": arguments}}
                if call.get("id"):
                    entry["id"] = call["id"]
                    names_by_id[call["id"]] = function.get("name", "")
                calls.append(entry)
            converted["tool_calls"] = calls
        if role == "tool":
            call_id = message.get("tool_call_id")
            if call_id:
                converted["tool_call_id"] = call_id
                if call_id in names_by_id:
                    converted["tool_name"] = names_by_id[call_id]
            if message.get("name"):
                converted.setdefault("tool_name", message["name"])
        out.append(converted)
    return out


def options_from_openai(body: dict) -> dict:
    options = {OPENAI_TO_OPTION[k]: v for k, v in body.items() if k in OPENAI_TO_OPTION and v is not None}
    max_tokens = body.get("max_completion_tokens", body.get("max_tokens"))
    if max_tokens is not None:
        options["num_predict"] = max_tokens
    stop = body.get("stop")
    if stop is not None:
        options["stop"] = [stop] if isinstance(stop, str) else stop
    return options


def response_format_to_format(response_format: Any) -> Any:
    if not isinstance(response_format, dict):
        return None
    kind = response_format.get("type")
    if kind == "json_object":
        return "json"
    if kind == "json_schema":
        schema = (response_format.get("json_schema") or {}).get("schema")
        return schema if isinstance(schema, dict) else "json"
    return None


def chat_from_openai(body: dict, backend_model: str) -> dict:
    if isinstance(body.get("n"), int) and body["n"] > 1:
        raise BadRequest("n > 1 is not supported by an Ollama backend", param="n")
    out: dict[str, Any] = {"model": backend_model, "messages": messages_from_openai(body["messages"]),
                           "stream": bool(body.get("stream"))}
    if body.get("tools") and body.get("tool_choice") != "none":
        out["tools"] = body["tools"]
    options = options_from_openai(body)
    if options:
        out["options"] = options
    fmt = response_format_to_format(body.get("response_format"))
    if fmt is not None:
        out["format"] = fmt
    effort = body.get("reasoning_effort")
    if effort in EFFORT_TO_THINK:
        out["think"] = EFFORT_TO_THINK[effort]
    for key in ("logprobs", "top_logprobs"):
        if body.get(key) is not None:
            out[key] = body[key]
    return out


def completion_from_openai(body: dict, backend_model: str) -> dict:
    """OpenAI /v1/completions -> Ollama /api/generate with raw: true (the prompt is sent as is)."""
    prompt = body.get("prompt")
    if isinstance(prompt, list):
        if len(prompt) != 1 or not isinstance(prompt[0], str):
            raise BadRequest("an Ollama backend takes one string prompt", param="prompt")
        prompt = prompt[0]
    out: dict[str, Any] = {"model": backend_model, "prompt": prompt, "raw": True, "stream": bool(body.get("stream"))}
    if body.get("suffix"):
        out["suffix"] = body["suffix"]
        del out["raw"]  # Ollama applies the model's fill-in-the-middle template for suffix
    options = options_from_openai(body)
    if options:
        out["options"] = options
    return out


def embed_from_openai(body: dict, backend_model: str) -> dict:
    data = body["input"]
    if isinstance(data, list) and not all(isinstance(x, str) for x in data):
        raise BadRequest("an Ollama backend takes text input, not token arrays", param="input")
    out: dict[str, Any] = {"model": backend_model, "input": data}
    if isinstance(body.get("dimensions"), int):
        out["dimensions"] = body["dimensions"]
    return out


# --- responses: Ollama backend -> OpenAI client -------------------------------------------

def tool_calls_to_openai(calls: Iterable[dict], start_index: int = 0) -> list[dict]:
    out = []
    for offset, call in enumerate(calls):
        function = call.get("function") or {}
        arguments = function.get("arguments", {})
        out.append({"index": start_index + offset, "id": call.get("id") or oa.new_call_id(), "type": "function",
                    "function": {"name": function.get("name", ""),
                                 "arguments": arguments if isinstance(arguments, str)
                                 else jsonio.dumps_str(arguments)}})
    return out


def finish_from_done_reason(done_reason: str | None, saw_tool_calls: bool) -> str:
    if saw_tool_calls:
        return "tool_calls"
    return DONE_REASON_TO_FINISH.get(done_reason or "stop", "stop")


def usage_from_line(line: dict) -> dict:
    return oa.usage(int(line.get("prompt_eval_count") or 0), int(line.get("eval_count") or 0))


def chat_response_to_openai(resp: dict, cid: str, created: int, model: str) -> dict:
    message = resp.get("message") or {}
    calls = tool_calls_to_openai(message.get("tool_calls") or [])
    out_message: dict[str, Any] = {"role": "assistant",
                                   "content": message.get("content") or ("" if not calls else None)}
    if message.get("thinking"):
        out_message["reasoning_content"] = message["thinking"]
    if calls:
        for call in calls:
            call.pop("index", None)
        out_message["tool_calls"] = calls
    return oa.chat_completion(cid, created, model, out_message,
                              finish_from_done_reason(resp.get("done_reason"), bool(calls)), usage_from_line(resp))


def generate_response_to_openai(resp: dict, cid: str, created: int, model: str) -> dict:
    return oa.completion(cid, created, model, resp.get("response") or "",
                         finish_from_done_reason(resp.get("done_reason"), False), usage_from_line(resp))


def embed_response_to_openai(resp: dict, model: str, encoding_format: str | None) -> dict:
    return oa.embedding_response(model, resp.get("embeddings") or [], int(resp.get("prompt_eval_count") or 0),
                                 encoding_format)
