"""Replay from the log view: an exchange's client request sent again — as it was, to another model, or edited —
through this app's own WSGI stack, so the gate (keys, allowed models, limits) and the log apply to it as to any
request. The new exchange carries ``replay_of``; the page then compares the two answers.

Only for whoever may see the log view (``ui_auth.gate``). A form post must carry the CSRF token of the double
submit cookie and come from this origin (an ``Origin`` that ``hostguard`` found to be ours, or
``Sec-Fetch-Site: same-origin``); a script that sent
``Authorization: Bearer <ADMIN_TOKEN>`` needs neither (no browser sends that header on its own). The stored
request has no credentials: when the gate asks for a key, the admin types one into the form; it is used for
that one request and never stored. With several backends the form can name the one backend to send it to
(``failover``). Routes join ``ui.bp``.
"""
from __future__ import annotations

import hmac
import os
import time
from typing import Any

from flask import Response, abort, current_app, redirect, render_template, request, url_for
from werkzeug.test import EnvironBuilder

from .. import jsonio
from ..context import ENVIRON_REPLAY_BACKEND, ENVIRON_REPLAY_OF
from ..services import services
from ..store import search
from . import ui_auth
from .ui_base import bp, render_page, store_or_off
from .ui_convo import pretty_json

CSRF_COOKIE = "llm_proxy_csrf"
WRITE_WAIT_S = 5.0  # how long the replay waits for the log writer to store the new exchange
REPLAY_AGENT = "llm-proxy-replay"


def csrf_token() -> tuple[str, bool]:
    """This browser's token (from its cookie), or a new one; True when the cookie must be set."""
    given = request.cookies.get(CSRF_COOKIE, "")
    if len(given) == 64 and all(c in "0123456789abcdef" for c in given):
        return given, False
    return os.urandom(32).hex(), True


def cross_site_refusal() -> str | None:
    """Why a replay post is refused as possibly cross-site, or None."""
    if request.headers.get("Authorization", "")[:7].lower() == "bearer ":
        return None  # the gate checked it: a script, never a browser's ambient credential
    # An Origin header, when sent, was already checked by ``hostguard`` (the log view serves its own origin only)
    if request.headers.get("Origin") is None and request.headers.get("Sec-Fetch-Site") != "same-origin":
        return "the request did not say it came from this site (no Origin header)"
    cookie, form = request.cookies.get(CSRF_COOKIE, ""), request.form.get("csrf", "")
    if not cookie or not hmac.compare_digest(cookie.encode(), form.encode()):
        return "the form's CSRF token is missing or does not match (reload the replay page)"
    return None


def _original(ident: int) -> dict[str, Any]:
    store = store_or_off()
    row = store.read(search.get_exchange, ident) if ident <= search.MAX_ID else None
    if row is None:
        abort(Response(render_template("ui/denied.html", status=404, title="Not found",
                                       message=f"There is no exchange {ident} (retention may have deleted it)."),
                       404))
    return row


def _form(row: dict[str, Any], error: str = "", text: str | None = None, model: str = "", status: int = 200) -> Any:
    token, fresh = csrf_token()
    body = row["bodies"]["client_request"]
    if text is None:
        try:
            text = pretty_json(jsonio.loads(body["text"]))
        except ValueError:
            text = body["text"]
    pool = services().pool
    html = render_page("ui/replay.html", row=row, csrf=token, text=text, error=error, model=model,
                 backends=[m.name for m in pool.members] if pool is not None else [],
                 truncated=body["truncated"], keys_needed=bool(services().extras.get("policy")
                                                                and services().extras["policy"].key_names()))
    response = Response(html, status, content_type="text/html; charset=utf-8")
    if fresh:
        response.set_cookie(CSRF_COOKIE, token, path="/ui", httponly=True, samesite="Strict",
                            secure=request.is_secure)
    return response


@bp.route("/logs/<int:ident>/replay", methods=["GET"])
def replay_form(ident: int) -> Any:
    return _form(_original(ident))


@bp.route("/logs/<int:ident>/replay", methods=["POST"])
def replay(ident: int) -> Any:
    refusal = cross_site_refusal()
    if refusal:
        return ui_auth.refuse(403, f"Replay refused: {refusal}.")
    row = _original(ident)
    text, model = request.form.get("body", ""), request.form.get("model", "").strip()
    try:
        body = jsonio.loads(text)
    except ValueError as exc:
        return _form(row, f"The request is not JSON: {exc}", text, model, 400)
    if not isinstance(body, dict):
        return _form(row, "The request must be a JSON object.", text, model, 400)
    if model:
        body["model"] = model
    rid = "replay-" + os.urandom(12).hex()
    backend = request.form.get("backend", "").strip()
    status, answer = send(row, body, rid, ident, request.form.get("key", "").strip(), backend)
    if status >= 400:  # refused by the gate (a key, a limit) or failed: said here, and logged like any request
        return _form(row, f"The replay was answered {status}: {answer[:500]}", text, model, status)
    new = _wait_for(rid)
    if new is None:
        return _form(row, f"The replay answered {status} but is not in the log (yet): {answer[:500]}", text, model,
                     502 if status < 400 else status)
    return redirect(url_for("ui.compare", a=ident, b=new), 303)


def send(row: dict[str, Any], body: dict[str, Any], rid: str, ident: int, key: str,
         backend: str = "") -> tuple[int, str]:
    """The request through the whole app (gate, views, log) in this greenlet; (status, the answer's text)."""
    headers: list[tuple[str, str]] = [("Host", request.host), ("User-Agent", REPLAY_AGENT), ("X-Request-ID", rid),
                                      ("Content-Type", "application/json")]
    if key:
        headers.append(("Authorization", f"Bearer {key}"))
    builder = EnvironBuilder(path=row["endpoint"], method=row.get("method") or "POST", headers=headers,
                             data=jsonio.dumps(body), environ_base={"REMOTE_ADDR": request.remote_addr or "",
                                                                    ENVIRON_REPLAY_OF: ident,
                                                                    ENVIRON_REPLAY_BACKEND: backend or None})
    environ = builder.get_environ()
    status: list[str] = []
    result = current_app.wsgi_app(environ, lambda s, h, e=None: status.append(s))  # type: ignore[arg-type]
    chunks: list[bytes] = []
    try:
        for chunk in result:
            if sum(map(len, chunks)) < 1 << 20:
                chunks.append(chunk)
    finally:
        close = getattr(result, "close", None)
        if close is not None:
            close()
    code = int(status[0].split(" ", 1)[0]) if status else 500
    return code, b"".join(chunks).decode("utf-8", "replace")


def _wait_for(rid: str) -> int | None:
    """The replay's log id once the writer stored it (it writes in the background)."""
    store = store_or_off()
    deadline = time.monotonic() + WRITE_WAIT_S
    while True:
        found = store.read(search.find_request, rid)
        if found is not None or time.monotonic() > deadline:
            return found
        time.sleep(0.05)
