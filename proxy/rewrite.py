"""Request rewrites applied on the way upstream: text injection (e.g. `/nothink`). Pure."""
from __future__ import annotations

from typing import Any


def _append(content: Any, text: str) -> tuple[Any, bool]:
    if content is None or isinstance(content, str):
        current = content or ""
        if text in current:
            return content, False
        return (f"{current} {text}" if current else text), True
    if isinstance(content, list):
        texts = [p for p in content if isinstance(p, dict) and p.get("type") == "text"]
        if any(text in str(p.get("text", "")) for p in texts):
            return content, False
        parts = [dict(p) if isinstance(p, dict) else p for p in content]
        for part in reversed(parts):
            if isinstance(part, dict) and part.get("type") == "text":
                part["text"] = f"{part.get('text', '')} {text}".lstrip()
                return parts, True
        return parts + [{"type": "text", "text": text}], True
    return content, False


def inject_text(messages: list, text: str, mode: str) -> tuple[list, bool]:
    """Append `text` with one space to the first or last user message; a copy, unchanged if already there."""
    if not text or not messages:
        return messages, False
    indices = [i for i, m in enumerate(messages) if isinstance(m, dict) and m.get("role") == "user"]
    if not indices:
        return messages, False
    index = indices[0] if mode == "first" else indices[-1]
    content, changed = _append(messages[index].get("content"), text)
    if not changed:
        return messages, False
    out = list(messages)
    out[index] = {**messages[index], "content": content}
    return out, True
