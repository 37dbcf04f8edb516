"""Output limits clamped to what the model's context leaves (AGENT_SANITIZE): an agent that asks for more
output tokens than the context has room for after its prompt (Claude Code asks 32,000 of unknown models) is
refused by the backend, so the limit is lowered to the room left. Pure: a body in, a body and what changed out.

The prompt is not tokenised here (that costs a backend call or a tokenizer): it is estimated from the
request body's size at BYTES_PER_TOKEN, which is about right for English prose and JSON-escaped text and too
low for dense code, so a margin of MARGIN tokens is kept as well.
"""
from __future__ import annotations

from typing import Any

BYTES_PER_TOKEN = 4
MARGIN = 64  # tokens kept free beyond the estimate (the chat template's own tokens, an estimate a bit low)
# Where each dialect's body asks for an output limit: (path to the field, ...). Negative Ollama values
# (-1 no limit, -2 fill the context) are left as they are.
LIMIT_FIELDS: dict[str, tuple[tuple[str, ...], ...]] = {
    "openai": (("max_tokens",), ("max_completion_tokens",)),
    "ollama": (("options", "num_predict"),),
    "anthropic": (("max_tokens",),),  # the agent fronts' own bodies, passed through to a native backend
    "responses": (("max_output_tokens",),),
}
CONTEXT_FIELDS: dict[str, tuple[str, ...] | None] = {"openai": None, "ollama": ("options", "num_ctx"),
                                                     "anthropic": None, "responses": None}


def prompt_estimate(body_bytes: int) -> int:
    """Tokens the prompt takes, estimated from the request body's size."""
    return body_bytes // BYTES_PER_TOKEN


def _get(body: dict, path: tuple[str, ...]) -> Any:
    value: Any = body
    for name in path:
        if not isinstance(value, dict):
            return None
        value = value.get(name)
    return value


def _set(body: dict, path: tuple[str, ...], value: int) -> dict:
    """A copy of ``body`` with the field at ``path`` set (the dicts on the way copied, the rest shared)."""
    head, *rest = path
    return {**body, head: _set(body[head], tuple(rest), value) if rest else value}


def asks_for_limit(body: dict, dialect: str) -> bool:
    """Does the body set an output limit (so the model's context must be looked up)?"""
    return any(isinstance(_get(body, path), int) for path in LIMIT_FIELDS[dialect])


def clamp(body: dict, dialect: str, context_length: int | None, body_bytes: int) -> tuple[dict, dict[str, Any]]:
    """``body`` with each output limit lowered to ``context - prompt estimate - MARGIN`` when it asks for
    more, and {field: [asked, clamped]} for each change. Unchanged without a context length, or when the
    prompt alone seems to fill the context (the backend's own error says that better than a limit of 1)."""
    context_path = CONTEXT_FIELDS[dialect]
    own_context = _get(body, context_path) if context_path else None  # Ollama's num_ctx: the request's own
    context = own_context if isinstance(own_context, int) and own_context > 0 else context_length
    if not context:
        return body, {}
    room = context - prompt_estimate(body_bytes) - MARGIN
    if room < 1:
        return body, {}
    changes: dict[str, Any] = {}
    for path in LIMIT_FIELDS[dialect]:
        asked = _get(body, path)
        if isinstance(asked, int) and not isinstance(asked, bool) and asked > room:
            body = _set(body, path, room)
            changes[".".join(path)] = [asked, room]
    return body, changes
