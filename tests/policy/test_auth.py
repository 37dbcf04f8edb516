"""API keys, allowed networks, per-key networks and models, KEYS_FILE reloading, the client's
Authorization never going upstream — through real sockets and the official client libraries."""
from __future__ import annotations

import time

import ollama
import openai
import pytest

from tests.support import fakes
from tests.support.policy import ALICE, BOB, assert_ollama_error, assert_openai_error, call, chat_body, write_keys

KEYS = f"alice:{ALICE},bob:{BOB}"


@pytest.fixture
def keyed(backend_setup):
    """The proxy in front of a scripted OpenAI backend, with keys for alice and bob."""
    setup = backend_setup("openai", API_KEYS=KEYS)
    setup.script_chat()
    return setup


# --- keys ------------------------------------------------------------------------------------------------

def test_missing_key_is_401_in_the_openai_dialect(keyed):
    err = assert_openai_error(call(keyed.proxy, "GET", "/v1/models"), 401, "authentication_error")
    assert err["code"] == "invalid_api_key"
    assert "API key" in err["message"]


def test_missing_key_is_401_in_the_ollama_dialect_with_www_authenticate(keyed):
    resp = call(keyed.proxy, "POST", "/api/chat", json=chat_body(keyed.model))
    assert "API key" in assert_ollama_error(resp, 401)
    assert resp.headers["WWW-Authenticate"].startswith("Bearer")
    assert keyed.chat_calls() == []


def test_wrong_key_is_an_authentication_error_for_the_openai_sdk(keyed, openai_client):
    client = openai_client(keyed.proxy).with_options(api_key="sk-wrong")
    with pytest.raises(openai.AuthenticationError) as info:
        client.chat.completions.create(model=keyed.model, messages=[{"role": "user", "content": "hi"}])
    assert info.value.status_code == 401
    assert "not valid" in info.value.message
    assert keyed.chat_calls() == []


def test_wrong_key_is_a_401_response_error_for_the_ollama_client(keyed, ollama_client):
    client = ollama_client(keyed.proxy, headers={"Authorization": "Bearer sk-wrong"})
    with pytest.raises(ollama.ResponseError) as info:
        client.chat(model=keyed.model, messages=[{"role": "user", "content": "hi"}])
    assert info.value.status_code == 401
    assert "not valid" in info.value.error


def test_right_key_as_bearer_works_with_the_openai_sdk(keyed, openai_client):
    client = openai_client(keyed.proxy).with_options(api_key=ALICE)
    reply = client.chat.completions.create(model=keyed.model, messages=[{"role": "user", "content": "hi"}])
    assert reply.choices[0].message.content == "Hello world"
    assert [m.id for m in client.models.list()] == ["qwen3-8b", "text-embed-3"]


def test_right_key_as_x_api_key_works_with_the_ollama_client(keyed, ollama_client):
    client = ollama_client(keyed.proxy, headers={"X-API-Key": BOB})
    assert client.chat(model=keyed.model, messages=[{"role": "user", "content": "hi"}]).message.content == "Hello world"
    assert [m.model for m in client.list().models] == ["qwen3-8b:latest", "text-embed-3:latest"]


def test_right_key_as_bearer_works_with_the_ollama_client_streaming(keyed, ollama_client):
    client = ollama_client(keyed.proxy, headers={"Authorization": f"Bearer {ALICE}"})
    parts = [c.message.content for c in client.chat(model=keyed.model, messages=[{"role": "user", "content": "hi"}],
                                                    stream=True)]
    assert "".join(parts) == "Hello world"


@pytest.mark.parametrize("method, path", [("GET", "/"), ("HEAD", "/"), ("GET", "/health"), ("GET", "/api/version"),
                                          ("HEAD", "/api/version")])
def test_probe_paths_stay_open_without_a_key(keyed, method, path):
    assert call(keyed.proxy, method, path).status_code == 200


def test_ollama_client_version_probe_needs_no_key(keyed):
    import httpx

    assert httpx.get(keyed.url + "/api/version").json()["version"]


def test_exchange_records_the_key_name_and_never_the_key(keyed, openai_client):
    seen = []
    keyed.proxy.app.extensions["llm_proxy"].sinks.append(lambda ex: seen.append(ex))
    openai_client(keyed.proxy).with_options(api_key=BOB).chat.completions.create(
        model=keyed.model, messages=[{"role": "user", "content": "hi"}])
    assert [ex.key_name for ex in seen] == ["bob"]
    assert seen[0].summary()["key"] == "bob"
    assert BOB not in repr({name: getattr(seen[0], name, None) for name in type(seen[0]).__slots__})


# --- networks ----------------------------------------------------------------------------------------------

def test_allowed_network_admits_clients_without_a_key(backend_setup, ollama_client):
    setup = backend_setup("openai", API_KEYS=KEYS, ALLOWED_NETWORKS="10.0.0.0/8, 127.0.0.0/8")
    setup.script_chat()
    client = ollama_client(setup.proxy)  # sends no header at all
    assert client.chat(model=setup.model, messages=[{"role": "user", "content": "hi"}]).message.content == "Hello world"


@pytest.mark.parametrize("header", ["bearer", "x-api-key"])
def test_a_wrong_key_from_an_allowed_network_is_401_and_a_right_key_names_the_caller(backend_setup, header):
    setup = backend_setup("openai", API_KEYS=KEYS, ALLOWED_NETWORKS="127.0.0.1")
    seen = []
    setup.proxy.app.extensions["llm_proxy"].sinks.append(lambda ex: seen.append(ex.key_name))
    setup.script_chat()
    wrong = call(setup.proxy, "POST", "/v1/chat/completions", "sk-whatever", header, json=chat_body(setup.model))
    assert "not valid" in assert_openai_error(wrong, 401, "authentication_error")["message"]
    assert "not valid" in assert_ollama_error(call(setup.proxy, "GET", "/api/tags", "sk-whatever", header), 401)
    assert setup.chat_calls() == []
    assert call(setup.proxy, "POST", "/v1/chat/completions", ALICE, header, json=chat_body(setup.model)).ok
    assert call(setup.proxy, "POST", "/v1/chat/completions", json=chat_body(setup.model)).ok  # no key: the network
    assert [name for name in seen if name] == ["alice"] and seen[-1] is None


def test_without_configured_keys_an_allowed_network_ignores_whatever_key_a_client_sends(backend_setup):
    # clients such as the OpenAI SDK always send some key; with no keys to check it against there is none wrong
    setup = backend_setup("openai", ALLOWED_NETWORKS="127.0.0.1")
    assert call(setup.proxy, "GET", "/v1/models", "sk-anything").status_code == 200


def test_clients_outside_the_allowed_networks_still_need_a_key(backend_setup):
    setup = backend_setup("openai", API_KEYS=KEYS, ALLOWED_NETWORKS="10.0.0.0/8")
    assert_ollama_error(call(setup.proxy, "GET", "/api/tags"), 401)
    assert call(setup.proxy, "GET", "/api/tags", ALICE).status_code == 200


def test_allowed_networks_without_keys_serve_only_those_networks(backend_setup):
    setup = backend_setup("openai", ALLOWED_NETWORKS="10.0.0.0/8")
    assert_openai_error(call(setup.proxy, "GET", "/v1/models"), 401)
    assert call(setup.proxy, "GET", "/health").status_code == 200


def test_key_bound_to_other_networks_is_403_in_both_dialects(backend_setup, tmp_path, openai_client):
    path = write_keys(tmp_path / "keys.toml", '[keys.alice]\nnetworks = ["10.0.0.0/8"]\n')
    setup = backend_setup("openai", API_KEYS=KEYS, KEYS_FILE=path)
    setup.script_chat()
    with pytest.raises(openai.PermissionDeniedError) as info:
        openai_client(setup.proxy).with_options(api_key=ALICE).models.list()
    assert "may not be used from 127.0.0.1" in info.value.message
    assert "alice" in assert_ollama_error(call(setup.proxy, "GET", "/api/tags", ALICE), 403)
    assert call(setup.proxy, "GET", "/api/tags", BOB).status_code == 200


# --- models -------------------------------------------------------------------------------------------------

@pytest.fixture
def restricted(backend_setup, tmp_path):
    """alice may use qwen3-* only; bob anything."""
    path = write_keys(tmp_path / "keys.toml", '[keys.alice]\nmodels = ["qwen3-*"]\n')
    setup = backend_setup("openai", API_KEYS=KEYS, KEYS_FILE=path)
    setup.script_chat()
    setup.fake.default("POST", "/v1/embeddings", fakes.json_reply(fakes.openai_embeddings([[0.1, 0.2]])))
    return setup


def test_restricted_key_uses_its_allowed_model(restricted, openai_client):
    client = openai_client(restricted.proxy).with_options(api_key=ALICE)
    reply = client.chat.completions.create(model="qwen3-8b", messages=[{"role": "user", "content": "hi"}])
    assert reply.choices[0].message.content == "Hello world"


def test_restricted_key_is_refused_other_models_for_openai_chat_and_embeddings(restricted, openai_client):
    client = openai_client(restricted.proxy).with_options(api_key=ALICE)
    with pytest.raises(openai.PermissionDeniedError) as info:
        client.embeddings.create(model="text-embed-3", input="x")
    assert "may not use the model 'text-embed-3'" in info.value.message
    with pytest.raises(openai.PermissionDeniedError):
        client.chat.completions.create(model="text-embed-3", messages=[{"role": "user", "content": "hi"}])
    with pytest.raises(openai.PermissionDeniedError):
        client.models.retrieve("text-embed-3")
    assert restricted.fake.calls("/v1/embeddings") == [] and restricted.chat_calls() == []


@pytest.mark.parametrize("action", ["chat", "generate", "embed", "show"])
def test_restricted_key_is_refused_other_models_on_the_ollama_front(restricted, ollama_client, action):
    client = ollama_client(restricted.proxy, headers={"Authorization": f"Bearer {ALICE}"})
    calls = {"chat": lambda: client.chat(model="text-embed-3", messages=[{"role": "user", "content": "hi"}]),
             "generate": lambda: client.generate(model="text-embed-3", prompt="hi"),
             "embed": lambda: client.embed(model="text-embed-3", input="hi"),
             "show": lambda: client.show("text-embed-3")}
    with pytest.raises(ollama.ResponseError) as info:
        calls[action]()
    assert info.value.status_code == 403
    assert "text-embed-3" in info.value.error


def test_model_lists_show_a_restricted_key_only_its_models(restricted, openai_client, ollama_client):
    assert [m.id for m in openai_client(restricted.proxy).with_options(api_key=ALICE).models.list()] == ["qwen3-8b"]
    alice = ollama_client(restricted.proxy, headers={"Authorization": f"Bearer {ALICE}"})
    assert [m.model for m in alice.list().models] == ["qwen3-8b:latest"]
    assert [m.model for m in alice.ps().models] == ["qwen3-8b:latest"]
    bob = ollama_client(restricted.proxy, headers={"Authorization": f"Bearer {BOB}"})
    assert [m.model for m in bob.list().models] == ["qwen3-8b:latest", "text-embed-3:latest"]


def test_defaults_restrict_clients_admitted_by_network(backend_setup, tmp_path):
    path = write_keys(tmp_path / "keys.toml", '[defaults]\nmodels = ["text-*"]\n')
    setup = backend_setup("openai", ALLOWED_NETWORKS="127.0.0.0/8", API_KEYS=KEYS, KEYS_FILE=path)
    assert [m["id"] for m in call(setup.proxy, "GET", "/v1/models").json()["data"]] == ["text-embed-3"]
    assert_openai_error(call(setup.proxy, "POST", "/v1/chat/completions", json=chat_body("qwen3-8b")), 403)


# --- KEYS_FILE reloading -----------------------------------------------------------------------------------

def test_keys_file_changes_apply_without_a_restart(backend_setup, tmp_path):
    keys = tmp_path / "keys.toml"
    write_keys(keys, '[keys.carol]\nkey = "sk-carol-1"\n')
    setup = backend_setup("openai", KEYS_FILE=str(keys))
    assert call(setup.proxy, "GET", "/v1/models", "sk-carol-1").status_code == 200
    assert_openai_error(call(setup.proxy, "GET", "/v1/models", "sk-dave-1"), 401)

    write_keys(keys, '[keys.carol]\nkey = "sk-carol-2"\nmodels = ["qwen*"]\n[keys.dave]\nkey = "sk-dave-1"\n')
    deadline = time.monotonic() + 5  # the file is looked at once a second
    while call(setup.proxy, "GET", "/v1/models", "sk-carol-1").status_code == 200:
        assert time.monotonic() < deadline, "the changed KEYS_FILE was not applied"
        time.sleep(0.05)
    assert_openai_error(call(setup.proxy, "GET", "/v1/models", "sk-carol-1"), 401)
    carol = call(setup.proxy, "GET", "/v1/models", "sk-carol-2")
    assert [m["id"] for m in carol.json()["data"]] == ["qwen3-8b"]
    assert call(setup.proxy, "GET", "/v1/models", "sk-dave-1").status_code == 200


def test_a_broken_keys_file_keeps_the_previous_version(backend_setup, tmp_path, caplog):
    keys = tmp_path / "keys.toml"
    write_keys(keys, '[keys.carol]\nkey = "sk-carol-1"\n')
    setup = backend_setup("openai", KEYS_FILE=str(keys))
    write_keys(keys, '[keys.carol\nkey = "sk-carol-2"\n')
    deadline = time.monotonic() + 5  # the file is looked at once a second
    while "KEYS_FILE not reloaded" not in caplog.text:
        assert call(setup.proxy, "GET", "/v1/models", "sk-carol-1").status_code == 200
        assert time.monotonic() < deadline, "the broken KEYS_FILE was not noticed"
        time.sleep(0.05)
    assert call(setup.proxy, "GET", "/v1/models", "sk-carol-1").status_code == 200
    assert "sk-carol" not in caplog.text


# --- what goes upstream --------------------------------------------------------------------------------------

@pytest.mark.parametrize("kind", ["openai", "ollama"])
@pytest.mark.parametrize("backend_key", ["", "sk-upstream-secret"])
def test_client_authorization_is_never_forwarded_upstream(backend_setup, kind, backend_key):
    setup = backend_setup(kind, API_KEYS=KEYS, BACKEND_API_KEY=backend_key)
    setup.script_chat()
    assert call(setup.proxy, "POST", "/v1/chat/completions", ALICE, json=chat_body(setup.model)).ok
    assert call(setup.proxy, "POST", "/api/chat", BOB, header="x-api-key",
                json=chat_body(setup.model, stream=False)).ok
    seen = list(setup.fake.requests)
    assert len(setup.chat_calls()) == 2 and seen
    for recorded in seen:
        assert recorded.header("x-api-key") is None
        expected = f"Bearer {backend_key}" if backend_key else None
        assert recorded.header("authorization") == expected, recorded.path
        assert ALICE not in repr(recorded.headers) and BOB not in repr(recorded.headers)


def test_a_keys_file_emptied_while_serving_keeps_its_keys_and_the_proxy_closed(backend_setup, tmp_path, caplog):
    keys = tmp_path / "keys.toml"
    write_keys(keys, '[keys.carol]\nkey = "sk-carol-1"\n')
    setup = backend_setup("openai", KEYS_FILE=str(keys))  # every key comes from the file
    assert_openai_error(call(setup.proxy, "GET", "/v1/models"), 401)
    write_keys(keys, "")
    deadline = time.monotonic() + 5  # the file is looked at once a second, when a request comes
    while "is now empty" not in caplog.text:
        assert_openai_error(call(setup.proxy, "GET", "/v1/models"), 401)
        assert time.monotonic() < deadline, "the emptied KEYS_FILE was not noticed"
        time.sleep(0.05)
    assert_openai_error(call(setup.proxy, "GET", "/v1/models"), 401)
    assert call(setup.proxy, "GET", "/v1/models", "sk-carol-1").status_code == 200
