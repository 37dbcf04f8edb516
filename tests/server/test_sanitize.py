"""Sanitising over real sockets (AGENT_SANITIZE): an agent's output limit past what a llama-server context
leaves reaches the backend lowered, in both front doors; off, it goes as sent; and the context length the
clients read (/v1/models, /api/show) is the backend's real one."""
from __future__ import annotations

import pytest
import requests

from proxy.clamp import MARGIN, prompt_estimate
from tests.support.fakes import openai_stream

N_CTX = 2048


@pytest.fixture
def llamacpp(fake_upstream):
    fake_upstream.serve_llamacpp("smollm2", n_ctx=N_CTX)
    fake_upstream.default("POST", "/v1/chat/completions", openai_stream(["ok"]))
    return fake_upstream


@pytest.mark.parametrize("sanitize", ["true", "false"])
def test_max_tokens_past_the_context_is_clamped_unless_sanitising_is_off(make_proxy, llamacpp, sanitize):
    proxy = make_proxy(AGENT_SANITIZE=sanitize)
    body = {"model": "smollm2", "max_tokens": 32000, "stream": True,
            "messages": [{"role": "user", "content": "x" * 400}]}
    r = requests.post(proxy.url + "/v1/chat/completions", json=body, timeout=10)
    assert r.status_code == 200
    sent = llamacpp.last("/v1/chat/completions").json["max_tokens"]
    size = len(r.request.body)
    assert sent == (N_CTX - prompt_estimate(size) - MARGIN if sanitize == "true" else 32000)


def test_ollama_num_predict_is_clamped_on_its_way_to_an_openai_backend(make_proxy, llamacpp):
    proxy = make_proxy()
    body = {"model": "smollm2", "options": {"num_predict": 9000},
            "messages": [{"role": "user", "content": "hi"}]}
    llamacpp.default("POST", "/v1/chat/completions", openai_stream(["ok"]))
    requests.post(proxy.url + "/api/chat", json=body, timeout=10)
    assert llamacpp.last("/v1/chat/completions").json["max_tokens"] < N_CTX


def test_the_real_context_length_is_what_clients_read(make_proxy, llamacpp):
    proxy = make_proxy()
    [entry] = requests.get(proxy.url + "/v1/models", timeout=10).json()["data"]
    assert entry["context_length"] == N_CTX
    info = requests.post(proxy.url + "/api/show", json={"model": "smollm2"}, timeout=10).json()["model_info"]
    assert [v for k, v in info.items() if k.endswith(".context_length")] == [N_CTX]
