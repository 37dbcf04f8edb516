"""The gate's tests: Redis, either the shared server named by TEST_REDIS_URL or a private
`redis-server` a test may stop. Keys, calls and error checks are in tests.support.policy.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import time
from pathlib import Path

import pytest

from tests.support import free_port

REDIS_ENV = "TEST_REDIS_URL"


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
