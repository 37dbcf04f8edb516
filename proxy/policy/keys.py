"""API keys and networks: parsing `API_KEYS` / `ALLOWED_NETWORKS`, finding the key a request presents,
and matching it without a timing side channel.

Keys are kept only as SHA-256 digests once a ``KeyRing`` is built. A presented key is hashed and its
digest looked up: whatever the lookup's timing reveals is about digests, and a digest's first bytes say
nothing about the key behind it, so the time taken does not tell how much of a key matched (the lookup
costs the same however many keys there are, where comparing with each digest in turn grew with them).
Nothing here logs; callers see key *names* only.
"""
from __future__ import annotations

import hashlib
import ipaddress
import re
from typing import Iterable, Mapping

NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._@+-]{0,63}$")
Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def parse_api_keys(raw: str) -> tuple[tuple[str, str], ...]:
    """`name:key` pairs, comma-separated; a bare key is named `key1`, `key2`… by its position."""
    pairs: list[tuple[str, str]] = []
    for position, item in enumerate((x.strip() for x in raw.split(",")), start=1):
        if not item:
            continue
        name, sep, key = item.partition(":")
        if not sep:
            name, key = f"key{position}", item
        name, key = name.strip(), key.strip()
        if not NAME_RE.match(name) or not key:
            raise ValueError("comma-separated name:key pairs (names: letters, digits, . _ @ + -; keys not empty)")
        pairs.append((name, key))
    names = [n for n, _ in pairs]
    if len(set(names)) != len(names):
        raise ValueError("comma-separated name:key pairs with distinct names")
    if len({k for _, k in pairs}) != len(pairs):
        raise ValueError("comma-separated name:key pairs with distinct keys")
    return tuple(pairs)


def parse_network(raw: str) -> Network:
    try:
        return ipaddress.ip_network(raw.strip(), strict=False)
    except ValueError:
        raise ValueError(f"CIDR networks such as 10.0.0.0/8 or fd00::/8 (not {raw.strip()!r})") from None


def parse_networks(raw: str) -> tuple[str, ...]:
    """Comma-separated CIDRs (a bare address is a /32 or /128), normalised to strings."""
    return tuple(str(parse_network(item)) for item in raw.split(",") if item.strip())


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
    def from_pairs(cls, pairs: Iterable[tuple[str, str]]) -> "KeyRing":
        return cls((name, digest(key)) for name, key in pairs)

    def __bool__(self) -> bool:
        return bool(self._entries)

    def __len__(self) -> int:
        return len(self._entries)

    def plus(self, entries: Iterable[tuple[str, bytes]]) -> "KeyRing":
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
