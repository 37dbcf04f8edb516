"""A client request of any front (OpenAI chat, Ollama, Anthropic Messages, OpenAI Responses) as a list of
numbered turns made of blocks — text, image, thinking, tool call, tool result — plus the tools offered and
the other parameters. Pure: JSON in, plain data out; nothing here renders HTML or reads the database.
"""
from __future__ import annotations

import base64
import binascii
import re
from typing import Any

import orjson

from .. import jsonio

IMAGE_MIMES = {"image/png", "image/jpeg", "image/gif", "image/webp"}
MAGIC = ((b"\x89PNG", "image/png"), (b"\xff\xd8\xff", "image/jpeg"), (b"GIF8", "image/gif"), (b"RIFF", "image/webp"))
DATA_URI = re.compile(r"^data:(image/[a-z0-9.+-]+);base64,([A-Za-z0-9+/=\s]*)$", re.I)
CONVERSATION_FIELDS = frozenset({"messages", "tools", "prompt", "system", "images", "suffix", "input", "model",
                                 "functions", "instructions"})
TEXT_PARTS = frozenset({"text", "input_text", "output_text", "summary_text", "reasoning_text", "refusal"})
PATCH_TOOLS = frozenset({"apply_patch"})


def pretty_json(value: Any) -> str:
    try:
        return orjson.dumps(value, option=orjson.OPT_INDENT_2).decode()
    except TypeError:
        return str(value)


def json_or_text(value: Any) -> str:
    """A tool argument or result for reading: JSON (also JSON inside a string) indented, other text as is."""
    if isinstance(value, str):
        stripped = value.strip()
        if stripped[:1] in ("{", "[") and len(stripped) < 1_000_000:
            try:
                return pretty_json(jsonio.loads(stripped))
            except ValueError:
                return value
        return value
    return pretty_json(value)


def image(source: Any, mime: str = "") -> dict[str, str]:
    """A thumbnail source (data: URI of a known image type) or a note saying what it was."""
    if not isinstance(source, str):
        return {"kind": "image", "note": "image"}
    if mime and not source.startswith("data:"):
        source = f"data:{mime};base64,{source}"
    match = DATA_URI.match(source[:64] + re.sub(r"\s", "", source[64:]) if len(source) > 64 else source)
    if match:
        kind = match.group(1).lower()
        if kind in IMAGE_MIMES:
            return {"kind": "image", "src": f"data:{kind};base64,{match.group(2)}"}
        return {"kind": "image", "note": f"image ({kind})"}
    if source.startswith(("http://", "https://")):
        return {"kind": "image", "note": "image at " + source[:300]}
    try:
        head = base64.b64decode(source[:64] + "=" * (-len(source[:64]) % 4), validate=False)
    except (binascii.Error, ValueError):
        return {"kind": "image", "note": "image (unreadable)"}
    for magic, kind in MAGIC:
        if head.startswith(magic):
            compact = re.sub(r"\s", "", source)
            return {"kind": "image", "src": f"data:{kind};base64,{compact}"}
    return {"kind": "image", "note": "image (unknown type)"}


def text(value: str) -> dict[str, str]:
    return {"kind": "text", "text": value}


def call(name: Any, ident: Any, arguments: Any) -> dict[str, Any]:
    """A tool call; an ``apply_patch`` input (raw, or {"input": patch}) is kept as patch lines to show as a diff."""
    if isinstance(arguments, str) and arguments.strip()[:1] in ("{", "["):
        try:
            arguments = jsonio.loads(arguments)
        except ValueError:
            pass
    name = str(name or "?")
    patch = arguments.get("input") if isinstance(arguments, dict) and name in PATCH_TOOLS else arguments
    block: dict[str, Any] = {"kind": "call", "name": name, "id": str(ident or ""),
                             "arguments": arguments if isinstance(arguments, str) else pretty_json(arguments)}
    if name in PATCH_TOOLS and isinstance(patch, str):
        block["patch"] = patch_lines(patch)
    return block


def patch_lines(patch: str) -> list[tuple[str, str]]:
    """(kind, line) with kind add, del, head (file and hunk markers) or ctx."""
    out = []
    for line in patch.splitlines():
        if line.startswith("***") or line.startswith("@@"):
            out.append(("head", line))
        elif line.startswith("+"):
            out.append(("add", line))
        elif line.startswith("-"):
            out.append(("del", line))
        else:
            out.append(("ctx", line))
    return out


def result(ident: Any, content: Any, is_error: bool = False) -> dict[str, Any]:
    if isinstance(content, list):  # Anthropic blocks or Responses input_text parts
        pieces = [p.get("text") if isinstance(p, dict) and isinstance(p.get("text"), str) else pretty_json(p)
                  for p in content]
        content = "\n".join(str(p) for p in pieces)
    return {"kind": "result", "id": str(ident or ""), "text": json_or_text(content if content is not None else ""),
            "is_error": bool(is_error)}


def part_blocks(content: Any) -> list[dict[str, Any]]:
    """Message content of any front: a string, or a list of parts/blocks."""
    if content is None:
        return []
    if isinstance(content, str):
        return [text(content)] if content else []
    if not isinstance(content, list):
        return [{"kind": "json", "text": pretty_json(content)}]
    out: list[dict[str, Any]] = []
    for part in content:
        if isinstance(part, str):
            out.append(text(part))
        elif isinstance(part, dict):
            out.extend(_part(part))
        else:
            out.append({"kind": "json", "text": pretty_json(part)})
    return out


def _part(part: dict) -> list[dict[str, Any]]:
    kind = part.get("type")
    if kind in ("thinking", "redacted_thinking"):
        return [{"kind": "thinking", "text": str(part.get("thinking") or "(redacted)")}]
    if kind == "tool_use" or kind == "server_tool_use":
        return [call(part.get("name"), part.get("id"), part.get("input"))]
    if kind == "tool_result":
        return [result(part.get("tool_use_id"), part.get("content"), bool(part.get("is_error")))]
    if kind == "image" and isinstance(part.get("source"), dict):  # Anthropic
        source = part["source"]
        if source.get("type") == "base64":
            return [image(source.get("data"), str(source.get("media_type") or ""))]
        return [image(source.get("url"))]
    if "image_url" in part:  # OpenAI chat ({"url"}) and Responses (a string)
        url = part["image_url"]
        return [image(url.get("url") if isinstance(url, dict) else url)]
    if isinstance(part.get("text"), str) and (kind in TEXT_PARTS or kind is None):
        return [text(part["text"])]
    return [{"kind": "json", "text": pretty_json(part)}]


def turn(role: Any, blocks: list[dict[str, Any]], **extra: Any) -> dict[str, Any]:
    return {"role": str(role or "?"), "blocks": blocks, "name": str(extra.get("name") or ""),
            "tool_call_id": str(extra.get("tool_call_id") or "")}


def chat_message(message: Any) -> dict[str, Any]:
    """An OpenAI chat, Ollama or Anthropic message."""
    if not isinstance(message, dict):
        return turn("?", [{"kind": "json", "text": pretty_json(message)}])
    blocks: list[dict[str, Any]] = []
    thinking = message.get("thinking") or message.get("reasoning_content") or message.get("reasoning")
    if isinstance(thinking, str) and thinking:
        blocks.append({"kind": "thinking", "text": thinking})
    role = message.get("role")
    if role == "tool" and message.get("tool_call_id") is not None:
        blocks.append(result(message.get("tool_call_id"), message.get("content")))
    else:
        blocks.extend(part_blocks(message.get("content")))
    for image_data in message.get("images") or ():
        blocks.append(image(image_data))
    for tool_call in message.get("tool_calls") or ():
        if isinstance(tool_call, dict):
            function = tool_call["function"] if isinstance(tool_call.get("function"), dict) else tool_call
            blocks.append(call(function.get("name"), tool_call.get("id"), function.get("arguments")))
    return turn(role, blocks, name=message.get("tool_name") or message.get("name"),
                tool_call_id=message.get("tool_call_id"))


def response_item(item: Any) -> dict[str, Any]:
    """One item of a Responses ``input``; consecutive items of one role are merged by ``responses_turns``."""
    if not isinstance(item, dict):
        return turn("user", part_blocks(item))
    kind = item.get("type", "message" if "role" in item else None)
    if kind == "message":
        return turn(item.get("role"), part_blocks(item.get("content")))
    if kind in ("function_call", "custom_tool_call"):
        return turn("assistant", [call(item.get("name"), item.get("call_id"),
                                       item.get("arguments") if kind == "function_call" else item.get("input"))])
    if kind in ("function_call_output", "custom_tool_call_output", "local_shell_call_output"):
        return turn("tool", [result(item.get("call_id"), item.get("output"))], tool_call_id=item.get("call_id"))
    if kind == "reasoning":
        parts = [*(item.get("summary") or ()), *(item.get("content") or ())]
        words = "\n".join(p.get("text", "") for p in parts if isinstance(p, dict)) or "(encrypted)"
        return turn("assistant", [{"kind": "thinking", "text": words}])
    if kind == "local_shell_call":
        return turn("assistant", [call("local_shell", item.get("call_id"), item.get("action"))])
    return turn(str(kind or "?"), [{"kind": "json", "text": pretty_json(item)}])


def responses_turns(items: list) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for item in items:
        one = response_item(item)
        mergeable = one["role"] == "assistant" and out and out[-1]["role"] == "assistant" \
            and not (isinstance(item, dict) and item.get("type") == "message")
        if mergeable:
            out[-1]["blocks"].extend(one["blocks"])
        else:
            out.append(one)
    return out


def tool(spec: Any) -> dict[str, str]:
    """A tool offered: OpenAI nested, Responses flat, Anthropic (input_schema), custom (grammar) or hosted."""
    if not isinstance(spec, dict):
        return {"name": "?", "description": "", "parameters": pretty_json(spec)}
    function = spec["function"] if isinstance(spec.get("function"), dict) else spec
    schema = function.get("parameters") or function.get("input_schema") or function.get("format") or {}
    name = function.get("name") or spec.get("type") or "?"
    return {"name": str(name), "description": str(function.get("description") or ""),
            "parameters": pretty_json(schema)}


def normalise(body: Any) -> dict[str, Any] | None:
    """{"turns", "tools", "params"} of a client request body (parsed JSON); None when it is not an object.
    Turns are numbered from 1 in order; a system prompt (any front's) is the first turn."""
    if not isinstance(body, dict):
        return None
    turns: list[dict[str, Any]] = []
    system = body.get("system")
    if isinstance(system, str) and system:
        turns.append(turn("system", [text(system)]))
    elif isinstance(system, list) and system:  # Anthropic system blocks
        turns.append(turn("system", part_blocks(system)))
    if isinstance(body.get("instructions"), str) and body["instructions"]:
        turns.append(turn("system", [text(body["instructions"])]))
    if isinstance(body.get("messages"), list):
        turns.extend(chat_message(m) for m in body["messages"])
    prompt = part_blocks(body.get("prompt")) if body.get("prompt") is not None else []
    prompt.extend(image(i) for i in body.get("images") or ())
    if prompt:
        turns.append(turn("prompt", prompt))
    if body.get("suffix"):
        turns.append(turn("suffix", part_blocks(body["suffix"])))
    given = body.get("input")
    if isinstance(given, list) and any(isinstance(i, dict) and ("type" in i or "role" in i) for i in given):
        turns.extend(responses_turns(given))
    elif isinstance(given, str) and "instructions" in body or isinstance(given, str) and "max_output_tokens" in body:
        turns.append(turn("user", [text(given)]))
    elif given is not None:
        turns.append(turn("input", part_blocks(given) if isinstance(given, (str, list)) else
                          [{"kind": "json", "text": pretty_json(given)}]))
    for n, one in enumerate(turns, 1):
        one["n"] = n
    tools = [tool(t) for t in body.get("tools") or body.get("functions") or () if t]
    params = {k: v for k, v in body.items() if k not in CONVERSATION_FIELDS}
    return {"turns": turns, "tools": tools, "params": pretty_json(params) if params else ""}


def parse_request(raw: str) -> dict[str, Any] | None:
    """``normalise`` of a stored request body (text); None when it is not a JSON object."""
    try:
        body = jsonio.loads(raw) if raw.strip().startswith("{") else None
    except ValueError:
        return None
    return normalise(body)


def gist(blocks: list[dict[str, Any]], width: int = 120) -> str:
    """A turn in one line: its first words, or what kind of blocks it holds."""
    for block in blocks:
        if block["kind"] in ("text", "result") and block["text"].strip():
            line = " ".join(block["text"].split())
            return line if len(line) <= width else line[:width - 1] + "…"
    kinds = [b["name"] + "()" if b["kind"] == "call" else b["kind"] for b in blocks]
    return ", ".join(kinds)[:width]


def size(blocks: list[dict[str, Any]]) -> int:
    return sum(len(b.get("text") or b.get("arguments") or "") for b in blocks)
