"""Ollama model management with several backends (BACKENDS_FILE), over real sockets: pull, push, create and
blobs go to the first healthy Ollama backend (not an OpenAI one listed before it), delete and copy to the
Ollama backend that serves the model they name; with no Ollama backend healthy, or none serving the model, or
none at all, the answer is a clear error in Ollama's shape, and the log names the backend that answered."""
from __future__ import annotations

from pathlib import Path

import pytest
import requests

from tests.support.fake_wire import json_reply, ndjson_reply
from tests.support.fakes import FakeUpstream
from tests.support.pool_proxy import PoolProxy, backend, openai_fake

DIGEST = "sha256:" + "ab" * 32


def ollama(*models: str) -> FakeUpstream:
    fake = FakeUpstream().start()
    fake.serve_ollama_models(*models)
    fake.default("POST", "/api/pull", ndjson_reply([{"status": "pulling manifest"}, {"status": "success"}]))
    fake.default("POST", "/api/copy", json_reply({}))
    fake.default("DELETE", "/api/delete", json_reply({}))
    fake.default("HEAD", f"/api/blobs/{DIGEST}", json_reply({}))
    return fake


def ollama_table(name: str, fake: FakeUpstream) -> str:
    return f'[backends.{name}]\ntype = "ollama"\nurl = "{fake.url}"\n'


@pytest.fixture
def mixed(tmp_path: Path):
    """An OpenAI backend first, then two Ollama backends: `nas` has x, `box` has y."""
    fakes = {"cloud": openai_fake("hi"), "nas": ollama("x"), "box": ollama("y")}
    text = backend("cloud", fakes["cloud"]) + ollama_table("nas", fakes["nas"]) + ollama_table("box", fakes["box"])
    running = PoolProxy.start(tmp_path, text)
    yield running, fakes
    running.stop()
    for fake in fakes.values():
        fake.stop()


def test_pull_and_blobs_go_to_the_first_healthy_ollama_backend(mixed):
    proxy, fakes = mixed
    r = requests.post(proxy.url + "/api/pull", json={"model": "new", "stream": False}, timeout=10)
    assert r.status_code == 200 and fakes["nas"].calls("/api/pull") and not fakes["box"].calls("/api/pull")
    assert requests.head(proxy.url + f"/api/blobs/{DIGEST}", timeout=10).status_code == 200
    assert fakes["nas"].calls(f"/api/blobs/{DIGEST}")
    proxy.pool.by_name["nas"].healthy = False
    r = requests.post(proxy.url + "/api/pull", json={"model": "new"}, timeout=10)
    assert r.status_code == 200 and r.text.splitlines()[-1] == '{"status": "success"}'  # the backend's own lines
    assert len(fakes["box"].calls("/api/pull")) == 1 and not fakes["cloud"].calls("/api/pull")
    pulls = [row["backend_name"] for row in proxy.rows(3) if row["endpoint"] == "/api/pull"]
    assert pulls == ["nas", "box"]


def test_delete_and_copy_go_to_the_backend_that_serves_the_model(mixed):
    proxy, fakes = mixed
    r = requests.delete(proxy.url + "/api/delete", json={"model": "y"}, timeout=10)
    assert r.status_code == 200 and fakes["box"].calls("/api/delete") and not fakes["nas"].calls("/api/delete")
    r = requests.post(proxy.url + "/api/copy", json={"source": "x", "destination": "x2"}, timeout=10)
    assert r.status_code == 200 and fakes["nas"].calls("/api/copy") and not fakes["box"].calls("/api/copy")
    r = requests.delete(proxy.url + "/api/delete", json={"model": "nowhere"}, timeout=10)
    assert r.status_code == 404 and "nowhere" in r.json()["error"]
    assert not fakes["nas"].calls("/api/delete") and len(fakes["box"].calls("/api/delete")) == 1


def test_no_healthy_ollama_backend_is_a_503_in_ollamas_shape(mixed):
    proxy, fakes = mixed
    for name in ("nas", "box"):
        proxy.pool.by_name[name].healthy = False
        proxy.pool.by_name[name].last_error = f"{name} refused"
    r = requests.post(proxy.url + "/api/pull", json={"model": "new"}, timeout=10)
    assert r.status_code == 503 and int(r.headers["Retry-After"]) >= 1
    assert r.json()["error"].startswith("no healthy Ollama backend for /api/pull (nas: nas refused; box: box")
    r = requests.delete(proxy.url + "/api/delete", json={"model": "y"}, timeout=10)
    assert r.status_code == 503 and set(r.json()) == {"error"}
    assert not any(f.calls("/api/pull") or f.calls("/api/delete") for f in fakes.values())


def test_a_pool_without_ollama_backends_says_so(tmp_path: Path):
    fake = openai_fake("hi")
    running = PoolProxy.start(tmp_path, backend("cloud", fake))
    try:
        r = requests.post(running.url + "/api/copy", json={"source": "m", "destination": "n"}, timeout=10)
        assert r.status_code == 501 and "none is an Ollama server" in r.json()["error"]
        r = requests.head(running.url + f"/api/blobs/{DIGEST}", timeout=10)
        assert r.status_code == 501
        r = requests.post(running.url + "/api/pull", json={"model": "m", "stream": False}, timeout=10)
        assert r.status_code == 200 and r.json() == {"status": "success"}  # served already: nothing to pull
    finally:
        running.stop()
        fake.stop()
