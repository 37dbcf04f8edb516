"""API keys and networks: finding the key a request presents and matching it without a timing side
channel, and matching addresses against networks (``config`` parses `API_KEYS` and `ALLOWED_NETWORKS`).

Keys are kept only as SHA-256 digests once a ``KeyRing`` is built. A presented key is hashed and its
digest looked up: whatever the lookup's timing reveals is about digests, and a digest's first bytes say
nothing about the key behind it, so the time taken does not tell how much of a key matched (the lookup
costs the same however many keys there are, where comparing with each digest in turn grew with them).
Nothing here logs; callers see key *names* only.
"""
from __future__ import annotations

import hashlib
import ipaddress
from collections.abc import Iterable, Mapping

from ..config import Network, parse_network


def digest(key: str) -> bytes:
    return hashlib.sha256(key.encode("utf-8", "surrogatepass")).digest()


class KeyRing:
    """Configured keys as (name, digest); ``identify`` answers the name of a presented key or None."""

    __slots__ = ("_entries", "_by_digest")

    def __init__(self, entries: Iterable[tuple[str, bytes]]):
        self._entries = tuple(entries)
        self._by_digest: dict[bytes, str] = {}
        for name, known in self._entries:
            self._by_digest.setdefault(known, name)

    @classmethod
    def from_pairs(cls, pairs: Iterable[tuple[str, str]]) -> KeyRing:
        return cls((name, digest(key)) for name, key in pairs)

    def __bool__(self) -> bool:
        return bool(self._entries)

    def __len__(self) -> int:
        return len(self._entries)

    def plus(self, entries: Iterable[tuple[str, bytes]]) -> KeyRing:
        """This ring with more (name, digest) entries."""
        return KeyRing(self._entries + tuple(entries))

    def names(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys(name for name, _ in self._entries))

    def identify(self, presented: str) -> str | None:
        """The name of the key presented, by the SHA-256 of what was presented: a lookup's timing can only
        tell about digests, which say nothing of the keys (no key is ever compared as it was sent)."""
        return self._by_digest.get(digest(presented))


class Networks:
    """A set of CIDR networks; ``contains`` takes an address string (anything unparsable is outside)."""

    __slots__ = ("_nets", "_cache")

    def __init__(self, nets: Iterable[str | Network]):
        self._nets = tuple(n if not isinstance(n, str) else parse_network(n) for n in nets)
        self._cache: dict[str, bool] = {}

    def __bool__(self) -> bool:
        return bool(self._nets)

    def __len__(self) -> int:
        return len(self._nets)

    def contains(self, address: str | None) -> bool:
        if not self._nets or not address:
            return False
        hit = self._cache.get(address)
        if hit is None:
            hit = self._check(address)
            if len(self._cache) > 4096:
                self._cache.clear()
            self._cache[address] = hit
        return hit

    def _check(self, address: str) -> bool:
        try:
            ip = ipaddress.ip_address(address.split("%", 1)[0])
        except ValueError:
            return False
        mapped = getattr(ip, "ipv4_mapped", None)
        candidates = (ip, mapped) if mapped is not None else (ip,)
        return any(c.version == net.version and c in net for c in candidates for net in self._nets)


def presented_keys(environ: Mapping[str, str]) -> list[str]:
    """The keys a request offers: `X-API-Key: <key>` and `Authorization: Bearer <key>` (in that order)."""
    found = []
    header = environ.get("HTTP_X_API_KEY", "").strip()
    if header:
        found.append(header)
    auth = environ.get("HTTP_AUTHORIZATION", "")
    scheme, _, token = auth.strip().partition(" ")
    if scheme.lower() == "bearer" and token.strip():
        found.append(token.strip())
    return found
