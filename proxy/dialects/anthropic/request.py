"""Anthropic Messages requests: the checks (a wrong type is a 400 naming the field) and the mapping onto an
OpenAI chat request, the pivot every backend kind is reached through. Claude Code's habits are tolerated:
``role: "system"`` inside ``messages``, ``cache_control`` anywhere, unknown fields, a user turn that mixes text
and tool results; its per-request billing block is removed from the system prompt when sanitising is on."""
from __future__ import annotations

import re
from typing import Any

from ... import jsonio
from ...errors import BadRequest
from .. import ollama_openai as oo
from ..checks import an_object, boolean, check_fields, fail, fields, integer, items, number, one_of, string

# Claude Code's first system block: a nonce that changes with every request, which defeats the backend's
# prompt (KV) cache (claude-code #68900; llama.cpp PR #20623 drops it the same way).
BILLING_PREFIX = "x-anthropic-billing-header:"
# Anthropic sampling and length fields -> the Ollama-style option names ``ollama_openai.options_to_openai`` maps,
# which knows which backend flavour takes which sampler (top_k is not sent to OpenAI proper).
SAMPLING_TO_OPTION = {"temperature": "temperature", "top_p": "top_p", "top_k": "top_k", "max_tokens": "num_predict",
                      "stop_sequences": "stop"}
TOOL_CHOICE = {"auto": "auto", "any": "required", "none": "none"}  # "tool" names one: built below
# output_config.effort (adaptive thinking) -> the think level ``ollama_openai.think_to_openai`` maps
EFFORT_TO_THINK = {"low": "low", "medium": "medium", "high": "high", "xhigh": "high", "max": "high"}
THINKING_TO_THINK = {"enabled": True, "disabled": False}
# An Ollama backend is reached through ``ollama_openai.chat_from_openai``, which reads every sampler the pivot holds.
PIVOT_FLAVOUR = {"ollama": "generic"}
TOOL_ID_UNSAFE = re.compile(r"[^A-Za-z0-9_-]")
IMAGE_PLACEHOLDER = "[image]"  # an image inside a tool result: chat tool messages carry text only


# --- checks -------------------------------------------------------------------------------------------------

def _block(value: Any, name: str) -> Any:
    """A content block: an object with a string ``type`` (its other fields are read where they are used)."""
    if not isinstance(value, dict) or not isinstance(value.get("type"), str):
        fail(name, "a content block: an object with a string 'type'")
    return value


def _blocks(value: Any, name: str) -> Any:
    """A string, or an array of content blocks."""
    if isinstance(value, str):
        return value
    return items(_block)(value, name)


MESSAGE = fields({"role": one_of("user", "assistant", "system"), "content": _blocks})
TOOL = fields({"name": string, "description": string, "input_schema": an_object, "type": string})
COMMON = {
    "messages": items(MESSAGE), "system": _blocks, "tools": items(TOOL),
    "tool_choice": fields({"type": one_of("auto", "any", "tool", "none"), "name": string,
                           "disable_parallel_tool_use": boolean}),
    "thinking": fields({"type": one_of("enabled", "disabled", "adaptive"), "budget_tokens": integer(0)}),
    "output_config": fields({"effort": string}),
}
MESSAGES = {**COMMON, "max_tokens": integer(1), "stream": boolean, "temperature": number, "top_p": number,
            "top_k": integer(0), "stop_sequences": items(string), "metadata": fields({"user_id": string})}


def _check(body: Any, table: dict) -> str:
    if not isinstance(body, dict):
        raise BadRequest("the request body must be a JSON object")
    model = body.get("model")
    if not isinstance(model, str) or not model.strip():
        raise BadRequest("model: Field required (a non-empty string)", param="model")
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise BadRequest("messages: must be a non-empty array", param="messages")
    check_fields(body, table)
    for i, message in enumerate(messages):
        if message.get("content") is None:
            fail(f"messages[{i}].content", "a string or an array of content blocks")
    tool_choice = body.get("tool_choice")
    if isinstance(tool_choice, dict) and tool_choice.get("type") == "tool" and not tool_choice.get("name"):
        fail("tool_choice.name", "the name of a tool when tool_choice.type is 'tool'")
    return model


def check_messages_request(body: Any) -> str:
    """The model a POST /v1/messages asks for, the body checked (``max_tokens`` is required, as Anthropic's)."""
    model = _check(body, MESSAGES)
    if body.get("max_tokens") is None:
        raise BadRequest("max_tokens: Field required", param="max_tokens")
    return model


def check_count_tokens_request(body: Any) -> str:
    """The model of a POST /v1/messages/count_tokens (a Messages request without ``max_tokens``)."""
    return _check(body, COMMON)


# --- Messages -> OpenAI chat ----------------------------------------------------------------------------

def tool_id(value: Any) -> str:
    """A tool-use id kept as it is when it is made of letters, digits, ``_`` and ``-`` (what Anthropic's
    clients accept), else with the other characters replaced: both sides of a round trip map it the same."""
    text = value if isinstance(value, str) else ""
    return TOOL_ID_UNSAFE.sub("_", text) if text else "toolu_missing"


def _is_billing(text: str) -> bool:
    return text.lstrip().startswith(BILLING_PREFIX)


def without_billing(system: Any) -> Any:
    """``system`` in its own shape (a string or blocks, ``cache_control`` kept) without Claude Code's per-request
    billing block: what goes to a backend that speaks Messages itself (AGENT_SANITIZE)."""
    if isinstance(system, str):
        return system.lstrip().partition("\n")[2] if _is_billing(system) else system
    if not isinstance(system, list):
        return system
    return [b for b in system if not (isinstance(b, dict) and b.get("type") == "text"
                                      and isinstance(b.get("text"), str) and _is_billing(b["text"]))]


def _system_texts(system: Any, sanitize: bool) -> list[str]:
    if isinstance(system, str):
        if sanitize and _is_billing(system):
            system = system.lstrip().partition("\n")[2]
        return [system] if system else []
    texts = []
    for block in system or ():
        text = block.get("text")
        if block.get("type") == "text" and isinstance(text, str) and text and not (sanitize and _is_billing(text)):
            texts.append(text)
    return texts


def _image(block: dict, where: str) -> dict:
    source = block.get("source")
    if isinstance(source, dict) and source.get("type") == "base64" and isinstance(source.get("data"), str):
        media = source.get("media_type") if isinstance(source.get("media_type"), str) else "image/png"
        return {"type": "image_url", "image_url": {"url": f"data:{media};base64,{source['data']}"}}
    if isinstance(source, dict) and source.get("type") == "url" and isinstance(source.get("url"), str):
        return {"type": "image_url", "image_url": {"url": source["url"]}}
    fail(f"{where}.source", "an object with type 'base64' (media_type, data) or 'url' (url)")


def _result_text(content: Any) -> str:
    if isinstance(content, str):
        return content
    if not isinstance(content, list):
        return ""
    texts = []
    for block in content:
        if isinstance(block, dict) and block.get("type") == "text" and isinstance(block.get("text"), str):
            texts.append(block["text"])
        elif isinstance(block, dict) and block.get("type") == "image":
            texts.append(IMAGE_PLACEHOLDER)
    return "\n".join(texts)


def _user(content: Any, where: str) -> list[dict]:
    """A user turn: its tool results become tool messages, in order, and its text and images one user message
    after them (a chat template expects the tool answers right after the assistant's calls)."""
    if isinstance(content, str):
        return [{"role": "user", "content": content}]
    out: list[dict] = []
    parts: list[dict] = []
    for i, block in enumerate(content):
        kind = block["type"]
        if kind == "text" and isinstance(block.get("text"), str):
            parts.append({"type": "text", "text": block["text"]})
        elif kind == "image":
            parts.append(_image(block, f"{where}[{i}]"))
        elif kind == "tool_result":
            if not isinstance(block.get("tool_use_id"), str):
                fail(f"{where}[{i}].tool_use_id", "a string")
            text = _result_text(block.get("content"))
            if block.get("is_error") is True:
                text = "Error: " + text
            out.append({"role": "tool", "tool_call_id": tool_id(block["tool_use_id"]), "content": text})
        # documents, search results and server-tool blocks carry nothing a local model is given
    if parts:
        if all(p["type"] == "text" for p in parts):
            out.append({"role": "user", "content": "\n\n".join(p["text"] for p in parts)})
        else:
            out.append({"role": "user", "content": parts})
    return out


def _assistant(content: Any, where: str, flavour: str) -> dict:
    if isinstance(content, str):
        return {"role": "assistant", "content": content}
    texts: list[str] = []
    thinking: list[str] = []
    calls: list[dict] = []
    for i, block in enumerate(content):
        kind = block["type"]
        if kind == "text" and isinstance(block.get("text"), str):
            texts.append(block["text"])
        elif kind == "thinking" and isinstance(block.get("thinking"), str):
            thinking.append(block["thinking"])
        elif kind == "tool_use":
            arguments = block.get("input", {})
            if not isinstance(block.get("name"), str) or not isinstance(arguments, dict):
                fail(f"{where}[{i}]", "a tool_use block with a string 'name' and an object 'input'")
            calls.append({"id": tool_id(block.get("id")), "type": "function",
                          "function": {"name": block["name"], "arguments": jsonio.dumps_str(arguments)}})
    message: dict[str, Any] = {"role": "assistant", "content": "".join(texts) if texts or not calls else None}
    if thinking and flavour != "openai":  # OpenAI proper takes no reasoning back; local servers do
        message["reasoning_content"] = "\n".join(thinking)
    if calls:
        message["tool_calls"] = calls
    return message


def _tools(body: dict) -> list[dict]:
    """Client tools as OpenAI functions; Anthropic's server tools (web search, code execution...) carry no
    ``input_schema`` and are dropped: a local model cannot run them."""
    out = []
    for tool in body.get("tools") or ():
        if not isinstance(tool.get("input_schema"), dict) or not isinstance(tool.get("name"), str):
            continue
        function: dict[str, Any] = {"name": tool["name"], "parameters": tool["input_schema"]}
        if isinstance(tool.get("description"), str):
            function["description"] = tool["description"]
        out.append({"type": "function", "function": function})
    return out


def think_of(body: dict) -> bool | str | None:
    """The request's thinking switch as Ollama's ``think`` reads it (True, False, a level, or None: not said)."""
    thinking = body.get("thinking")
    kind: Any = thinking.get("type") if isinstance(thinking, dict) else None
    if kind == "adaptive":
        effort = (body.get("output_config") or {}).get("effort")
        return EFFORT_TO_THINK.get(effort, True) if isinstance(effort, str) else True
    return THINKING_TO_THINK.get(kind) if isinstance(kind, str) else None


def to_openai(body: dict, backend_model: str, flavour: str, sanitize: bool = True) -> dict:
    """A checked Messages request as an OpenAI chat request for a backend of ``flavour``."""
    flavour = PIVOT_FLAVOUR.get(flavour, flavour)
    system = _system_texts(body.get("system"), sanitize)
    messages: list[dict] = []
    for i, message in enumerate(body["messages"]):
        role, content, where = message["role"], message["content"], f"messages[{i}].content"
        if role == "system":  # Claude Code >= 2.1.154 sends some: merged into the system prompt
            system.extend(_system_texts(content, sanitize))
        elif role == "assistant":
            messages.append(_assistant(content, where, flavour))
        else:
            messages.extend(_user(content, where))
    if system:
        messages.insert(0, {"role": "system", "content": "\n\n".join(system)})
    out: dict[str, Any] = {"model": backend_model, "messages": messages}
    out.update(oo.options_to_openai({SAMPLING_TO_OPTION[k]: v for k, v in body.items()
                                     if k in SAMPLING_TO_OPTION and v is not None}, flavour))
    tools = _tools(body)
    if tools:
        out["tools"] = tools
        choice = body.get("tool_choice")
        if isinstance(choice, dict):
            kind = choice.get("type") or "auto"
            out["tool_choice"] = ({"type": "function", "function": {"name": choice["name"]}} if kind == "tool"
                                  else TOOL_CHOICE[kind])
            if choice.get("disable_parallel_tool_use") is True:
                out["parallel_tool_calls"] = False
    out.update(oo.think_to_openai(think_of(body), flavour))
    user_id = (body.get("metadata") or {}).get("user_id")
    if isinstance(user_id, str) and user_id:
        out["user"] = user_id
    out["stream"] = bool(body.get("stream"))
    if out["stream"]:
        out["stream_options"] = {"include_usage": True}
    return out


# --- token counts ------------------------------------------------------------------------------------------

def flat_text(body: dict, sanitize: bool = True) -> str:
    """What a Messages request gives the model to read, as one text: system prompt (as ``to_openai`` leaves
    it), every turn's text, thinking, tool calls and results, and the tools' definitions (for a tokenizer, or
    the estimate)."""
    parts = _system_texts(body.get("system"), sanitize)
    for message in body.get("messages") or ():
        content = message.get("content")
        if isinstance(content, str):
            parts.append(content)
            continue
        for block in content or ():
            kind = block.get("type")
            if kind == "text" or kind == "thinking":
                value = block.get(kind)
                parts.append(value if isinstance(value, str) else "")
            elif kind == "tool_use":
                parts.append(f"{block.get('name')} {jsonio.dumps_str(block.get('input') or {})}")
            elif kind == "tool_result":
                parts.append(_result_text(block.get("content")))
    parts.extend(jsonio.dumps_str(tool) for tool in _tools(body))
    return "\n".join(p for p in parts if p)


CHARS_PER_TOKEN = 4  # the estimate Ollama's own Anthropic front uses
TOKENS_PER_MESSAGE = 4  # a chat template's role markers around each turn


def estimate_tokens(body: dict, text: str | None = None) -> int:
    """An estimate of a request's input tokens: characters / 4, plus a few per message for the template."""
    text = flat_text(body) if text is None else text
    return -(-len(text) // CHARS_PER_TOKEN) + TOKENS_PER_MESSAGE * (len(body.get("messages") or ()) + 1)
