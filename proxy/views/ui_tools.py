"""The log view's tools around the list and the exchange page: exports (an exchange or a filtered list as a
Markdown transcript, the list as CSV), comparing two exchanges side by side, and the requests still running
in this process (``draining.snapshot``: under gunicorn each worker sees its own). Routes join ``ui.bp``.
"""
from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import replace
from typing import Any

from flask import Response, abort, redirect, render_template, request, stream_with_context, url_for

from .. import draining, jsonio
from ..render import json_response
from ..services import services
from ..store import search
from . import ui_changes, ui_export, ui_render
from .ui_base import bp, render_page, store_or_off

EXPORT_MAX_ROWS = 100_000  # CSV rows per download
TRANSCRIPT_MAX = 200  # exchanges per Markdown download of a list
ANSWER_TAIL = 20_000  # characters of a running answer sent to its page per poll


def _filters() -> search.Filters:
    return search.Filters.from_args(request.args)


def _attachment(name: str) -> dict[str, str]:
    return {"Content-Disposition": f'attachment; filename="{name}"'}


@bp.route("/logs/<int:ident>/markdown")
def exchange_markdown(ident: int) -> Response:
    store = store_or_off()
    row = store.read(search.get_exchange, ident) if ident <= search.MAX_ID else None
    if row is None:
        abort(404)
    return Response(ui_export.transcript(row), content_type="text/markdown; charset=utf-8",
                    headers=_attachment(f"exchange-{ident}.md"))


def _pages(store: Any, filters: search.Filters, most: int, size: int) -> Iterator[list[dict[str, Any]]]:
    """The filtered list, newest first, a page per read (no connection held between pages)."""
    cursor, sent = "", 0
    while sent < most:
        page = store.read(search.list_exchanges, replace(filters, before=cursor, limit=min(size, most - sent)))
        if not page["items"]:
            return
        yield page["items"]
        sent += len(page["items"])
        if not page["next"]:
            return
        cursor = page["next"]


@bp.route("/export.csv")
def export_csv() -> Response:
    """The filtered list as CSV (the list's columns, newest first, at most EXPORT_MAX_ROWS)."""
    store, filters = store_or_off(), _filters()

    def lines() -> Iterator[str]:
        yield ui_export.csv_header()
        for rows in _pages(store, filters, EXPORT_MAX_ROWS, search.MAX_PAGE):
            yield ui_export.csv_rows(rows)

    return Response(stream_with_context(lines()), content_type="text/csv; charset=utf-8",
                    headers=_attachment(f"exchanges-{int(time.time())}.csv"))


@bp.route("/export.md")
def export_markdown() -> Response:
    """The filtered list as one Markdown document of transcripts (the newest TRANSCRIPT_MAX)."""
    store, filters = store_or_off(), _filters()

    def parts() -> Iterator[str]:
        for rows in _pages(store, filters, TRANSCRIPT_MAX, 20):
            for item in rows:
                row = store.read(search.get_exchange, item["id"])
                if row is not None:
                    yield ui_export.transcript(row) + "\n---\n\n"

    return Response(stream_with_context(parts()), content_type="text/markdown; charset=utf-8",
                    headers=_attachment(f"exchanges-{int(time.time())}.md"))


# --- compare ------------------------------------------------------------------------------------------

def _side(models: Any, ident: int) -> dict[str, Any] | None:
    row = search.get_exchange(models, ident)
    if row is None:
        return None
    budget = ui_render.Budget(ui_render.MARKDOWN_BUDGET // 2)
    return {"row": row, "answer": ui_render.answer_view(row["answer"], budget),
            "strip": ui_render.strip(row, rewritten=row["bodies"]["client_request"]["text"]
                                     != row["bodies"]["upstream_request"]["text"])}


def _compare(models: Any, a: int, b: int) -> dict[str, Any]:
    left, right = _side(models, a), _side(models, b)
    out: dict[str, Any] = {"left": left, "right": right}
    if left and right:
        text = lambda side: (side["row"]["answer"] or {}).get("content") or ""  # noqa: E731
        out["answer_diff"] = ui_changes.inline(text(left), text(right), trim=False)
        out["request_changes"] = ui_changes.changes(left["row"]["bodies"]["client_request"]["text"],
                                                    right["row"]["bodies"]["client_request"]["text"])
        out["rewrite"] = [ui_changes.changes(s["row"]["bodies"]["client_request"]["text"],
                                             s["row"]["bodies"]["upstream_request"]["text"])["summary"]
                          or "unchanged" for s in (left, right)]
    return out


@bp.route("/compare")
def compare() -> str:
    """Two exchanges side by side: answers (and a word diff of them), requests, rewriting, timings, tokens."""
    store = store_or_off()
    a = search.int_arg(search.text_arg(request.args, "a"), "a", 1, None)
    b = search.int_arg(search.text_arg(request.args, "b"), "b", 1, None)
    data = store.read(_compare, a, b) if a and b else {"left": None, "right": None}
    return render_page("ui/compare.html", a=a, b=b, **data)


# --- in flight ----------------------------------------------------------------------------------------

def _running_view(exchange: Any, now: float) -> dict[str, Any]:
    answer = exchange.answer
    tokens = answer.deltas if answer is not None else exchange.usage.events if exchange.usage is not None else 0
    state = "streaming" if exchange.upstream_first_byte_at is not None else "waiting for the backend"
    if exchange.queued_ms and exchange.upstream_first_byte_at is None:
        state = "queued, then waiting"
    return {"request_id": exchange.request_id, "started": exchange.started,
            "elapsed_ms": round((now - exchange.started) * 1000, 1), "endpoint": exchange.endpoint,
            "model": exchange.model_requested, "client": exchange.client, "key_name": exchange.key_name,
            "backend_name": exchange.backend_name, "stream": exchange.stream, "state": state, "tokens": tokens,
            "url": url_for("ui.running_page", rid=exchange.request_id)}


def stream_text(raw: bytes) -> str:
    """The words of a streamed answer so far, read from its chunks (OpenAI chat SSE, Ollama NDJSON, Anthropic
    and Responses events); chunks it does not know are skipped."""
    out: list[str] = []
    for line in raw.splitlines():
        line = line.strip()
        if line.startswith(b"data:"):
            line = line[5:].strip()
        if not line.startswith(b"{"):
            continue
        try:
            event = jsonio.loads(line)
        except ValueError:
            continue
        out.append(_event_text(event) if isinstance(event, dict) else "")
    return "".join(out)


def _event_text(event: dict) -> str:
    choices = event.get("choices")
    if isinstance(choices, list) and choices and isinstance(choices[0], dict):
        delta = choices[0].get("delta") or {}
        return str(delta.get("content") or "") if isinstance(delta, dict) else ""
    message = event.get("message")
    if isinstance(message, dict):  # Ollama chat
        return str(message.get("content") or "")
    if isinstance(event.get("response"), str):  # Ollama generate
        return str(event["response"])
    delta = event.get("delta")
    if isinstance(delta, dict) and delta.get("type") == "text_delta":  # Anthropic
        return str(delta.get("text") or "")
    if event.get("type") == "response.output_text.delta" and isinstance(delta, str):  # Responses
        return delta
    return ""


def _running() -> list[Any]:
    return draining.snapshot(services().sinks)


@bp.route("/api/running")
def api_running() -> Response:
    """The exchanges running in this process now, newest first (memory only: no database read)."""
    now = time.time()
    return json_response({"items": [_running_view(e, now) for e in reversed(_running())]})


def _answer_so_far(exchange: Any) -> str:
    answer = exchange.answer
    if answer is not None:  # a translated stream assembles its answer as it goes
        return "".join(answer.content)[-ANSWER_TAIL:]
    body = exchange.upstream_response  # a passthrough: read from the log's copy (at most LOG_MAX_BODY_BYTES)
    return stream_text(body.value())[-ANSWER_TAIL:] if body.size else ""


@bp.route("/api/running/<rid>")
def api_running_one(rid: str) -> Response:
    """One running exchange with its answer so far; once it has ended, where its log entry is (when written)."""
    now = time.time()
    for exchange in _running():
        if exchange.request_id == rid:
            return json_response({**_running_view(exchange, now), "done": False, "content": _answer_so_far(exchange),
                                  "thinking": "".join(exchange.answer.thinking)[-ANSWER_TAIL:]
                                  if exchange.answer is not None else ""})
    store = services().extras.get("log_store")
    ident = store.read(search.find_request, rid) if store is not None and len(rid) <= 128 else None
    return json_response({"request_id": rid, "done": True,
                          "log_url": url_for("ui.exchange", ident=ident) if ident else None})


@bp.route("/running/<rid>")
def running_page(rid: str) -> Any:
    """A request still running: its answer grows on the page (ui.js polls) until it is in the log."""
    now = time.time()
    for exchange in _running():
        if exchange.request_id == rid:
            return render_page("ui/running.html", item=_running_view(exchange, now), content=_answer_so_far(exchange))
    store = services().extras.get("log_store")
    ident = store.read(search.find_request, rid) if store is not None and len(rid) <= 128 else None
    if ident:
        return redirect(url_for("ui.exchange", ident=ident))
    return Response(render_template("ui/denied.html", status=404, title="Not running",
                                    message=f"Request {rid} is not running in this process and is not in the log "
                                            "(yet). Under gunicorn each worker knows only its own requests."), 404)
