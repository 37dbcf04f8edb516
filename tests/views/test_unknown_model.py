"""A new user's first requests: the README's examples work against the stub as written, and a model
the backend does not have gets a 404, in the caller's dialect, that names the models there are (a
bounded list, and only those the caller's key may use)."""
from __future__ import annotations

import re

import ollama
import openai
import pytest
import requests

from tests.support import REPO_ROOT
from tests.support.policy import write_keys


def readme() -> str:
    return (REPO_ROOT / "README.md").read_text()


# --- the README's examples against the stub (`python wsgi.py`, real sockets) -----------------------------

def test_readme_python_example_works_with_the_stub(wsgi_proxy):
    proxy = wsgi_proxy(BACKEND_TYPE="stub", STUB_DELAY_MS="0")
    block = re.search(r"\*\*Python\*\*.*?```python\n(.*?)```", readme(), re.S)
    assert block, "the README has no Python example"
    code = "\n".join(line.strip() for line in block.group(1).splitlines())
    code = code.replace("http://host:11434", proxy.url)
    namespace: dict = {}
    exec(compile(code, "README.md", "exec"), namespace)  # raises (404) if its model is not the stub's


def test_readme_curl_example_works_with_the_stub(wsgi_proxy):
    proxy = wsgi_proxy(BACKEND_TYPE="stub", STUB_DELAY_MS="0")
    text = readme()
    start = text.index("No LLM at hand?")
    curl = re.search(r"curl (\S+/v1/chat/completions).*?-d '(.*?)'", text[start:], re.S)
    assert curl, "the quick start has no curl example"
    url = curl.group(1).replace("http://127.0.0.1:11434", proxy.url)
    r = requests.post(url, data=curl.group(2), headers={"Content-Type": "application/json"}, timeout=10)
    assert r.status_code == 200, r.text
    assert r.json()["choices"][0]["message"]["content"] == "You said: Hi"


# --- 404s name the models there are -------------------------------------------------------------------------

def test_openai_client_404_lists_the_models(make_proxy, openai_client):
    proxy = make_proxy(BACKEND_TYPE="stub", STUB_DELAY_MS="0")
    with pytest.raises(openai.NotFoundError) as info:
        openai_client(proxy).chat.completions.create(model="smollm2", messages=[{"role": "user", "content": "Hi"}])
    error = info.value.body
    assert error["code"] == "model_not_found" and error["param"] == "model"
    assert "model 'smollm2' not found" in error["message"] and "stub, stub-embed" in error["message"]


def test_ollama_client_404_lists_the_models(make_proxy, ollama_client):
    proxy = make_proxy(BACKEND_TYPE="stub", STUB_DELAY_MS="0")
    with pytest.raises(ollama.ResponseError) as info:
        ollama_client(proxy).chat(model="smollm2", messages=[{"role": "user", "content": "Hi"}])
    assert info.value.status_code == 404
    assert "not found" in info.value.error and "stub, stub-embed" in info.value.error


@pytest.mark.parametrize("method, path, body", [
    ("GET", "/v1/models/nope", None),
    ("POST", "/api/show", {"model": "nope"}),
    ("POST", "/api/generate", {"model": "nope", "prompt": "hi"}),
    ("POST", "/v1/embeddings", {"model": "nope", "input": "hi"}),
])
def test_every_unknown_model_404_lists_the_models(make_proxy, method, path, body):
    proxy = make_proxy(BACKEND_TYPE="stub", STUB_DELAY_MS="0")
    r = requests.request(method, proxy.url + path, json=body, timeout=10)
    assert r.status_code == 404
    error = r.json()["error"]
    message = error["message"] if path.startswith("/v1") else error
    assert "not found" in message and "available: stub, stub-embed" in message


def test_a_long_model_list_is_cut_and_counted(fake_upstream, make_proxy):
    names = [f"model-{i:02d}" for i in range(27)]
    fake_upstream.serve_openai_models(*names)
    proxy = make_proxy(BACKEND_TYPE="openai")
    message = requests.get(proxy.url + "/v1/models/nope", timeout=10).json()["error"]["message"]
    assert "model-00" in message and "model-19" in message and "model-20" not in message
    assert "and 7 more" in message


def test_a_404_lists_only_the_models_the_key_may_use(backend_setup, tmp_path):
    keys = write_keys(tmp_path / "keys.toml", '[keys.alice]\nmodels = ["qwen3-*"]\n')
    setup = backend_setup("openai", API_KEYS="alice:sk-alice-1,bob:sk-bob-1", KEYS_FILE=keys)
    alice = requests.post(setup.url + "/v1/chat/completions", headers={"Authorization": "Bearer sk-alice-1"},
                          json={"model": "qwen3-nope", "messages": [{"role": "user", "content": "hi"}]}, timeout=10)
    assert alice.status_code == 404
    assert "qwen3-8b" in alice.json()["error"]["message"]
    assert "text-embed-3" not in alice.json()["error"]["message"]
    bob = requests.post(setup.url + "/api/show", headers={"Authorization": "Bearer sk-bob-1"},
                        json={"model": "nope"}, timeout=10)
    assert bob.status_code == 404 and "qwen3-8b, text-embed-3" in bob.json()["error"]
