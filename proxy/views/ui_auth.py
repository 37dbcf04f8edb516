"""Who may see the log view: ADMIN_TOKEN (a Bearer header for scripts, a login cookie for people),
or — with no token set — clients on this machine only, told why when they are not.

The cookie holds no token: it is an issue time and an HMAC of it keyed by the token, so changing
ADMIN_TOKEN logs everyone out. Every stored string in the log is untrusted; the security headers
for the pages are set here too.
"""
from __future__ import annotations

import hashlib
import hmac
import ipaddress
import time
from urllib.parse import urlsplit

from flask import Response, redirect, render_template, request, url_for

COOKIE = "llm_proxy_ui"
SESSION_S = 30 * 86400
FORWARDING_HEADERS = ("X-Forwarded-For", "Forwarded", "X-Real-IP")
OPEN_ENDPOINTS = frozenset({"ui.static", "ui.login", "ui.logout"})
CSP = ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
       "form-action 'self'; base-uri 'none'; frame-ancestors 'none'")
SECURITY_HEADERS = {"Content-Security-Policy": CSP, "X-Content-Type-Options": "nosniff",
                    "Referrer-Policy": "no-referrer", "X-Frame-Options": "DENY",
                    "Cross-Origin-Opener-Policy": "same-origin"}


def _sign(token: str, issued: int) -> str:
    return hmac.new(token.encode(), f"llm-proxy-ui:{issued}".encode(), hashlib.sha256).hexdigest()


def session_value(token: str, now: float | None = None) -> str:
    issued = int(now if now is not None else time.time())
    return f"{issued}.{_sign(token, issued)}"


def valid_session(token: str, value: str, now: float | None = None) -> bool:
    issued_text, _, mac = value.partition(".")
    if not issued_text.isdigit() or not mac:
        return False
    issued = int(issued_text)
    now = now if now is not None else time.time()
    if not (issued - 60 <= now <= issued + SESSION_S):
        return False
    return hmac.compare_digest(mac, _sign(token, issued))


def token_matches(token: str, given: str) -> bool:
    return hmac.compare_digest(token.encode(), given.encode())


def is_loopback(address: str) -> bool:
    try:
        ip = ipaddress.ip_address(address.split("%", 1)[0])
    except ValueError:
        return False
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return ip.is_loopback


def local_request() -> bool:
    """From this machine, and not relayed by a reverse proxy (which would make everyone look local)."""
    if any(request.headers.get(name) for name in FORWARDING_HEADERS):
        return False
    return is_loopback(request.remote_addr or "")


def wants_json() -> bool:
    return request.path.startswith("/ui/api/")


def safe_next(target: str | None) -> str:
    """Only paths inside the log view (no open redirect)."""
    if not target:
        return url_for("ui.overview")
    parts = urlsplit(target)
    if parts.scheme or parts.netloc or not parts.path.startswith("/ui/") or target.startswith("//"):
        return url_for("ui.overview")
    return target


def gate(token: str) -> Response | None:
    """None when the request may go on; otherwise the refusal to send."""
    if request.endpoint in OPEN_ENDPOINTS:
        return None
    if not token:
        if local_request():
            return None
        return refuse(403, "The log view answers only on this machine because ADMIN_TOKEN is not set. "
                           "Set ADMIN_TOKEN on the proxy to open it to other machines.")
    header = request.headers.get("Authorization", "")
    if header[:7].lower() == "bearer ":
        if token_matches(token, header[7:].strip()):
            return None
        return refuse(401, "The token in the Authorization header is not the proxy's ADMIN_TOKEN.")
    cookie = request.cookies.get(COOKIE, "")
    if cookie and valid_session(token, cookie):
        return None
    if wants_json():
        return refuse(401, "Send Authorization: Bearer <ADMIN_TOKEN>.")
    return redirect(url_for("ui.login", next=request.full_path.rstrip("?")))


def refuse(status: int, message: str) -> Response:
    from .common import json_response

    if wants_json():
        response = json_response({"error": message}, status)
    else:
        title = "Not allowed" if status in (401, 403) else "Error"
        response = Response(render_template("ui/denied.html", message=message, status=status, title=title),
                            status=status,
                            content_type="text/html; charset=utf-8")
    if status == 401:
        response.headers["WWW-Authenticate"] = 'Bearer realm="llm-proxy"'
    return response


def set_session(response: Response, token: str) -> Response:
    response.set_cookie(COOKIE, session_value(token), max_age=SESSION_S, path="/ui", httponly=True,
                        samesite="Strict", secure=request.is_secure)
    return response


def clear_session(response: Response) -> Response:
    response.delete_cookie(COOKIE, path="/ui", httponly=True, samesite="Strict", secure=request.is_secure)
    return response


def add_security_headers(response: Response) -> Response:
    for name, value in SECURITY_HEADERS.items():
        response.headers.setdefault(name, value)
    if request.endpoint != "ui.static":
        response.headers.setdefault("Cache-Control", "no-store")
    return response
