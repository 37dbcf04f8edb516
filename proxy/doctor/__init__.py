"""`llm-proxy doctor`: checks of the configuration, of each backend and, with --url, of the clients' handshakes
against a running proxy, one line each; ``run`` returns the exit status (0 only when every check passed)."""
from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from typing import TextIO

from ..config import Settings
from .backends import CONFIG, Backends
from .clients import handshake_checks
from .report import Check, run_checks


def _checks(backends: Backends, url: str | None, api_key: str, model: str | None, timeout: float) -> Iterator[Check]:
    yield Check(CONFIG, backends.configuration)
    yield from backends.files()  # each built once the checks before it have run
    yield from backends.checks()
    if url:
        yield from handshake_checks(url, api_key or _first_key(backends.settings), model, timeout)


def _first_key(settings: Settings | None) -> str:
    """The key of the first API_KEYS entry the server would accept, for --url when no other key is given."""
    return settings.api_keys[0][1] if settings is not None and settings.api_keys else ""


def run(read_settings: Callable[[], Settings], *, url: str | None = None, api_key: str = "",
        model: str | None = None, timeout: float = 20.0, out: TextIO | None = None) -> int:
    out = sys.stdout if out is None else out
    backends = Backends(read_settings, timeout)
    passed, failed = run_checks(_checks(backends, url, api_key, model, timeout), out)
    if not url:
        print("note: give --url http://HOST:PORT of a running proxy to replay the clients' handshakes", file=out)
    print(f"{passed} passed, {failed} failed", file=out)
    return 0 if failed == 0 else 1
