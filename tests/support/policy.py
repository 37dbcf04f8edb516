"""Helpers and fixtures for the gate's tests (tests/test_policy_*.py): a KEYS_FILE writer, plain HTTP
calls with a key, dialect error checks, and Redis (the shared server from TEST_REDIS_URL, or a private
`redis-server` a test may kill). Import with `from policy_support import *`.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import time
import uuid
from pathlib import Path
from typing import Any

import pytest
import requests

from tests.support import free_port

__all__ = ["ALICE", "BOB", "write_keys", "call", "chat_body", "assert_openai_error", "assert_ollama_error",
           "shared_redis_url", "private_redis", "unique", "PrivateRedis"]

ALICE = "sk-alice-0123456789abcdef"
BOB = "sk-bob-fedcba9876543210"
REDIS_ENV = "TEST_REDIS_URL"


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


# --- Redis ---------------------------------------------------------------------------------------------

@pytest.fixture
def shared_redis_url() -> str:
    """TEST_REDIS_URL when set (a test fails if that server does not answer); skipped otherwise."""
    url = os.environ.get(REDIS_ENV)
    if not url:
        pytest.skip(f"{REDIS_ENV} is not set (e.g. redis://127.0.0.1:6379/0); Redis limit tests skipped")
    import redis

    try:
        redis.Redis.from_url(url, socket_timeout=3, socket_connect_timeout=3).ping()
    except redis.RedisError as exc:
        pytest.fail(f"{REDIS_ENV}={url} is set but Redis does not answer: {exc}")
    return url


class PrivateRedis:
    """A redis-server of this test's own, on a free port, that the test may stop and start again."""

    def __init__(self, binary: str, tmp: Path):
        self.binary = binary
        self.port = free_port()
        self.tmp = tmp
        self.process: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> PrivateRedis:
        import redis

        self.process = subprocess.Popen([self.binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
                                         "--appendonly", "no", "--daemonize", "no", "--dir", str(self.tmp)],
                                        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 10
        while True:
            try:
                redis.Redis(port=self.port, socket_timeout=1).ping()
                return self
            except redis.RedisError:
                if time.monotonic() > deadline or self.process.poll() is not None:
                    raise AssertionError(f"redis-server on port {self.port} did not start") from None
                time.sleep(0.05)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(timeout=10)
        self.process = None


@pytest.fixture
def private_redis(tmp_path):
    """Factory: a started PrivateRedis. Needs the `redis-server` program (skipped, saying so, without it)."""
    binary = shutil.which("redis-server")
    if binary is None:
        if os.environ.get(REDIS_ENV):
            pytest.fail(f"{REDIS_ENV} is set but the redis-server program is not installed")
        pytest.skip("the redis-server program is not installed; tests that stop Redis mid-run skipped")
    started: list[PrivateRedis] = []

    def factory() -> PrivateRedis:
        server = PrivateRedis(binary, tmp_path).start()
        started.append(server)
        return server

    yield factory
    for server in started:
        server.stop()
