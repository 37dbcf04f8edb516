"""What the exchange page shows, as plain data for the templates (which escape every string).

``conversation`` reads a client request of either dialect — messages and roles, images, tools
offered, tool calls, tool results, thinking — and ``answer_view`` the assembled answer. ``pretty``
formats a raw body; ``side_by_side`` lines up the client request against the upstream request.
Nothing here builds HTML.
"""
from __future__ import annotations

import base64
import binascii
import difflib
import re
from typing import Any

import orjson

from .. import jsonio

IMAGE_MIMES = {"image/png", "image/jpeg", "image/gif", "image/webp"}
MAGIC = ((b"\x89PNG", "image/png"), (b"\xff\xd8\xff", "image/jpeg"), (b"GIF8", "image/gif"), (b"RIFF", "image/webp"))
DATA_URI = re.compile(r"^data:(image/[a-z0-9.+-]+);base64,([A-Za-z0-9+/=\s]*)$", re.I)
HIDDEN_PARAMS = frozenset({"messages", "tools", "prompt", "system", "images", "suffix", "input", "model", "functions"})
DIFF_MAX_LINES = 5000


def pretty_json(value: Any) -> str:
    try:
        return orjson.dumps(value, option=orjson.OPT_INDENT_2).decode()
    except TypeError:
        return str(value)


def pretty(text: str) -> str:
    """A body for reading: indented when it is one JSON document, as received otherwise (streams)."""
    stripped = text.strip()
    if not stripped or stripped[0] not in "{[":
        return text
    try:
        return pretty_json(jsonio.loads(stripped))
    except ValueError:
        return text


def _image(source: Any) -> dict[str, str]:
    """A thumbnail source (data: URI of a known image type) or a note saying what it was."""
    if not isinstance(source, str):
        return {"note": "image"}
    match = DATA_URI.match(source[:64] + re.sub(r"\s", "", source[64:]) if len(source) > 64 else source)
    if match:
        mime = match.group(1).lower()
        if mime in IMAGE_MIMES:
            return {"src": f"data:{mime};base64,{match.group(2)}"}
        return {"note": f"image ({mime})"}
    if source.startswith(("http://", "https://")):
        return {"note": "image at " + source[:300]}
    try:
        head = base64.b64decode(source[:64] + "=" * (-len(source[:64]) % 4), validate=False)
    except (binascii.Error, ValueError):
        return {"note": "image (unreadable)"}
    for magic, mime in MAGIC:
        if head.startswith(magic):
            return {"src": f"data:{mime};base64,{source}"}
    return {"note": "image (unknown type)"}


def _parts(content: Any) -> list[dict[str, Any]]:
    if content is None:
        return []
    if isinstance(content, str):
        return [{"text": content}] if content else []
    if isinstance(content, list):
        out: list[dict[str, Any]] = []
        for part in content:
            if isinstance(part, str):
                out.append({"text": part})
            elif isinstance(part, dict):
                if isinstance(part.get("text"), str):
                    out.append({"text": part["text"]})
                elif "image_url" in part:
                    url = part["image_url"]
                    out.append({"image": _image(url.get("url") if isinstance(url, dict) else url)})
                else:
                    out.append({"text": pretty_json(part)})
        return out
    return [{"text": pretty_json(content)}]


def tool_call_view(call: Any) -> dict[str, str]:
    """OpenAI ({function: {name, arguments: str}}) or Ollama ({function: {name, arguments: {}}}) alike."""
    if not isinstance(call, dict):
        return {"name": "?", "arguments": pretty_json(call), "id": ""}
    function: dict = call["function"] if isinstance(call.get("function"), dict) else call
    arguments = function.get("arguments")
    if isinstance(arguments, str):
        try:
            arguments = jsonio.loads(arguments) if arguments.strip() else {}
        except ValueError:
            pass
    shown = arguments if isinstance(arguments, str) else pretty_json(arguments)
    return {"name": str(function.get("name") or "?"), "arguments": shown, "id": str(call.get("id") or "")}


def _message(message: Any) -> dict[str, Any]:
    if not isinstance(message, dict):
        return {"role": "?", "parts": [{"text": pretty_json(message)}], "tool_calls": []}
    parts = _parts(message.get("content"))
    for image in message.get("images") or ():
        parts.append({"image": _image(image)})
    thinking = message.get("thinking") or message.get("reasoning_content") or message.get("reasoning")
    return {"role": str(message.get("role") or "?"), "parts": parts,
            "tool_calls": [tool_call_view(c) for c in message.get("tool_calls") or () if c],
            "tool_call_id": message.get("tool_call_id") or "", "name": message.get("tool_name") or
            message.get("name") or "", "thinking": thinking if isinstance(thinking, str) else ""}


def _tool(tool: Any) -> dict[str, str]:
    function = tool.get("function") if isinstance(tool, dict) and isinstance(tool.get("function"), dict) else tool
    if not isinstance(function, dict):
        return {"name": "?", "description": "", "parameters": pretty_json(tool)}
    return {"name": str(function.get("name") or "?"), "description": str(function.get("description") or ""),
            "parameters": pretty_json(function.get("parameters") or {})}


def conversation(text: str) -> dict[str, Any] | None:
    """The client request as a person reads it, or None when it is not a JSON object."""
    try:
        body = jsonio.loads(text) if text.strip().startswith("{") else None
    except ValueError:
        body = None
    if not isinstance(body, dict):
        return None
    messages = []
    if isinstance(body.get("system"), str) and body["system"]:
        messages.append({"role": "system", "parts": [{"text": body["system"]}], "tool_calls": []})
    if isinstance(body.get("messages"), list):
        messages.extend(_message(m) for m in body["messages"])
    prompt_parts = _parts(body.get("prompt")) if body.get("prompt") is not None else []
    for image in body.get("images") or ():
        prompt_parts.append({"image": _image(image)})
    if prompt_parts:
        messages.append({"role": "prompt", "parts": prompt_parts, "tool_calls": []})
    if body.get("suffix"):
        messages.append({"role": "suffix", "parts": _parts(body["suffix"]), "tool_calls": []})
    if body.get("input") is not None:
        messages.append({"role": "input", "parts": _parts(body["input"]), "tool_calls": []})
    tools = [_tool(t) for t in body.get("tools") or body.get("functions") or () if t]
    params = {k: v for k, v in body.items() if k not in HIDDEN_PARAMS}
    return {"messages": messages, "tools": tools, "params": pretty_json(params) if params else ""}


def answer_view(answer: dict | None) -> dict[str, Any] | None:
    if not answer:
        return None
    return {"content": answer.get("content") or "", "thinking": answer.get("thinking") or "",
            "tool_calls": [tool_call_view(c) for c in answer.get("tool_calls") or ()],
            "finish_reason": answer.get("finish_reason") or "", "error": answer.get("error") or ""}


def side_by_side(left: str, right: str, truncated: bool = False) -> dict[str, Any]:
    """Rows (kind, left line no, left text, right line no, right text); kind: same, change, add, del.
    ``truncated``: a side is a cut copy, so equal text does not mean the request went up unchanged."""
    a, b = pretty(left).splitlines(), pretty(right).splitlines()
    if len(a) > DIFF_MAX_LINES or len(b) > DIFF_MAX_LINES:
        return {"rows": [], "too_large": True, "changed": left != right, "truncated": truncated}
    rows: list[tuple] = []
    for tag, i1, i2, j1, j2 in difflib.SequenceMatcher(None, a, b, autojunk=False).get_opcodes():
        if tag == "equal":
            rows.extend(("same", i + 1, a[i], j + 1, b[j]) for i, j in zip(range(i1, i2), range(j1, j2), strict=False))
            continue
        left_lines, right_lines = list(range(i1, i2)), list(range(j1, j2))
        for k in range(max(len(left_lines), len(right_lines))):
            li = left_lines[k] if k < len(left_lines) else None
            rj = right_lines[k] if k < len(right_lines) else None
            kind = "change" if li is not None and rj is not None else ("del" if li is not None else "add")
            rows.append((kind, li + 1 if li is not None else "", a[li] if li is not None else "",
                         rj + 1 if rj is not None else "", b[rj] if rj is not None else ""))
    return {"rows": rows, "too_large": False, "changed": any(r[0] != "same" for r in rows), "truncated": truncated}
