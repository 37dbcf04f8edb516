"""The stub backend: deterministic echo, word-by-word stream, token counts, tool calls on request."""
import json

from proxy import jsonio
from proxy.assemble import assemble_openai_sse
from proxy.backends.stub import StubBackend, embed, reply_for
from proxy.config import Settings

TOOLS = [{"type": "function", "function": {"name": "get_weather", "parameters": {
    "type": "object", "properties": {"city": {"type": "string"}, "days": {"type": "integer"}}}}}]


def stub():
    return StubBackend(Settings.from_env({"BACKEND_TYPE": "stub", "STUB_DELAY_MS": "0"}))


def test_echoes_the_last_user_message():
    assert reply_for({"messages": [{"role": "user", "content": "hello"}]}) == ("You said: hello", None)


def test_calls_a_tool_when_the_user_names_it():
    text, call = reply_for({"messages": [{"role": "user", "content": "use get_weather for Paris"}], "tools": TOOLS})
    assert text == "" and call["function"]["name"] == "get_weather"
    assert json.loads(call["function"]["arguments"]) == {"city": "use get_weather for Paris", "days": 1}


def test_reports_a_tool_result():
    text, call = reply_for({"messages": [{"role": "tool", "content": "sunny"}], "tools": TOOLS})
    assert text == "The tool returned: sunny" and call is None


def test_streams_word_by_word_with_usage_when_asked():
    body = {"model": "stub", "stream": True, "stream_options": {"include_usage": True},
            "messages": [{"role": "user", "content": "one two"}]}
    chunks = list(stub().open("POST", "/v1/chat/completions", jsonio.dumps(body)).stream())
    assert len(chunks) == 1 + 4 + 1 + 1 + 1  # role, 4 words, finish, usage, [DONE]
    answer = assemble_openai_sse(b"".join(chunks))
    assert "".join(answer.content) == "You said: one two"
    assert (answer.prompt_tokens, answer.completion_tokens) == (3, 4)


def test_max_tokens_cuts_with_finish_reason_length():
    body = {"model": "stub", "max_tokens": 2, "messages": [{"role": "user", "content": "a b c d"}]}
    resp = stub().open("POST", "/v1/chat/completions", jsonio.dumps(body)).json()
    assert resp["choices"][0]["finish_reason"] == "length" and resp["choices"][0]["message"]["content"] == "You said:"


def test_embeddings_are_deterministic_unit_vectors():
    vector = embed("hello")
    assert vector == embed("hello") and abs(sum(x * x for x in vector) - 1) < 1e-9
