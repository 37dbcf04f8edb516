"""API keys and networks (``config`` parses `API_KEYS` and `ALLOWED_NETWORKS`). Only keys' SHA-256 digests are
kept; a presented key is hashed and its digest looked up, so the lookup's timing tells about digests only, which
say nothing of the keys, and costs the same however many keys there are."""
from __future__ import annotations

import functools
import hashlib
import ipaddress
from collections.abc import Iterable, Mapping

from ..values import Network, parse_network


def digest(key: str) -> bytes:
    return hashlib.sha256(key.encode("utf-8", "surrogatepass")).digest()


class KeyRing:
    """Configured keys as (name, digest) pairs; ``identify`` names the key presented (the first name of a key
    given twice), or None."""

    def __init__(self, entries: Iterable[tuple[str, bytes]]):
        self.entries = tuple(entries)
        self._by_digest: dict[bytes, str] = {}
        for name, known in self.entries:
            self._by_digest.setdefault(known, name)

    def __bool__(self) -> bool:
        return bool(self.entries)

    def names(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys(name for name, _ in self.entries))

    def identify(self, presented: str) -> str | None:
        return self._by_digest.get(digest(presented))


class Networks:
    """CIDR networks; ``contains`` takes an address string (anything unparsable is outside), its answers cached."""

    def __init__(self, nets: Iterable[str | Network]):
        self.nets = tuple(n if not isinstance(n, str) else parse_network(n) for n in nets)
        self.contains = functools.lru_cache(maxsize=4096)(self._contains)

    def __bool__(self) -> bool:
        return bool(self.nets)

    def _contains(self, address: str | None) -> bool:
        if not self.nets or not address:
            return False
        try:
            ip = ipaddress.ip_address(address.split("%", 1)[0])
        except ValueError:
            return False
        mapped = getattr(ip, "ipv4_mapped", None)
        candidates = (ip, mapped) if mapped is not None else (ip,)
        return any(c.version == net.version and c in net for c in candidates for net in self.nets)


def presented_keys(environ: Mapping[str, str]) -> list[str]:
    """The keys a request offers: `X-API-Key: <key>` and `Authorization: Bearer <key>` (in that order)."""
    found = []
    header = environ.get("HTTP_X_API_KEY", "").strip()
    if header:
        found.append(header)
    scheme, _, token = environ.get("HTTP_AUTHORIZATION", "").strip().partition(" ")
    if scheme.lower() == "bearer" and token.strip():
        found.append(token.strip())
    return found
