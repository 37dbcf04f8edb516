"""Who the client is and how it reached us: the one place that reads X-Forwarded-* (TRUSTED_PROXIES).

``Forwarded`` is WSGI middleware. When the TCP peer is a trusted proxy it replaces ``REMOTE_ADDR`` with
the client named by X-Forwarded-For (or X-Real-IP), ``wsgi.url_scheme`` with X-Forwarded-Proto and
``HTTP_HOST`` with X-Forwarded-Host, so the gate, the access log, the exchange record, the log view and
the login throttle all see the same client. From any other peer these headers are ignored, and the
request is marked as relayed (a relayed request is never "local").
"""
from __future__ import annotations

import ipaddress
import re
from collections.abc import Callable, Iterable
from typing import Any

from .config import Settings
from .policy.keys import Networks

ENVIRON_RELAYED = "llm_proxy.relayed"  # forwarding headers that could not be followed to the client
FORWARDING = ("HTTP_X_FORWARDED_FOR", "HTTP_X_REAL_IP", "HTTP_FORWARDED", "HTTP_X_FORWARDED_PROTO",
              "HTTP_X_FORWARDED_HOST")
HOST_RE = re.compile(r"^(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9._-]+)(:[0-9]{1,5})?$")


def _address(hop: str) -> str | None:
    """One X-Forwarded-For entry as a normalised IP address ("1.2.3.4:56" and "[::1]:56" allowed)."""
    hop = hop.strip().strip('"')
    if hop.startswith("["):
        hop = hop[1:].partition("]")[0]
    elif hop.count(":") == 1:
        hop = hop.partition(":")[0]
    try:
        ip = ipaddress.ip_address(hop.split("%", 1)[0])
    except ValueError:
        return None
    return str(ip)


def client_of(chain: str, peer: str, trusted: Networks) -> tuple[str, bool]:
    """The client address an X-Forwarded-For chain names, read from the right: the first hop that is not a
    trusted proxy (or the leftmost when all are). The flag is False when an unreadable hop stopped the walk."""
    client = peer
    for hop in reversed(chain.split(",")):
        address = _address(hop)
        if address is None:
            return client, False
        client = address
        if not trusted.contains(address):
            break
    return client, True


def resolve(environ: dict, trusted: Networks) -> None:
    """Apply a trusted proxy's forwarding headers to the WSGI environ (see the module docstring)."""
    if not any(name in environ for name in FORWARDING):
        return
    peer = environ.get("REMOTE_ADDR") or ""
    if not trusted.contains(peer):
        environ[ENVIRON_RELAYED] = True
        return
    chain = environ.get("HTTP_X_FORWARDED_FOR") or ""
    if chain:
        client, complete = client_of(chain, peer, trusted)
    else:
        real = _address(environ.get("HTTP_X_REAL_IP") or "")
        client, complete = (real, True) if real else (peer, "HTTP_FORWARDED" not in environ)
    environ["REMOTE_ADDR"] = client
    if not complete:
        environ[ENVIRON_RELAYED] = True
    proto = (environ.get("HTTP_X_FORWARDED_PROTO") or "").split(",", 1)[0].strip().lower()
    if proto in ("http", "https"):
        environ["wsgi.url_scheme"] = proto
    host = (environ.get("HTTP_X_FORWARDED_HOST") or "").split(",", 1)[0].strip()
    if host and HOST_RE.match(host):
        environ["HTTP_HOST"] = host


class Forwarded:
    def __init__(self, app: Callable, settings: Settings):
        self.app = app
        self.trusted = Networks(settings.trusted_proxies)

    def __call__(self, environ: dict, start_response: Callable) -> Iterable[bytes]:
        resolve(environ, self.trusted)
        return self.app(environ, start_response)


def relayed(environ: dict[str, Any]) -> bool:
    """Forwarding headers were sent that did not lead to the client (an untrusted peer, or an unreadable chain)."""
    return bool(environ.get(ENVIRON_RELAYED))
