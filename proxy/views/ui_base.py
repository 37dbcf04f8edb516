"""The log view's blueprint and what its route modules share: the log store (or a 404 page when the log is
off) and page rendering. ``ui`` holds the pages, ``ui_tools`` the exports, compare and running requests,
``ui_replay`` the replay; each adds its routes to ``bp``.
"""
from __future__ import annotations

from typing import Any

from flask import Blueprint, Response, abort, render_template

from ..services import services

bp = Blueprint("ui", __name__, url_prefix="/ui", static_folder="../static", static_url_path="/static",
               template_folder="../templates")


def log_store() -> Any:
    return services().extras.get("log_store")


def store_or_off() -> Any:
    store = log_store()
    if store is None:
        abort(Response(render_template("ui/denied.html", status=404, title="Log off",
                                       message="The exchange log is off (LOG_ENABLED=false)."), 404))
    return store


def render_page(template: str, **context: Any) -> str:
    return render_template(template, token_set=bool(services().settings.admin_token), **context)
