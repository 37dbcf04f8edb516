"""A body naming a field twice in different letter cases (`model` and `Model`) is refused in the caller's
dialect, with a model allow-list or without; a repeated key reaches the backend once, with the value that
was checked. Ollama's decoder matches keys without regard to case and takes the last match, so either
would otherwise send the backend a model the gate never saw."""
from __future__ import annotations

import json

import pytest

from tests.support.fakes import json_reply, ollama_chat_response
from tests.support.policy import ALICE, BOB, assert_ollama_error, assert_openai_error, call, write_keys

KEYS = f"alice:{ALICE},bob:{BOB}"
MESSAGES = [{"role": "user", "content": "hi"}]


@pytest.fixture
def ollama_restricted(backend_setup, tmp_path):
    """An Ollama backend; alice may use llama3.2 only, bob anything."""
    path = write_keys(tmp_path / "keys.toml", '[keys.alice]\nmodels = ["llama3.2*"]\n')
    setup = backend_setup("ollama", API_KEYS=KEYS, KEYS_FILE=path)
    setup.fake.default("POST", "/api/chat", json_reply(ollama_chat_response("Hello")))
    setup.fake.default("POST", "/api/copy", json_reply({}))
    setup.fake.default("POST", "/api/pull", json_reply({"status": "success"}))
    return setup


def _raw(model_json: str, rest: str = "") -> bytes:
    """A body with keys spelled exactly as given (a dict could not hold two `model` keys)."""
    return ("{" + model_json + rest + "}").encode()


CHAT_REST = ', "messages": [{"role": "user", "content": "hi"}], "stream": false'


@pytest.mark.parametrize("path, body", [
    ("/api/chat", _raw('"model": "llama3.2", "Model": "nomic-embed-text"', CHAT_REST)),
    ("/api/chat", _raw('"Model": "nomic-embed-text", "model": "llama3.2"', CHAT_REST)),
    ("/api/generate", _raw('"model": "llama3.2", "MODEL": "nomic-embed-text", "prompt": "hi", "stream": false')),
    ("/api/show", _raw('"name": "llama3.2", "Name": "nomic-embed-text"')),
    ("/api/pull", _raw('"model": "llama3.2", "mOdel": "nomic-embed-text", "stream": false')),
    ("/api/copy", _raw('"source": "llama3.2", "\u017fource": "nomic-embed-text", "destination": "llama3.2-copy"')),
    ("/api/embed", _raw('"model": "llama3.2", "Model": "nomic-embed-text", "input": "hi"')),
])
def test_case_variant_model_fields_are_refused_for_a_restricted_key(ollama_restricted, path, body):
    resp = call(ollama_restricted.proxy, "POST", path, ALICE, data=body,
                headers={"Content-Type": "application/json"})
    message = assert_ollama_error(resp, 400)
    assert "differ only in letter case" in message
    assert ollama_restricted.fake.calls(path) == []


def test_case_variant_keys_are_refused_on_the_openai_front_in_its_dialect(ollama_restricted):
    body = _raw('"model": "llama3.2", "Model": "nomic-embed-text"', ', "messages": [{"role": "user", "content": "hi"}]')
    for key in (ALICE, BOB):  # restricted or not: the body is ambiguous either way
        resp = call(ollama_restricted.proxy, "POST", "/v1/chat/completions", key, data=body,
                    headers={"Content-Type": "application/json"})
        err = assert_openai_error(resp, 400, "invalid_request_error")
        assert err["code"] == "duplicate_key" and err["param"] == "model"
    assert ollama_restricted.fake.calls("/api/chat") == []


def test_case_variant_keys_inside_messages_are_refused_without_any_allow_list(ollama_restricted):
    body = _raw('"model": "llama3.2"', ', "messages": [{"role": "user", "content": "hi", "Content": "other"}],'
                                       ' "stream": false')
    resp = call(ollama_restricted.proxy, "POST", "/api/chat", BOB, data=body,
                headers={"Content-Type": "application/json"})
    assert "'content' and 'Content'" in assert_ollama_error(resp, 400)
    assert ollama_restricted.fake.calls("/api/chat") == []


def test_case_variant_keys_are_refused_on_a_proxy_without_keys(backend_setup):
    setup = backend_setup("ollama")
    body = _raw('"model": "llama3.2", "Model": "nomic-embed-text"', CHAT_REST)
    resp = call(setup.proxy, "POST", "/api/chat", data=body, headers={"Content-Type": "application/json"})
    assert_ollama_error(resp, 400)
    assert setup.fake.calls("/api/chat") == []


@pytest.mark.parametrize("path, body, field", [
    ("/api/chat", _raw('"model": "nomic-embed-text", "model": "llama3.2"', CHAT_REST), "model"),
    ("/api/copy", _raw('"source": "nomic-embed-text", "source": "llama3.2", "destination": "llama3.2-copy"'),
     "source"),
    ("/api/pull", _raw('"model": "nomic-embed-text", "model": "llama3.2", "stream": false'), "model"),
])
def test_an_exactly_repeated_key_reaches_the_backend_once_with_the_checked_value(ollama_restricted, path, body,
                                                                                 field):
    resp = call(ollama_restricted.proxy, "POST", path, ALICE, data=body, headers={"Content-Type": "application/json"})
    assert resp.status_code == 200, resp.text
    sent = ollama_restricted.fake.last(path).body
    assert sent.count(f'"{field}"'.encode()) == 1, sent  # one field, whichever way the backend reads JSON
    assert json.loads(sent)[field] in ("llama3.2", "llama3.2:latest")  # the checked one, as the backend names it


def test_the_checked_model_still_passes_when_spelled_once(ollama_restricted):
    resp = call(ollama_restricted.proxy, "POST", "/api/chat", ALICE,
                json={"model": "llama3.2", "messages": MESSAGES, "stream": False})
    assert resp.status_code == 200, resp.text
    assert ollama_restricted.fake.last("/api/chat").json["model"] == "llama3.2:latest"


@pytest.mark.parametrize("value, clash", [
    ({"model": "a", "Model": "b"}, ("model", "Model")),
    ({"source": "a", "\u017fource": "b"}, ("source", "\u017fource")),  # long s folds to s, as in Go
    ({"kind": "a", "\u212aind": "b"}, ("kind", "\u212aind")),  # Kelvin sign folds to k
    ({"a": [{"x": 1}, {"role": "u", "ROLE": "s"}]}, ("role", "ROLE")),
    ({"model": "a", "Messages": [], "options": {"Temperature": 1}}, None),
    ({"a1": 1, "_": 2, "1": 3}, None),
    ([1, "x", {"k": {"K": 1}}], None),
    # free-form maps keep keys exactly in every backend: a schema or tool arguments may name `ID` and `id`
    ({"tools": [{"function": {"parameters": {"properties": {"ID": {}, "id": {}}}}}]}, None),
    ({"messages": [{"tool_calls": [{"function": {"arguments": {"Path": 1, "path": 2}}}]}]}, None),
    ({"format": {"properties": {"A": {}, "a": {}}}}, None),
    ({"tools": [{"function": {"name": "f", "Name": "g", "parameters": {}}}]}, ("name", "Name")),
])
def test_first_clash_finds_keys_equal_under_case_folding_at_any_depth(value, clash):
    from proxy.keycase import first_clash

    assert first_clash(value) == clash
