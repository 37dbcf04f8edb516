"""Which names and web pages may reach the proxy: the Host check (DNS rebinding) and the Origin check
(cross-site requests from a browser).

A rebinding page is served from a DNS name its author controls, so a request it makes carries that name
in ``Host``: only names that cannot be public DNS names (IP addresses, single labels, the special-use
domains) and names configured here are served. A page of another site that posts to the proxy carries its
own ``Origin``: only the proxy's own origin, and ``CORS_ORIGINS`` outside the log view, are served. Clients
that send no ``Origin`` (SDKs, curl, integrations) are untouched. Refusals are 403 in the caller's dialect.
"""
from __future__ import annotations

import functools
import ipaddress
import logging
import socket
from urllib.parse import urlsplit

from flask import Flask, Response, request

from .accesslog import printable
from .config import Settings
from .context import current
from .errors import ProxyError
from .policy.origins import Origins
from .recording import dialect_of_path
from .render import render_error
from .values import normalise_origin
from .views import ui_auth

log = logging.getLogger(__name__)
# Domains that never resolve through public DNS (RFC 6761, RFC 6762, RFC 8375, ICANN's .internal).
LOCAL_SUFFIXES = (".localhost", ".local", ".internal", ".home.arpa")
DEFAULT_PORTS = {"http": 80, "https": 443}
CACHE_SIZE = 1024


def split_host(value: str) -> tuple[str, int | None] | None:
    """A Host header as (lowercase name or address, port); None when it is not one."""
    value = value.strip().lower()
    if value.startswith("["):
        address, bracket, rest = value[1:].partition("]")
        if not bracket or (rest and not rest.startswith(":")):
            return None
        host, port_text = address, rest[1:] if rest else ""
        try:
            ipaddress.IPv6Address(host.split("%", 1)[0])
        except ValueError:
            return None
    else:
        host, _, port_text = value.partition(":")
        if not host or any(not (c.isalnum() or c in "-._") for c in host) or not host.isascii():
            return None
    if port_text and not (port_text.isdigit() and len(port_text) <= 5):
        return None
    return host.rstrip("."), int(port_text) if port_text else None


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        return False
    return True


def machine_names(bound: str) -> set[str]:
    """This machine's names (hostname, its fully qualified name) and the bound address when it is a name."""
    names = {"localhost"}
    for name in (socket.gethostname(), socket.getfqdn(), bound):
        if name and not _is_ip(name.strip("[]")):
            names.add(name.lower().rstrip("."))
    return names


class HostGuard:
    def __init__(self, settings: Settings, names: set[str] | None = None):
        entries = [e.strip().lower().rstrip(".") for e in settings.allowed_hosts if e.strip()]
        self.any_host = "*" in entries
        self.names = (machine_names(settings.host) if names is None else set(names)) | {
            e.lstrip("*.") for e in entries if e != "*"}
        self.suffixes = LOCAL_SUFFIXES + tuple("." + e.lstrip("*.") for e in entries if e.startswith((".", "*.")))
        self.origins = Origins(settings.cors_origins)  # matched whole, as flask-cors is told to match them
        self.host_allowed = functools.lru_cache(maxsize=CACHE_SIZE)(self._host_allowed)  # Host headers repeat

    # --- Host -----------------------------------------------------------------------------------------------
    def _host_allowed(self, header: str) -> bool:
        if self.any_host or not header:  # no Host at all: HTTP/1.0 tools; browsers always send one
            return True
        parsed = split_host(header)
        if parsed is None:
            return False
        host = parsed[0]
        if _is_ip(host) or "." not in host or host in self.names:
            return True
        return host.endswith(self.suffixes)

    # --- Origin ---------------------------------------------------------------------------------------------
    def origin_allowed(self, origin: str, host_header: str, path: str) -> bool:
        """Same origin as the request (host and port), or listed in CORS_ORIGINS outside the log view."""
        normalised = normalise_origin(origin)
        if self.same_origin(normalised, host_header):
            return True
        if path.startswith("/ui"):
            return False
        return self.origins.allows(normalised)

    @staticmethod
    def same_origin(origin: str, host_header: str) -> bool:
        try:
            parts = urlsplit(origin)
            origin_port = parts.port or DEFAULT_PORTS.get(parts.scheme)
        except ValueError:
            return False
        if parts.scheme not in DEFAULT_PORTS or not parts.hostname:
            return False  # "null" (sandboxed frames, file: pages) and anything else
        host = split_host(host_header)
        if host is None or host[0] != parts.hostname.rstrip("."):
            return False
        # A Host without a port is what a reverse proxy sends when it drops it: the name decides.
        return host[1] is None or host[1] == origin_port

    # --- the hook -------------------------------------------------------------------------------------------
    def check(self) -> Response | None:
        environ = request.environ
        host = environ.get("HTTP_HOST", "")
        if not self.host_allowed(host):
            return self.refuse(f"this proxy does not answer to the name {_shown(host)!r}; add it to ALLOWED_HOSTS "
                               "if clients use it (names a DNS rebinding page could use are refused)",
                               "host_not_allowed")
        origin = environ.get("HTTP_ORIGIN")
        if origin == "null" and environ.get("HTTP_SEC_FETCH_SITE") == "same-origin":
            origin = None  # a page of ours under a no-referrer policy; the browser itself says it is ours
        if origin is not None and not self.origin_allowed(origin, host, environ.get("PATH_INFO") or "/"):
            where = "the log view" if (environ.get("PATH_INFO") or "").startswith("/ui") else "this proxy"
            hint = "" if where == "the log view" else "; add it to CORS_ORIGINS to allow it"
            return self.refuse(f"requests from web pages at {_shown(origin)!r} may not use {where}{hint}",
                               "origin_not_allowed")
        return None

    @staticmethod
    def refuse(message: str, code: str) -> Response:
        path = request.path
        log.debug("refused %s %s: %s", _shown(request.method), _shown(path), message)
        if path.startswith("/ui"):
            return ui_auth.refuse(403, message[:1].upper() + message[1:] + ".")
        current().refused = True  # its body is not read for the log
        return render_error(ProxyError(message, status=403, code=code), dialect_of_path(path))


def _shown(text: str) -> str:
    """Client text in a message or a log line: printable and short."""
    return printable(text[:200])


def install_host_guard(app: Flask, settings: Settings) -> HostGuard:
    """Check Host and Origin before anything else looks at a request (register before the gate)."""
    guard = HostGuard(settings)
    app.extensions["llm_proxy"].extras["host_guard"] = guard
    app.before_request(guard.check)
    return guard
