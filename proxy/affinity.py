"""What keeps one conversation on one backend (BACKENDS_FILE's ``affinity``): the session a client names
(headers, the body's ``user``) or, when it names none, its first messages. Only the key is made here; which
backend it goes to is ``routing.sticky``'s.
"""
from __future__ import annotations

import hashlib
from typing import Any

from . import jsonio

# Headers naming a conversation, first found wins. `session_id` (Codex) has an underscore, which WSGI servers
# drop from the environ: ours (proxy.server.Handler, `python wsgi.py`) hands it in under SESSION_ID_ENVIRON;
# gunicorn drops it (its header_map).
SESSION_HEADERS = ("X-Session-ID", "X-Claude-Code-Session-Id")
SESSION_ID_ENVIRON = "llm_proxy.session_id"
SYSTEM_ROLES = frozenset({"system", "developer"})
HASHED_END = 8192  # bytes of each end of a long first-messages key that are hashed (a coding agent's prompt)


def session_of(body: Any, headers: Any, environ: dict) -> str | None:
    """The conversation's key: X-Session-ID, X-Claude-Code-Session-Id or `session_id` (headers), else the body's
    ``user``, else a hash of its model, system prompt and first user message (``first_messages``)."""
    for name in SESSION_HEADERS:
        if value := headers.get(name):
            return f"h:{value}"
    if value := environ.get(SESSION_ID_ENVIRON):
        return f"h:{value}"
    if not isinstance(body, dict):
        return None
    user = body.get("user")
    if isinstance(user, str) and user:
        return f"h:{user}"
    return first_messages(body)


def first_messages(body: dict) -> str | None:
    """A hash of what every request of one conversation repeats: the model, the system prompt (the body's
    ``system``/``instructions`` or the system and developer messages before the first user one) and the first
    user message (of a long one, its ends and length). None for a body without messages (completions,
    embeddings)."""
    messages = body.get("messages")
    if messages is None:
        messages = body.get("input")  # the Responses API's items (or its one user text)
        if isinstance(messages, str):
            messages = [{"role": "user", "content": messages}]
    if not isinstance(messages, list):
        return None
    system: list[Any] = [body.get(k) for k in ("system", "instructions") if body.get(k) is not None]
    first_user: Any = None
    for message in messages:
        if not isinstance(message, dict):
            continue
        role = message.get("role")
        if role == "user":
            first_user = message.get("content")
            break
        if role in SYSTEM_ROLES:
            system.append(message.get("content"))
    if first_user is None:
        return None
    try:
        raw = jsonio.dumps([body.get("model"), system, first_user])
    except (TypeError, ValueError):
        return None
    if len(raw) > 2 * HASHED_END:  # its two ends and its length: two conversations alike there share a backend
        raw = raw[:HASHED_END] + raw[-HASHED_END:] + str(len(raw)).encode()
    return "m:" + hashlib.blake2b(raw, digest_size=12).hexdigest()
