"""Which requests may reach the proxy at all: the Host check (DNS rebinding), the Origin check (cross-site
requests from a browser, and the CORS_ORIGINS patterns flask-cors is given) and the path's form.

A rebinding page is served from a DNS name its author controls, so a request it makes carries that name
in ``Host``: only names that cannot be public DNS names (IP addresses, single labels, the special-use
domains) and names configured here are served. A page of another site that posts to the proxy carries its
own ``Origin``: only the proxy's own origin, and ``CORS_ORIGINS`` outside the log view, are served. Clients
that send no ``Origin`` (SDKs, curl, integrations) are untouched. Refusals are 403 in the caller's dialect;
a path the router would read otherwise than it is written is a 400.
"""
from __future__ import annotations

import functools
import ipaddress
import logging
import re
import socket
from collections.abc import Iterable
from urllib.parse import urlsplit

from flask import Flask, Response, request

from .accesslog import printable
from .config import Settings
from .context import current
from .errors import BadRequest, ProxyError
from .recording import dialect_of_path
from .render import render_error
from .values import ANY_ORIGIN, ORIGIN_ENTRY, normalise_origin
from .views import ui_auth

log = logging.getLogger(__name__)
# Domains that never resolve through public DNS (RFC 6761, RFC 6762, RFC 8375, ICANN's .internal).
LOCAL_SUFFIXES = (".localhost", ".local", ".internal", ".home.arpa")
DEFAULT_PORTS = {"http": 80, "https": 443}
CACHE_SIZE = 1024
_LABEL = r"[a-z0-9_](?:[a-z0-9_-]*[a-z0-9_])?"


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


def plain_path(path: str) -> bool:
    """Whether the router reads ``path`` as it is written: one leading slash, no empty, `.` or `..` segment
    (werkzeug merges doubled slashes before matching, so another spelling would reach a route it does not show)."""
    if not path:
        return True
    if path[0] != "/" or "//" in path:
        return False
    return "/." not in path or not any(segment in (".", "..") for segment in path.split("/"))


def _spelled_out(path: str) -> str:
    """``path`` with empty, `.` and `..` segments resolved: the route a refusal of it is worded for."""
    kept: list[str] = []
    for segment in path.split("/"):
        if segment == "..":
            if kept:
                kept.pop()
        elif segment and segment != ".":
            kept.append(segment)
    return "/" + "/".join(kept)


def origin_pattern(entry: str) -> re.Pattern[str]:
    """A CORS_ORIGINS entry (checked by ``config``) as a pattern matching a whole Origin header, any letter case;
    a host written `*.example.org` matches its subdomains at any depth, not the name itself."""
    match = ORIGIN_ENTRY.fullmatch(normalise_origin(entry))
    if match is None:
        raise ValueError(f"not a CORS_ORIGINS origin: {entry!r}")
    host = re.escape(match["host"])
    if match["wild"]:
        host = rf"(?:{_LABEL}\.)+{host}"
    port = rf":{match['port']}" if match["port"] else ""
    return re.compile(rf"\A{re.escape(match['scheme'])}://{host}{port}\Z", re.IGNORECASE)


class Origins:
    """CORS_ORIGINS, each entry matched whole. flask-cors gets the same anchored patterns, never bare strings:
    it would read `https://*.example.org` as a regular expression matched from the start only, which also
    admits `https://xexample.org.evil.net`."""

    def __init__(self, entries: Iterable[str]):
        entries = tuple(entries)
        self.any = ANY_ORIGIN in entries
        self.patterns = [origin_pattern(e) for e in entries if e != ANY_ORIGIN]

    def allows(self, origin: str) -> bool:
        candidate = normalise_origin(origin)
        return self.any or any(p.match(candidate) for p in self.patterns)

    def for_flask_cors(self) -> str | list[re.Pattern[str]]:
        return ANY_ORIGIN if self.any else self.patterns


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
        if not plain_path(environ.get("PATH_INFO") or ""):
            current().refused = True
            return render_error(BadRequest("the request path is not in its plain form (doubled slashes or . / .. "
                                           "segments); send it as the route is written, e.g. /v1/chat/completions",
                                           code="invalid_path"), dialect_of_path(_spelled_out(request.path)))
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
    """Check Host, Origin and the path's form before anything else looks at a request (register before the gate)."""
    guard = HostGuard(settings)
    app.extensions["llm_proxy"].extras["host_guard"] = guard
    app.before_request(guard.check)
    return guard
