"""Values of the limit settings: rate strings (parsed by the ``limits`` library) and the Redis URL, checked
when settings are read."""
from __future__ import annotations

from urllib.parse import urlsplit

import limits
from limits import RateLimitItem


def parse_rate(raw: str) -> tuple[RateLimitItem, ...]:
    """`60/minute`, `10/second;1000/hour`, `100 per 2 seconds`…, parsed by the limits library."""
    text = raw.strip()
    if not text:
        return ()
    try:
        return tuple(limits.parse_many(text))
    except ValueError:
        raise ValueError("a rate such as 60/minute or 10/second;1000/hour") from None


def check_rate(raw: str) -> str:
    parse_rate(raw)
    return raw.strip()


def check_redis_url(raw: str) -> str:
    value = raw.strip()
    if value and urlsplit(value).scheme not in ("redis", "rediss", "unix", "redis+unix"):
        raise ValueError("a redis://[:password@]host:port[/db], rediss://… or unix://… URL")
    return value

