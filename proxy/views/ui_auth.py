"""Who may see the log view: ADMIN_TOKEN (a Bearer header for scripts, a login cookie for people),
or — with no token set — clients on this machine only, told why when they are not.

The cookie holds no token: it is an issue time, a random session id and an HMAC of both keyed by the
token, so changing ADMIN_TOKEN logs everyone out and logging out ends that session everywhere
(``ui_state`` remembers it). Failed token guesses are limited per client (429 with Retry-After); the
cookie is ``Secure`` when the request came over TLS (directly, or by a trusted proxy's word). Every
stored string in the log is untrusted; the security headers for the pages are set here too.
"""
from __future__ import annotations

import hashlib
import hmac
import ipaddress
import os
import time
from urllib.parse import urlsplit

from flask import Response, redirect, render_template, request, url_for
from werkzeug.wrappers import Response as BaseResponse  # what redirect() makes

from ..forwarded import relayed
from ..render import json_response
from ..services import services
from .ui_state import client_key, make_state

COOKIE = "llm_proxy_ui"
SESSION_S = 30 * 86400
OPEN_ENDPOINTS = frozenset({"ui.static", "ui.login", "ui.logout"})
CSP = ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
       "form-action 'self'; base-uri 'none'; frame-ancestors 'none'")
SECURITY_HEADERS = {"Content-Security-Policy": CSP, "X-Content-Type-Options": "nosniff",
                    # same-origin, not no-referrer: under no-referrer browsers send `Origin: null` on the
                    # log view's own form posts, which the Origin check (hostguard) cannot tell from a sandbox
                    "Referrer-Policy": "same-origin", "X-Frame-Options": "DENY",
                    "Cross-Origin-Opener-Policy": "same-origin"}


def _sign(token: str, issued: int, session_id: str) -> str:
    return hmac.new(token.encode(), f"llm-proxy-ui:{issued}:{session_id}".encode(), hashlib.sha256).hexdigest()


def session_value(token: str, now: float | None = None) -> str:
    issued = int(now if now is not None else time.time())
    session_id = os.urandom(16).hex()
    return f"{issued}.{session_id}.{_sign(token, issued, session_id)}"


def session_of(token: str, value: str, now: float | None = None) -> tuple[str, int] | None:
    """(session id, issue time) of a well-signed, unexpired cookie value; None otherwise."""
    issued_text, _, rest = value.partition(".")
    session_id, _, mac = rest.partition(".")
    if not issued_text.isdigit() or len(issued_text) > 12 or not session_id or not mac:
        return None
    issued = int(issued_text)
    now = now if now is not None else time.time()
    if not (issued - 60 <= now <= issued + SESSION_S):
        return None
    if not hmac.compare_digest(mac.encode(), _sign(token, issued, session_id).encode()):
        return None
    return session_id, issued


def valid_session(token: str, value: str, now: float | None = None) -> bool:
    """Well signed, unexpired and not logged out."""
    session = session_of(token, value, now)
    return session is not None and not state().revoked(session[0])


def token_matches(token: str, given: str) -> bool:
    """Constant time, whatever the lengths (digests are compared, not the strings)."""
    digest = lambda text: hashlib.sha256(text.encode("utf-8", "surrogatepass")).digest()  # noqa: E731
    return hmac.compare_digest(digest(token), digest(given))


def is_loopback(address: str) -> bool:
    try:
        ip = ipaddress.ip_address(address.split("%", 1)[0])
    except ValueError:
        return False
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return ip.is_loopback


def local_request() -> bool:
    """From this machine: the client address (a trusted proxy's X-Forwarded-For applied) is loopback, and no
    forwarding header was left unfollowed (a relayed request would make everyone look local)."""
    if relayed(request.environ):
        return False
    return is_loopback(request.remote_addr or "")


# --- token guesses ---------------------------------------------------------------------------------------

def state():
    """The sign-in state of this app (made on first use: REDIS_URL shares it between workers)."""
    svc = services()
    current = svc.extras.get("ui_state")
    if current is None:
        current = svc.extras["ui_state"] = make_state(svc.settings.redis_url, svc.settings.redis_timeout)
    return current


def check_token(token: str | tuple[str, ...], given: str) -> int | bool:
    """Compare a presented token (with any of several), counting failures per client: True, False, or the
    seconds the client must wait (an int > 0) after too many wrong guesses; then nothing is compared."""
    client = client_key(request.remote_addr or "")
    wait = state().locked_for(client)
    if wait:
        return wait
    if any(token_matches(t, given) for t in ((token,) if isinstance(token, str) else token)):
        state().succeeded(client)
        return True
    state().failed(client)
    return False


def too_many_guesses(wait: int) -> Response:
    response = refuse(429, f"Too many wrong tokens from this address; try again in {wait} s.")
    response.headers["Retry-After"] = str(wait)
    return response


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


def gate(token: str) -> BaseResponse | None:
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
        verdict = check_token(token, header[7:].strip())
        if verdict is True:
            return None
        if verdict:
            return too_many_guesses(verdict)
        return refuse(401, "The token in the Authorization header is not the proxy's ADMIN_TOKEN.")
    cookie = request.cookies.get(COOKIE, "")
    if cookie and valid_session(token, cookie):
        return None
    if wants_json():
        return refuse(401, "Send Authorization: Bearer <ADMIN_TOKEN>.")
    return redirect(url_for("ui.login", next=request.full_path.rstrip("?")))


def refuse(status: int, message: str) -> Response:
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


def set_session(response: BaseResponse, token: str) -> BaseResponse:
    response.set_cookie(COOKIE, session_value(token), max_age=SESSION_S, path="/ui", httponly=True,
                        samesite="Strict", secure=request.is_secure)
    return response


def clear_session(response: BaseResponse, token: str) -> BaseResponse:
    """Log out: the session is remembered as ended (a copy of the cookie is no use any more) and the cookie
    removed from the browser."""
    session = session_of(token, request.cookies.get(COOKIE, "")) if token else None
    if session is not None:
        state().revoke(session[0], session[1] + SESSION_S)
    response.delete_cookie(COOKIE, path="/ui", httponly=True, samesite="Strict", secure=request.is_secure)
    return response


def add_security_headers(response: Response) -> Response:
    for name, value in SECURITY_HEADERS.items():
        response.headers.setdefault(name, value)
    if request.endpoint != "ui.static":
        response.headers.setdefault("Cache-Control", "no-store")
    return response
