"""What the exchange page shows, as plain data for the templates (which escape every string, except the
HTML ``ui_markdown`` makes): the conversation of ``ui_convo`` with markdown rendered and the turns to show
open chosen, the assembled answer, the summary strip, and ``pretty`` for a raw body.
"""
from __future__ import annotations

from typing import Any

from .. import jsonio
from . import ui_markdown
from .ui_convo import call, gist, pretty_json, size

MARKDOWN_BUDGET = 120_000  # characters of markdown rendered per page (the answer first, then the newest turns)
MARKDOWN_MAX = 40_000  # a longer text is shown raw
OPEN_MAX = 3_000  # a longer turn starts collapsed
OPEN_LAST = 2  # the newest turns start open (when short); all others, the system prompt first, collapsed


def pretty(text: str) -> str:
    """A body for reading: indented when it is one JSON document, as received otherwise (streams)."""
    stripped = text.strip()
    if not stripped or stripped[0] not in "{[":
        return text
    try:
        return pretty_json(jsonio.loads(stripped))
    except ValueError:
        return text


class Budget:
    """Markdown rendering is the page's costliest step: a fixed number of characters per page."""

    def __init__(self, left: int = MARKDOWN_BUDGET):
        self.left = left

    def render(self, block: dict[str, Any]) -> None:
        words = block.get("text") or ""
        if block["kind"] not in ("text", "thinking") or len(words) > MARKDOWN_MAX or len(words) > self.left:
            return
        self.left -= len(words)
        block["html"] = ui_markdown.render(words)


def answer_view(answer: dict | None, budget: Budget) -> dict[str, Any] | None:
    if not answer:
        return None
    view: dict[str, Any] = {"content": answer.get("content") or "", "thinking": answer.get("thinking") or "",
            "calls": [_answer_call(c) for c in answer.get("tool_calls") or ()],
            "finish_reason": answer.get("finish_reason") or "", "error": answer.get("error") or ""}
    view["blocks"] = [{"kind": "text", "text": view["content"]}] if view["content"] else []
    for block in view["blocks"]:
        budget.render(block)
    return view


def _answer_call(tool_call: Any) -> dict[str, Any]:
    if not isinstance(tool_call, dict):
        return call("?", "", tool_call)
    function = tool_call["function"] if isinstance(tool_call.get("function"), dict) else tool_call
    return call(function.get("name"), tool_call.get("id"), function.get("arguments", function.get("input")))


def prepare(convo: dict[str, Any] | None, budget: Budget) -> dict[str, Any] | None:
    """Mark each turn open or collapsed with its one-line gist, and render markdown newest first."""
    if convo is None:
        return None
    turns = convo["turns"]
    for position, one in enumerate(turns):
        one["gist"] = gist(one["blocks"])
        recent = position >= len(turns) - OPEN_LAST
        one["open"] = recent and one["role"] != "system" and size(one["blocks"]) <= OPEN_MAX
    for one in reversed(turns):
        for block in one["blocks"]:
            budget.render(block)
    return convo


def strip(row: dict[str, Any], rewritten: bool) -> list[tuple[str, str, str]]:
    """The summary strip under the title: (id, label, value) with empty values left out."""
    def ms(value: float | None) -> str:
        if value is None:
            return ""
        return f"{value / 1000:.2f} s" if value >= 1000 else f"{value:.0f} ms"

    model = row.get("model") or ""
    sent = row.get("upstream_model") or ""
    tokens = ""
    if row.get("prompt_tokens") is not None or row.get("completion_tokens") is not None:
        tokens = f"{row.get('prompt_tokens') or 0} in / {row.get('completion_tokens') or 0} out" + \
                 (" (estimated)" if row.get("tokens_estimated") else "")
    status = f"{row['status'] if row.get('status') is not None else '–'} · {row.get('outcome') or ''}"
    marks = [m for m, on in (("cached", row.get("cached")), ("replay", row.get("replay_of")),
                             ("rewritten", rewritten), ("stream", row.get("stream"))) if on]
    attempts = len(row.get("attempts") or ())
    items = [("s-model", "model", model + (f" → {sent}" if sent and sent != model else "")),
             ("s-backend", "backend", row.get("backend_name") or ""),
             ("s-status", "status", status), ("s-tokens", "tokens", tokens),
             ("s-ttft", "first token", ms(row.get("ttfc_ms"))), ("s-duration", "duration", ms(row.get("duration_ms"))),
             ("s-queued", "queued", ms(row.get("queued_ms"))),
             ("s-attempts", "attempts", str(attempts + 1) if attempts else ""),
             ("s-marks", "marks", ", ".join(marks))]
    return [item for item in items if item[2]]
