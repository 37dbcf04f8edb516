"""Operations endpoints: `/health` (liveness), `/healthz` (backend reachability, or each backend's state, as
JSON), `/metrics` (open, or behind METRICS_TOKEN / ADMIN_TOKEN as a Bearer token, wrong guesses throttled as at
the login)."""
from __future__ import annotations

from flask import Blueprint, Response, request

from ..render import json_response
from ..services import services
from . import ui_auth

bp = Blueprint("ops", __name__)


@bp.route("/health", methods=["GET", "HEAD"])
def health() -> Response:
    return Response("OK", content_type="text/plain; charset=utf-8")


@bp.route("/healthz", methods=["GET"])
def healthz() -> Response:
    svc = services()
    if svc.pool is not None:  # each backend's state as the proxy knows it (probes, real requests): no I/O here
        states = [m.state() for m in svc.pool.members]
        ok = any(m.healthy for m in svc.pool.members)
        return json_response({"status": "ok" if ok else "unavailable", "backends": states}, 200 if ok else 503)
    backend = svc.backend
    ok, detail = backend.reachable()
    return json_response({"status": "ok" if ok else "unavailable",
                          "backend": {"type": backend.type, "url": backend.base_url, "reachable": ok,
                                      "detail": detail}},
                         200 if ok else 503)


@bp.route("/metrics", methods=["GET"])
def metrics() -> Response:
    svc = services()
    tokens = tuple(t for t in (svc.settings.metrics_token, svc.settings.admin_token) if t)
    if tokens:
        refusal = _scraper_refused(tokens)
        if refusal is not None:
            return refusal
    metrics = svc.extras["metrics"]
    return Response(metrics.render(), content_type=metrics.content_type)


def _scraper_refused(tokens: tuple[str, ...]) -> Response | None:
    header = request.headers.get("Authorization", "")
    given = header[7:].strip() if header[:7].lower() == "bearer " else ""
    if given:
        verdict = ui_auth.check_token(tokens, given)
        if verdict is True:
            return None
        if verdict:
            response = _text(429, f"too many wrong tokens from this address; try again in {verdict} s\n")
            response.headers["Retry-After"] = str(verdict)
            return response
    response = _text(401, "/metrics needs Authorization: Bearer <METRICS_TOKEN or ADMIN_TOKEN>\n")
    response.headers["WWW-Authenticate"] = 'Bearer realm="llm-proxy metrics"'
    return response


def _text(status: int, message: str) -> Response:
    return Response(message, status=status, content_type="text/plain; charset=utf-8")
