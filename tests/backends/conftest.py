"""The backends (proxy/backends/) and the model catalog: the HTTP client against a raw TCP
server (tests/backends/fake_raw.py), llama.cpp recordings (tests/data/llamacpp), TLS and
outbound proxies, hostile backends, and the in-process stub backend. Fixtures for several backends:
``fakes_pool`` (fake upstreams on real ports) and ``pool_proxy`` (the proxy in front of them, BACKENDS_FILE)."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.support.fakes import FakeUpstream
from tests.support.pool_proxy import PoolProxy, WsgiPoolProxy, openai_fake


@pytest.fixture
def fakes_pool():
    started: list[FakeUpstream] = []

    def start() -> FakeUpstream:
        fake = FakeUpstream().start()
        started.append(fake)
        return fake

    yield start
    for fake in started:
        fake.stop()


@pytest.fixture
def pool_proxy(tmp_path: Path):
    """Factory: ``pool_proxy(toml_text, wsgi=False, **env)`` -> a proxy with BACKENDS_FILE = that text, in
    process (werkzeug, threads) or as ``python wsgi.py``."""
    started: list[Any] = []

    def factory(text: str, wsgi: bool = False, **env: str) -> Any:
        if wsgi:
            running: Any = WsgiPoolProxy(tmp_path, text, **env)
        else:
            running = PoolProxy.start(tmp_path, text, name=f"backends-{len(started)}.toml",
                                      **{"LOG_LEVEL": "WARNING", **env})
        started.append(running)
        return running

    yield factory
    for running in started:
        running.stop()


@pytest.fixture
def proxy(pool_proxy):
    """``pool_proxy`` under the shorter name the reload and cancel tests use."""
    return pool_proxy


@pytest.fixture
def upstreams():
    """Factory: ``upstreams(*pieces, **reply)`` -> a fake OpenAI backend answering those pieces."""
    started: list[FakeUpstream] = []

    def start(*pieces: str, **reply_kw: Any) -> FakeUpstream:
        started.append(openai_fake(*pieces, **reply_kw))
        return started[-1]

    yield start
    for fake in started:
        fake.stop()
