"""The command line: flags of `python wsgi.py`, `python -m proxy` and `llm-proxy`, and `doctor` against real
proxies and backends (fake ones from tests/support, and the real app made to break one handshake)."""
from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.support.procs import clean_env


def run_cli(args: list[str], cwd: Path, timeout: float = 60, **env: str) -> subprocess.CompletedProcess:
    """`python -m proxy ARGS` (or `python ARGS` when they start with a script or -m) to its end."""
    direct = args and (args[0].endswith(".py") or args[0] == "-m")
    command = [sys.executable, *args] if direct else [sys.executable, "-m", "proxy", *args]
    return subprocess.run(command, cwd=cwd, env=clean_env(**env), capture_output=True, text=True, timeout=timeout)


def _rewrite(body: bytes, path: str, change: Callable[[Any], Any], lines: bool) -> bytes:
    if not lines:
        return json.dumps(change(json.loads(body))).encode()
    out = []
    for raw in body.split(b"\n"):
        if raw.strip():
            changed = change(json.loads(raw))
            if changed is not None:
                out.append(json.dumps(changed).encode())
    return b"".join(line + b"\n" for line in out)


def breaker(app: Any, path: str, change: Callable[[bytes], bytes]):
    """WSGI middleware: the answers to ``path`` read whole and replaced by ``change(body)``."""

    def wrapped(environ, start_response):
        if environ.get("PATH_INFO") != path:
            return app(environ, start_response)
        seen: dict[str, Any] = {}

        def keep(status, headers, exc_info=None):
            seen["status"], seen["headers"] = status, [(k, v) for k, v in headers if k.lower() != "content-length"]
            return lambda data: None

        result = app(environ, keep)
        try:
            body = b"".join(result)
        finally:
            if hasattr(result, "close"):
                result.close()
        body = change(body)
        start_response(seen["status"], [*seen["headers"], ("Content-Length", str(len(body)))])
        return [body]

    return wrapped


@pytest.fixture
def stub_proxy(make_proxy):
    """The real app in front of the stub backend (in-process, real socket)."""
    return make_proxy(BACKEND_TYPE="stub", STUB_DELAY_MS="0")


@pytest.fixture
def broken_proxy(stub_proxy):
    """Factory: `broken_proxy(path, change, lines=False)` -> the stub proxy whose answers to `path` have each
    JSON object (each line when `lines`) replaced by `change(obj)` (None drops a line)."""

    def factory(path: str, change: Callable[[Any], Any] | Callable[[bytes], bytes], lines: bool = False,
                raw: bool = False):
        inner = stub_proxy.app.wsgi_app
        edit = change if raw else (lambda body: _rewrite(body, path, change, lines))
        stub_proxy.app.wsgi_app = breaker(inner, path, edit)
        return stub_proxy

    return factory
