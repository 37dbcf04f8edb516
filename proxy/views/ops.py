"""Operations endpoints: `/health` (liveness), `/healthz` (backend reachability as JSON), `/metrics`."""
from __future__ import annotations

from flask import Blueprint, Response

from .common import json_response, services

bp = Blueprint("ops", __name__)


@bp.route("/health", methods=["GET", "HEAD"])
def health() -> Response:
    return Response("OK", content_type="text/plain; charset=utf-8")


@bp.route("/healthz", methods=["GET"])
def healthz() -> Response:
    backend = services().backend
    ok, detail = backend.reachable()
    return json_response({"status": "ok" if ok else "unavailable",
                          "backend": {"type": backend.type, "url": backend.base_url, "reachable": ok, "detail": detail}},
                         200 if ok else 503)


@bp.route("/metrics", methods=["GET"])
def metrics() -> Response:
    metrics = services().extras["metrics"]
    return Response(metrics.render(), content_type=metrics.content_type)
