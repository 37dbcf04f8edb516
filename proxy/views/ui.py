"""The log view: `/ui/` overview, `/ui/logs` list, `/ui/logs/<id>` one exchange, `/ui/sessions/<id>` one session,
`/ui/stats`, and the
JSON at `/ui/api/*`. Pages are Jinja templates (autoescaped) with a vendored stylesheet and script;
every route passes ``ui_auth.gate`` first. Queries go through ``LogStore.read`` (off the gevent hub).
"""
from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlencode

import peewee as pw
from flask import (
    Response,
    abort,
    redirect,
    render_template,
    request,
    stream_with_context,
    url_for,
)
from werkzeug.exceptions import HTTPException
from werkzeug.wrappers import Response as BaseResponse  # what redirect() makes

from .. import jsonio
from ..render import json_response
from ..services import services
from ..store import search, stats
from ..store.health import reason_of
from ..version import __version__
from . import ui_auth, ui_changes, ui_charts, ui_convo, ui_export, ui_render
from .ollama_api import OLLAMA_VERSION
from .ui_base import bp, log_store, render_page, store_or_off

log = logging.getLogger(__name__)
WINDOWS = {"1h": (3600, 60), "6h": (6 * 3600, 300), "24h": (86400, 900), "7d": (7 * 86400, 3 * 3600)}
OUTCOMES = ("ok", "attached", "client_error", "refused", "backend_error", "timeout", "cancelled", "error")
BODY_TITLES = {"client_request": "what the client sent", "upstream_request": "what went upstream",
               "upstream_response": "what the backend answered", "client_response": "what the client received"}


@bp.before_request
def check_access() -> BaseResponse | None:
    return ui_auth.gate(services().settings.admin_token)


@bp.after_request
def security_headers(response: Response) -> Response:
    return ui_auth.add_security_headers(response)


@bp.errorhandler(Exception)
def failure(exc: Exception) -> Any:
    """Errors of the log view as a page (or JSON under /ui/api), never as an API error body."""
    if isinstance(exc, HTTPException):
        return exc
    if isinstance(exc, search.BadFilter):  # a URL argument no query can take: NUL, NaN, out of range
        return ui_auth.refuse(400, str(exc))
    if isinstance(exc, (pw.OperationalError, pw.InterfaceError)):  # down or stalled: the store logged it once
        response = ui_auth.refuse(503, f"The log database cannot be read now: {reason_of(exc)}")
        response.headers["Retry-After"] = "10"
        return response
    log.exception("log view: %s %s failed", request.method, request.path)
    message = "The log view failed; the proxy's log has the details."
    if isinstance(exc, pw.PeeweeException):
        message = f"The log database cannot be read: {exc}"
    return ui_auth.refuse(500, message)


@bp.app_template_filter("utc")
def utc(ts: float | None) -> str:
    if ts is None:
        return ""
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%d %H:%M:%S")


@bp.app_template_filter("with_query")
def with_query(base: str, args: dict[str, str]) -> str:
    """A URL with query arguments (url_for cannot take a filter named ``endpoint``)."""
    return f"{base}?{urlencode(args)}" if args else base


@bp.app_template_filter("ms")
def ms(value: float | None) -> str:
    if value is None:
        return "–"
    return f"{value / 1000:.2f} s" if value >= 1000 else f"{value:.1f} ms"


# --- log in / out -----------------------------------------------------------------------------------

@bp.route("/login", methods=["GET", "POST"])
def login() -> Any:
    token = services().settings.admin_token
    target = ui_auth.safe_next(request.values.get("next"))
    if not token:
        return redirect(target)
    error = ""
    if request.method == "POST":
        verdict = ui_auth.check_token(token, request.form.get("token", ""))
        if verdict is True:
            return ui_auth.set_session(redirect(target), token)
        if verdict:
            return ui_auth.too_many_guesses(verdict)
        error = "That is not the proxy's ADMIN_TOKEN."
    status = 401 if error else 200
    return render_template("ui/login.html", next=target, error=error, token_set=False), status


@bp.route("/logout", methods=["POST"])
def logout() -> BaseResponse:
    return ui_auth.clear_session(redirect(url_for("ui.login")), services().settings.admin_token)


# --- pages ---------------------------------------------------------------------------------------------

@bp.route("/")
def overview() -> str:
    svc = services()

    store = log_store()
    backends = [m.state() for m in svc.pool.members] if svc.pool is not None else None
    reachable, detail = svc.backend.reachable() if backends is None else (True, "")  # the pool: no I/O here
    figures, db_error = None, None
    if store:
        try:
            figures = store.read(search.counts, time.time())
        except pw.PeeweeException as exc:  # the overview must show even when the database is down
            db_error = str(exc) or type(exc).__name__
    return render_page("ui/overview.html", version=__version__, ollama_version=OLLAMA_VERSION,
                 settings=svc.settings.public_items(), backend=svc.backend, reachable=reachable, detail=detail,
                 backends=backends,
                 figures=figures, writer=store.writer.stats() if store else None,
                 database=store.describe() if store else None, db_error=db_error,
                 loopback_only=not svc.settings.admin_token, backends_problem=_backends_problem(svc))


def _backends_problem(svc: Any) -> str | None:
    """Why the BACKENDS_FILE on disk is not the one in force (a broken edit), or None."""
    watcher = svc.extras.get("backends_file")
    return watcher.problem if watcher is not None else None


@bp.app_template_global("session_href")
def session_href(session_id: str) -> str:
    """A session's page: its exchanges in order (``session``)."""
    return url_for("ui.session", session_id=session_id)


@bp.app_template_filter("agent")
def agent(user_agent: str | None) -> str:
    """A user agent in short: its first product token ("claude-cli/2.1.86"), at most 24 characters."""
    first = (user_agent or "").split(" ", 1)[0]
    return first if len(first) <= 24 else first[:23] + "…"


def cannot_match(f: search.Filters) -> str | None:
    """Why a filter that parsed cannot match any exchange, or None."""
    if f.status.isdigit() and not 100 <= int(f.status) <= 599:
        return f"Status {f.status} cannot match: HTTP statuses run from 100 to 599."
    if f.outcome and f.outcome not in OUTCOMES:
        return f"Outcome {f.outcome!r} cannot match: outcomes are {', '.join(OUTCOMES)}."
    return None


@bp.route("/logs")
def logs() -> tuple[str, int]:
    store = store_or_off()
    status = 200
    try:
        filters = search.Filters.from_args(request.args)
        problem = cannot_match(filters)
    except search.BadFilter as exc:  # the page says why (with a 400) instead of showing an empty list
        filters, problem, status = search.Filters(), f"This filter cannot match: {exc}.", 400
    page = store.read(search.list_exchanges, filters) if problem is None else {"items": [], "next": None}
    hints = store.read(search.suggestions)
    max_id = max((row["id"] for row in page["items"]), default=0)
    query = filters.query_args(before="")
    return render_page("ui/logs.html", page=page, filters=filters, hints=hints, max_id=max_id, problem=problem,
                 query=query, detail_query=urlencode(query), outcomes=OUTCOMES), status


@bp.route("/logs/<int:ident>")
def exchange(ident: int) -> str:
    store = store_or_off()
    try:
        filters = search.Filters.from_args(request.args)
    except search.BadFilter:
        filters = search.Filters()
    page = store.read(_exchange_page, ident, filters) if ident <= search.MAX_ID else None
    if page is None:
        abort(Response(render_template("ui/denied.html", status=404, title="Not found",
                                       message=f"There is no exchange {ident} (retention may have deleted it)."),
                       404))
    page["curl"] = ui_export.curl(page["row"], request.host_url)
    return render_page("ui/exchange.html", query=filters.query_args(before=""), **page)


def _exchange_page(models: Any, ident: int, filters: search.Filters | None = None) -> dict[str, Any] | None:
    """The exchange page's data, prepared in the reader pool where its query ran: formatting and comparing
    bodies of a megabyte is CPU work that must not hold up the gevent hub, and the API requests on it."""
    row = search.get_exchange(models, ident)
    if row is None:
        return None
    bodies = row["bodies"]
    request, upstream = bodies["client_request"], bodies["upstream_request"]
    # the failed ones (when every attempt failed, the last is the record's error), and, for a request attached to
    # its running identical twin (``views.early``), a note naming it
    twin = next((a["attached_to"] for a in row["attempts"] if "attached_to" in a), None)
    attempts = row["attempts"] = [a for a in row["attempts"] if "attached_to" not in a]
    gave_up = bool(attempts) and (attempts[-1]["backend"], attempts[-1]["error"]) == (row["backend_name"], row["error"])
    budget = ui_render.Budget()
    answer = ui_render.answer_view(row["answer"], budget)
    request_changes = ui_changes.changes(request["text"], upstream["text"]) if upstream["text"] else \
        {"changed": False, "summary": ""}
    request_changes["truncated"] = bool(request["truncated"] or upstream["truncated"])
    response_changes = ui_changes.changes(bodies["upstream_response"]["text"], bodies["client_response"]["text"])
    return {"row": row, "near": search.neighbours(models, row, filters), "answered": not gave_up, "twin": twin,
            "answer": answer,
            "convo": ui_render.prepare(ui_convo.parse_request(request["text"]), budget),
            "strip": ui_render.strip(row, rewritten=bool(request_changes["changed"])),
            "replays": search.replays_of(models, ident),
            "request_changes": request_changes, "response_changes": response_changes,
            "raw": [(name, BODY_TITLES[name], ui_render.pretty(b["text"]), b) for name, b in bodies.items()]}


@bp.route("/sessions/<path:session_id>")
def session(session_id: str) -> str:
    """One session's exchanges (an agent's turns) in order, with tokens, times and status."""
    store = store_or_off()
    session_id = search.text_arg({"session": session_id}, "session")[:128]
    page = store.read(search.session_exchanges, session_id)
    if not page["items"]:
        abort(Response(render_template("ui/denied.html", status=404, title="Not found",
                                       message="No exchange of this session is in the log."), 404))
    return render_page("ui/session.html", session_id=session_id, page=page)


@bp.route("/api/sessions/<path:session_id>")
def api_session(session_id: str) -> Response:
    store = store_or_off()
    session_id = search.text_arg({"session": session_id}, "session")[:128]
    page = store.read(search.session_exchanges, session_id)
    if not page["items"]:
        return json_response({"error": "no exchange of this session is in the log"}, 404)
    return json_response({"session_id": session_id, **page})


@bp.route("/stats")
def stats_page() -> str:
    store = store_or_off()
    window = request.args.get("window", "1h")
    seconds, bucket = WINDOWS.get(window, WINDOWS["1h"])
    figures = store.read(stats.window_stats, time.time(), seconds, bucket)
    models = figures["models"]
    return render_page("ui/stats.html", window=window if window in WINDOWS else "1h", windows=WINDOWS, s=figures,
                 per_time=ui_charts.time_bars(figures["series"]),
                 tokens=ui_charts.hbars([(m["model"], m["prompt_tokens"] + m["completion_tokens"]) for m in models]))


# --- JSON ------------------------------------------------------------------------------------------------

@bp.route("/api/logs")
def api_logs() -> Response:
    store = store_or_off()
    filters = search.Filters.from_args(request.args)
    page = store.read(search.list_exchanges, filters)
    return json_response({"items": page["items"], "next": page["next"],
                          "next_url": with_query(url_for("ui.api_logs"), filters.query_args(before=page["next"]))
                          if page["next"] else None})


@bp.route("/api/logs/<int:ident>")
def api_log(ident: int) -> Response:
    store = store_or_off()
    row = store.read(search.get_exchange, ident) if ident <= search.MAX_ID else None
    if row is None:
        return json_response({"error": f"there is no exchange {ident}"}, 404)
    headers = None
    if request.args.get("download"):
        headers = {"Content-Disposition": f'attachment; filename="exchange-{ident}.json"'}
    return json_response(row, headers=headers)


def _time_arg(name: str) -> float | None:
    """Epoch seconds, or an ISO date/time (UTC unless it says otherwise); BadFilter (a 400) otherwise."""
    return search.time_arg(search.text_arg(request.args, name), name)


@bp.route("/api/export")
def api_export() -> Response:
    """Exchanges in [since, until) as JSON Lines, oldest first, streamed in small reads."""
    store = store_or_off()
    since, until = _time_arg("since"), _time_arg("until")

    def lines() -> Iterator[bytes]:
        last = 0
        while True:
            rows = store.read(search.export_batch, since, until, last)
            if not rows:
                return
            for row in rows:
                yield jsonio.dumps_line(row)
            last = rows[-1]["id"]

    name = f"exchanges-{int(since or 0)}-{int(until or time.time())}.jsonl"
    return Response(stream_with_context(lines()), content_type="application/x-ndjson",
                    headers={"Content-Disposition": f'attachment; filename="{name}"'})

