"""Helpers for tests that go through the gate (tests/policy/ and others): the test keys, a
KEYS_FILE writer, plain HTTP calls with a key, and dialect error checks. The Redis fixtures are in
tests/policy/conftest.py.
"""
from __future__ import annotations

import os
import time
import uuid
from pathlib import Path
from typing import Any

import requests

ALICE = "sk-alice-0123456789abcdef"
BOB = "sk-bob-fedcba9876543210"


def unique(prefix: str = "k") -> str:
    """A key name no other test run used (Redis counters outlive a test run)."""
    return f"{prefix}{uuid.uuid4().hex[:10]}"


def write_keys(path: Path, text: str) -> str:
    """Write a KEYS_FILE and make sure its mtime differs from the version before."""
    existed = path.exists()
    path.write_text(text)
    if existed:
        later = time.time_ns() + 10_000_000
        os.utime(path, ns=(later, later))
    return str(path)


def call(proxy: Any, method: str, path: str, key: str | None = None, header: str = "bearer",
         **kw: Any) -> requests.Response:
    headers = dict(kw.pop("headers", {}) or {})
    if key is not None:
        if header == "bearer":
            headers["Authorization"] = f"Bearer {key}"
        else:
            headers["X-API-Key"] = key
    return requests.request(method, proxy.url + path, headers=headers, timeout=kw.pop("timeout", 15), **kw)


def chat_body(model: str, text: str = "hi", **extra: Any) -> dict:
    return {"model": model, "messages": [{"role": "user", "content": text}], **extra}


def assert_openai_error(resp: requests.Response, status: int, type_: str | None = None) -> dict:
    assert resp.status_code == status, resp.text
    assert resp.headers["Content-Type"].startswith("application/json")
    err = resp.json()["error"]
    assert isinstance(err["message"], str) and err["message"]
    assert isinstance(err["type"], str)
    if type_ is not None:
        assert err["type"] == type_
    return err


def assert_ollama_error(resp: requests.Response, status: int) -> str:
    assert resp.status_code == status, resp.text
    assert resp.headers["Content-Type"].startswith("application/json")
    body = resp.json()
    assert set(body) == {"error"} and isinstance(body["error"], str) and body["error"]
    return body["error"]
