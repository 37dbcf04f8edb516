"""CORS_ORIGINS: the web origins whose pages may call `/api` and `/v1` from a browser, each matched whole.

An entry is `*` (any origin), an origin (`https://chat.example.org`, `http://localhost:3000`), or an origin
whose host begins with `*.` (`https://*.example.org`: its subdomains at any depth, not the name itself).
Entries are checked at start-up (``config.parse_origins``) and each becomes a pattern anchored at both ends.
(flask-cors takes a string
holding `*`, `?`, `(`… for a regular expression matched from the start only, so `https://*.example.org`
would also admit `https://xexample.org.evil.net`.)
"""
from __future__ import annotations

import re
from collections.abc import Iterable

from ..config import ANY_ORIGIN, ORIGIN_ENTRY, ORIGINS_EXPECTED, normalise_origin

ANY = ANY_ORIGIN
_LABEL = r"[a-z0-9_](?:[a-z0-9_-]*[a-z0-9_])?"


def pattern(entry: str) -> re.Pattern[str]:
    """The entry as a regular expression that matches a whole Origin header (any letter case)."""
    if entry == ANY:
        return re.compile(r"\A.*\Z", re.IGNORECASE | re.DOTALL)
    match = ORIGIN_ENTRY.fullmatch(normalise_origin(entry))
    if match is None:
        raise ValueError(f"{ORIGINS_EXPECTED}; {entry!r} is not one")
    host = re.escape(match["host"])
    if match["wild"]:
        host = rf"(?:{_LABEL}\.)+{host}"
    port = rf":{match['port']}" if match["port"] else ""
    return re.compile(rf"\A{re.escape(match['scheme'])}://{host}{port}\Z", re.IGNORECASE)


class Origins:
    """The allowed origins; ``allows`` answers for an Origin header."""

    def __init__(self, entries: Iterable[str]):
        self.entries = tuple(entries)
        self.any = ANY in self.entries
        self.exact = frozenset(e for e in self.entries if "*" not in e)
        self.patterns = tuple(pattern(e) for e in self.entries if "*" in e and e != ANY)

    def __bool__(self) -> bool:
        return bool(self.entries)

    def allows(self, origin: str) -> bool:
        if self.any:
            return True
        candidate = normalise_origin(origin)
        return candidate in self.exact or any(p.match(candidate) for p in self.patterns)

    def for_flask_cors(self) -> str | list[re.Pattern[str]]:
        """What flask-cors is given: `*`, or every entry as an anchored pattern (never a bare string, which it
        might read as a regular expression matched from the start only)."""
        return ANY if self.any else [pattern(e) for e in self.entries]
