"""What keeps one conversation on one backend (BACKENDS_FILE's ``affinity``): the session a client names
(its session headers, read by ``sessions``, or the body's ``user``) or, when it names none, the fingerprint of
its first messages (``sessions.fingerprint``, also the log's session id). Only the key is made here; which
backend it goes to is ``routing.sticky``'s.
"""
from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from . import sessions


def session_of(body: Any, environ: Mapping[str, Any], fingerprint: str | None = None) -> str | None:
    """The conversation's key: X-Claude-Code-Session-Id, `session_id` or X-Session-ID (headers), else the body's
    ``user``, else ``fingerprint`` (the exchange's, when the caller has it) or the body's own."""
    if value := sessions.from_headers(environ):
        return f"h:{value}"
    user = body.get("user") if isinstance(body, dict) else None
    if isinstance(user, str) and user:
        return f"h:{user}"
    found = fingerprint if fingerprint is not None else sessions.fingerprint(body)
    return f"m:{found}" if found else None
