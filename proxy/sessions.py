"""Which conversation (agent session) a request belongs to: the client's own session header, else a short
fingerprint of the request's model, system prompt and first user message. Pure: headers and a parsed body
in, an id out; no Flask, no clock.
"""
from __future__ import annotations

import hashlib
from collections.abc import Mapping
from typing import Any

from . import jsonio

# Where each client puts its session id, in the order they are believed, as WSGI environ keys.
# `session_id` (Codex) has an underscore, which every WSGI server drops from the environ (so that
# X_Forwarded_For cannot pass for X-Forwarded-For): the proxy's own server hands it in under RAW_SESSION_ID.
RAW_SESSION_ID = "llm_proxy.session_id_header"
HEADER_KEYS = (
    ("HTTP_X_CLAUDE_CODE_SESSION_ID", "X-Claude-Code-Session-Id"),  # Claude Code >= 2.1.86
    (RAW_SESSION_ID, "session_id"),  # Codex CLI
    ("HTTP_X_SESSION_ID", "X-Session-ID"),  # Olla's inspector and others
)
MAX_ID = 128  # the log column's size
FINGERPRINT_PREFIX = "fp-"
FINGERPRINT_HEX = 16
# Claude Code puts a per-request nonce in the system prompt (agent-fronts.md §0): not part of a fingerprint.
NONCE_PREFIX = "x-anthropic-billing-header:"
SYSTEM_ROLES = ("system", "developer")


def from_headers(environ: Mapping[str, Any]) -> str | None:
    """The client's session id from its headers (the first of HEADER_KEYS present), printable ASCII only and
    at most MAX_ID characters; None when there is none."""
    for key, _ in HEADER_KEYS:
        value = environ.get(key)
        if isinstance(value, str):
            cleaned = "".join(ch for ch in value.strip() if "!" <= ch <= "~")[:MAX_ID]
            if cleaned:
                return cleaned
    return None


def _text(content: Any) -> str:
    """The text of a message's content: a string, or the text of its parts (OpenAI, Anthropic, Responses)."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "\n".join(_text(part) for part in content if not _is_nonce(part))
    if isinstance(content, dict):
        for key in ("text", "content"):
            if isinstance(content.get(key), (str, list)):
                return _text(content[key])
    return ""


def _is_nonce(part: Any) -> bool:
    text = part.get("text") if isinstance(part, dict) else part
    return isinstance(text, str) and text.lstrip().lower().startswith(NONCE_PREFIX)


def _conversation(body: dict) -> tuple[str, str] | None:
    """(system prompt, first user message) of a chat body (``messages``) or a Responses body
    (``instructions`` + ``input``); None when the body has neither."""
    if isinstance(body.get("messages"), list):
        items, system = body["messages"], [_text(body.get("system"))]  # Anthropic's is top level
    elif _responses_input(body):
        items, system = body["input"], [_text(body.get("instructions"))]
        if isinstance(items, str):
            items = [{"role": "user", "content": items}]
    else:
        return None
    first_user = ""
    for item in items if isinstance(items, list) else ():
        if not isinstance(item, dict):
            continue
        role = item.get("role")
        if role in SYSTEM_ROLES:
            system.append(_text(item.get("content")))
        elif role == "user":
            first_user = _text(item.get("content"))
            break
    return "\n".join(s for s in system if s), first_user


def _responses_input(body: dict) -> bool:
    """A Responses body: ``instructions`` with an ``input``, or an ``input`` list of items (an embeddings
    body's ``input`` is text or a list of texts or token ids)."""
    items = body.get("input")
    if "instructions" in body:
        return isinstance(items, (str, list))
    return isinstance(items, list) and any(isinstance(item, dict) for item in items)


def fingerprint(body: Any) -> str | None:
    """A short hash of the model, the system prompt and the first user message: the same for every turn of
    one conversation (they repeat its start), different for another conversation unless it starts alike.
    None for bodies without a conversation (embeddings, plain completions)."""
    if not isinstance(body, dict):
        return None
    found = _conversation(body)
    if found is None:
        return None
    model = body.get("model") if isinstance(body.get("model"), str) else ""
    digest = hashlib.sha256(jsonio.dumps([model, *found])).hexdigest()
    return FINGERPRINT_PREFIX + digest[:FINGERPRINT_HEX]

