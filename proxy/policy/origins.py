"""CORS_ORIGINS: the web origins whose pages may call `/api` and `/v1` from a browser, each matched whole.

An entry is `*` (any origin), an origin (`https://chat.example.org`, `http://localhost:3000`), or an origin
whose host begins with `*.` (`https://*.example.org`: its subdomains at any depth, not the name itself).
Entries are checked at start-up and each becomes a pattern anchored at both ends. (flask-cors takes a string
holding `*`, `?`, `(`… for a regular expression matched from the start only, so `https://*.example.org`
would also admit `https://xexample.org.evil.net`.)
"""
from __future__ import annotations

import re
from typing import Iterable

ANY = "*"
_ENTRY = re.compile(r"""
    (?P<scheme>[a-z][a-z0-9+.-]*)://
    (?P<wild>\*\.)?
    (?P<host>[a-z0-9_](?:[a-z0-9_-]*[a-z0-9_])?(?:\.[a-z0-9_](?:[a-z0-9_-]*[a-z0-9_])?)*|\[[0-9a-f:.]+\])
    (?::(?P<port>[0-9]{1,5}))?
    """, re.VERBOSE)
_LABEL = r"[a-z0-9_](?:[a-z0-9_-]*[a-z0-9_])?"
EXPECTED = ("comma-separated origins such as https://chat.example.org or http://localhost:3000 (scheme, host, "
            "optional port; no path), a host may begin with *. for its subdomains, or * for any origin")


def normalise(entry: str) -> str:
    """An entry (or an Origin header) as it is compared: lower case, no trailing slash."""
    return entry.strip().lower().rstrip("/")


def parse(raw: str) -> tuple[str, ...]:
    """Settings parser for CORS_ORIGINS: the entries, normalised; ValueError naming a malformed one."""
    entries = []
    for item in raw.split(","):
        entry = normalise(item)
        if not entry:
            continue
        if entry != ANY and _ENTRY.fullmatch(entry) is None:
            raise ValueError(f"{EXPECTED}; {item.strip()!r} is not one")
        entries.append(entry)
    return tuple(dict.fromkeys(entries))


def pattern(entry: str) -> re.Pattern[str]:
    """The entry as a regular expression that matches a whole Origin header (any letter case)."""
    if entry == ANY:
        return re.compile(r"\A.*\Z", re.IGNORECASE | re.DOTALL)
    match = _ENTRY.fullmatch(normalise(entry))
    if match is None:
        raise ValueError(f"{EXPECTED}; {entry!r} is not one")
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
        candidate = normalise(origin)
        return candidate in self.exact or any(p.match(candidate) for p in self.patterns)

    def for_flask_cors(self) -> str | list[re.Pattern[str]]:
        """What flask-cors is given: `*`, or every entry as an anchored pattern (never a bare string, which it
        might read as a regular expression matched from the start only)."""
        return ANY if self.any else [pattern(e) for e in self.entries]
