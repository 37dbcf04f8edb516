"""Several backends over real sockets: fake backends of both dialects on real ports (one refusing connections,
one answering 5xx, one blackholed), the proxy in front of them with BACKENDS_FILE, both fronts through the
official client libraries. Failover before the first byte, rules, the union of model lists, /api/show from a
backend that serves the model, the 503 with Retry-After, recovery through probes, /healthz, the log record."""
from __future__ import annotations

import json
import time

import pytest
import requests

from tests.support import fakes, free_port
from tests.support.fakes import json_reply


def wait_until(check, timeout: float = 5.0) -> None:
    end = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < end, "condition not met in time"
        time.sleep(0.02)


@pytest.fixture
def three(fakes_pool, pool_proxy):
    """dead (refuses connections) -> broken (5xx) -> good (an Ollama backend), tried in that order (weights)."""
    broken, good = fakes_pool(), fakes_pool()
    broken.serve_openai_models("qwen3")
    broken.default("POST", "/v1/chat/completions", json_reply(fakes.openai_error("overloaded", "server_error"),
                                                              status=500))
    good.serve_ollama_models("llama3.2:latest")
    good.default("POST", "/api/chat", fakes.ollama_chat_responder(["Hello", " from", " good"]))
    text = f"""
[backends.dead]
type = "openai"
url = "http://127.0.0.1:{free_port()}"
models = ["qwen3"]
weight = 100
[backends.broken]
type = "openai"
url = "{broken.url}"
weight = 10
[backends.good]
type = "ollama"
url = "{good.url}"
aliases = {{ qwen3 = "llama3.2" }}
[routing]
strategy = "weighted"
retries = 2
backoff_ms = 1
"""
    return pool_proxy(text), broken, good


def test_openai_client_fails_over_past_a_refusing_and_a_5xx_backend(three, openai_client):
    proxy, broken, good = three
    client = openai_client(proxy)
    reply = client.chat.completions.create(model="qwen3", messages=[{"role": "user", "content": "hi"}])
    assert reply.choices[0].message.content == "Hello from good" and reply.model == "qwen3"
    assert good.last("/api/chat").json["model"] == "llama3.2"  # good's alias, translated to Ollama
    assert len(broken.calls("/v1/chat/completions")) == 1
    stream = client.chat.completions.create(model="qwen3", messages=[{"role": "user", "content": "hi"}],
                                            stream=True)
    assert "".join(c.choices[0].delta.content or "" for c in stream if c.choices) == "Hello from good"
    states = {b["name"]: b for b in requests.get(proxy.url + "/healthz", timeout=5).json()["backends"]}
    assert states["dead"]["failures"] == 2 and "refused" in states["dead"]["last_error"]
    assert states["broken"]["failures"] == 2 and states["good"]["state"] == "healthy"


def test_ollama_client_fails_over_and_the_answer_passes_through(three, ollama_client):
    proxy, _, good = three
    reply = ollama_client(proxy).chat(model="qwen3", messages=[{"role": "user", "content": "hi"}])
    assert reply.message.content == "Hello from good"
    parts = ollama_client(proxy).chat(model="qwen3", messages=[{"role": "user", "content": "hi"}], stream=True)
    assert "".join(p.message.content for p in parts) == "Hello from good"


def test_the_log_record_names_the_backend_that_answered_and_the_attempts_before(three):
    proxy, _, _ = three
    r = requests.post(proxy.url + "/v1/chat/completions", timeout=10,
                      json={"model": "qwen3", "messages": [{"role": "user", "content": "hi"}]})
    assert r.status_code == 200
    store = proxy.app.extensions["llm_proxy"].extras["log_store"]
    wait_until(lambda: store.models.Exchange.select().count() >= 1)
    row = store.models.Exchange.select().dicts()[0]
    assert row["backend_name"] == "good" and row["backend_type"] == "ollama"
    attempts = json.loads(row["attempts"])
    assert [(a["backend"], a["status"]) for a in attempts] == [("dead", None), ("broken", 500)]
    assert "refused" in attempts[0]["error"] and all(a["ms"] >= 0 for a in attempts)


def test_a_4xx_is_the_answer_not_a_reason_to_fail_over(fakes_pool, pool_proxy):
    first, second = fakes_pool(), fakes_pool()
    for fake in (first, second):
        fake.serve_openai_models("m")
        fake.default("POST", "/v1/chat/completions", fakes.openai_chat_responder(["ok"]))
    first.default("POST", "/v1/chat/completions", json_reply(fakes.openai_error("bad temperature"), status=400))
    proxy = pool_proxy(f'[backends.a]\ntype = "openai"\nurl = "{first.url}"\nweight = 9\n'
                       f'[backends.b]\ntype = "openai"\nurl = "{second.url}"\n[routing]\nstrategy = "weighted"\n')
    r = requests.post(proxy.url + "/v1/chat/completions", timeout=10,
                      json={"model": "m", "messages": [{"role": "user", "content": "hi"}]})
    assert r.status_code == 400 and "bad temperature" in r.json()["error"]["message"]
    assert not second.calls("/v1/chat/completions")


def test_a_blackholed_backend_fails_over_within_first_byte_s(fakes_pool, pool_proxy):
    hole, good = fakes_pool(), fakes_pool()
    hole.serve_openai_models("m")
    hole.default("POST", "/v1/chat/completions", fakes.Reply(hang=30))
    good.serve_openai_models("m")
    good.default("POST", "/v1/chat/completions", fakes.openai_chat_responder(["fine"]))
    proxy = pool_proxy(f'[backends.hole]\ntype = "openai"\nurl = "{hole.url}"\nweight = 9\n'
                       'timeouts = { first_byte_s = 0.5 }\n'
                       f'[backends.good]\ntype = "openai"\nurl = "{good.url}"\n[routing]\nstrategy = "weighted"\n')
    started = time.monotonic()
    r = requests.post(proxy.url + "/v1/chat/completions", timeout=10,
                      json={"model": "m", "messages": [{"role": "user", "content": "hi"}]})
    assert r.status_code == 200 and r.json()["choices"][0]["message"]["content"] == "fine"
    assert time.monotonic() - started < 3


def test_rules_send_model_globs_to_named_backends(fakes_pool, pool_proxy, openai_client, ollama_client):
    cloud, local = fakes_pool(), fakes_pool()
    cloud.serve_openai_models("gpt-4o", "llama3.2")
    cloud.default("POST", "/v1/chat/completions", fakes.openai_chat_responder(["cloud"]))
    local.serve_ollama_models("llama3.2:latest")
    local.default("POST", "/api/chat", fakes.ollama_chat_responder(["local"]))
    proxy = pool_proxy(f'[backends.cloud]\ntype = "openai"\nurl = "{cloud.url}"\n'
                       f'[backends.local]\ntype = "ollama"\nurl = "{local.url}"\n'
                       '[[routing.rules]]\nmodel = "gpt-*"\nbackends = ["cloud"]\n'
                       '[[routing.rules]]\nmodel = "*"\nbackends = ["local"]\n')
    oa = openai_client(proxy)
    for _ in range(2):  # whatever the round-robin turn
        assert oa.chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": "x"}]
                                          ).choices[0].message.content == "cloud"
        assert oa.chat.completions.create(model="llama3.2", messages=[{"role": "user", "content": "x"}]
                                          ).choices[0].message.content == "local"
        assert ollama_client(proxy).chat(model="gpt-4o", messages=[{"role": "user", "content": "x"}]
                                         ).message.content == "cloud"
    assert len(cloud.calls("/v1/chat/completions")) == 4 and len(local.calls("/api/chat")) == 2


def test_round_robin_spreads_requests_over_backends_of_both_dialects(fakes_pool, pool_proxy, ollama_client):
    a, b = fakes_pool(), fakes_pool()
    a.serve_openai_models("m")
    a.default("POST", "/v1/chat/completions", fakes.openai_chat_responder(["A"]))
    b.serve_ollama_models("m:latest")
    b.default("POST", "/api/chat", fakes.ollama_chat_responder(["B"]))
    proxy = pool_proxy(f'[backends.a]\ntype = "openai"\nurl = "{a.url}"\n[backends.b]\ntype = "ollama"\n'
                       f'url = "{b.url}"\n')
    got = [ollama_client(proxy).chat(model="m", messages=[{"role": "user", "content": "x"}]).message.content
           for _ in range(4)]
    assert sorted(got) == ["A", "A", "B", "B"]


def test_model_lists_are_the_union_of_healthy_backends_one_entry_per_name(fakes_pool, pool_proxy, openai_client,
                                                                          ollama_client):
    a, b = fakes_pool(), fakes_pool()
    a.serve_openai_models("qwen3-8b", "shared")
    b.serve_ollama_models("llama3.2:latest", "shared:latest")
    proxy = pool_proxy(f'[backends.a]\ntype = "openai"\nurl = "{a.url}"\naliases = {{ fast = "qwen3-8b" }}\n'
                       f'[backends.b]\ntype = "ollama"\nurl = "{b.url}"\n'
                       f'[backends.dead]\ntype = "openai"\nurl = "http://127.0.0.1:{free_port()}"\n',
                       MODEL_MAP="big=llama3.2:latest")
    ids = sorted(m.id for m in openai_client(proxy).models.list())
    assert ids == ["big", "fast", "llama3.2:latest", "qwen3-8b", "shared"]
    tags = sorted(m.model for m in ollama_client(proxy).list().models)
    assert tags == ["big:latest", "fast:latest", "llama3.2:latest", "qwen3-8b:latest", "shared:latest"]
    ps = requests.get(proxy.url + "/api/ps", timeout=5).json()["models"]
    assert len(ps) == 5
    shown = ollama_client(proxy).show("llama3.2")  # from b, the Ollama backend that has it
    assert len(b.calls("/api/show")) == 1 and shown.modelinfo
    shown = ollama_client(proxy).show("qwen3-8b")  # built from a's list, b not asked
    assert len(b.calls("/api/show")) == 1 and shown.capabilities


def test_no_healthy_backend_is_a_503_in_the_callers_dialect_with_retry_after(pool_proxy):
    port = free_port()
    proxy = pool_proxy(f'[backends.gone]\ntype = "openai"\nurl = "http://127.0.0.1:{port}"\nmodels = ["m"]\n'
                       'health = { unhealthy_after = 1, interval_s = 60 }\n[routing]\nretries = 0\n')
    body = {"model": "m", "messages": [{"role": "user", "content": "hi"}]}
    first = requests.post(proxy.url + "/v1/chat/completions", json=body, timeout=10)
    assert first.status_code == 502 and "refused" in first.json()["error"]["message"]
    again = requests.post(proxy.url + "/v1/chat/completions", json=body, timeout=10)
    assert again.status_code == 503 and again.headers["Retry-After"] == "120"
    assert "gone: " in again.json()["error"]["message"] and "refused" in again.json()["error"]["message"]
    ollama = requests.post(proxy.url + "/api/chat", json=body, timeout=10)
    assert ollama.status_code == 503 and "gone" in ollama.json()["error"] and ollama.headers["Retry-After"]
    health = requests.get(proxy.url + "/healthz", timeout=5)
    assert health.status_code == 503 and health.json()["backends"][0]["state"] == "down"


def test_probes_bring_a_backend_back(fakes_pool, pool_proxy):
    fake = fakes_pool()
    fake.default("GET", "/v1/models", json_reply({"error": "starting"}, status=503))
    fake.default("POST", "/v1/chat/completions", fakes.openai_chat_responder(["back"]))
    proxy = pool_proxy(f'[backends.gpu]\ntype = "openai"\nurl = "{fake.url}"\nmodels = ["m"]\n'
                       'health = { interval_s = 0.05, unhealthy_after = 2, healthy_after = 2 }\n')
    member = proxy.pool.members[0]
    wait_until(lambda: not member.healthy)  # two failed probes
    body = {"model": "m", "messages": [{"role": "user", "content": "hi"}]}
    assert requests.post(proxy.url + "/v1/chat/completions", json=body, timeout=10).status_code == 503
    fake.serve_openai_models("m")
    wait_until(lambda: member.healthy)
    r = requests.post(proxy.url + "/v1/chat/completions", json=body, timeout=10)
    assert r.status_code == 200 and r.json()["choices"][0]["message"]["content"] == "back"


def test_a_bad_file_stops_start_up_naming_the_backend_and_the_key(tmp_path):
    from proxy import create_app
    from proxy.config import ConfigError, Settings

    path = tmp_path / "b.toml"
    path.write_text('[backends.gpu]\ntype = "openai"\nurl = "http://x"\ntimeouts = { idle_s = -1 }\n')
    with pytest.raises(ConfigError, match=r"backend 'gpu', timeouts, key 'idle_s'"):
        create_app(Settings.from_env({"BACKENDS_FILE": str(path), "LOG_ENABLED": "false"}))
