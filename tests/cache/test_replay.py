"""A hit's replay, without sockets: an event a word (thinking first, then content, then the tool calls), a
well-formed end in each dialect, and the entry read back from the answers the translators assemble."""
from __future__ import annotations

import json

from proxy.assemble import assemble_openai_sse
from proxy.cache import entry as entries
from proxy.cache import replay
from proxy.cache.key import Reply

ENTRY = {"op": "chat", "content": "It is sunny.", "thinking": "Look it up", "finish_reason": "tool_calls",
         "tool_calls": [{"id": "call_1", "name": "weather", "arguments": {"city": "Paris"}}],
         "prompt_tokens": 12, "completion_tokens": 9}


def test_words_keep_every_character():
    assert replay.words("Hello  big\nworld ") == ["Hello", "  big", "\nworld", " "]
    assert "".join(replay.words(" a b ")) == " a b "


def test_an_openai_stream_has_role_words_calls_finish_usage_and_done():
    chunks = replay.stream(ENTRY, Reply("openai", "chat", True, include_usage=True), "m", 1700000000.0, "chatcmpl-x")
    events = [c.decode()[6:].strip() for c in chunks]
    assert events[-1] == "[DONE]"
    bodies = [json.loads(e) for e in events[:-1]]
    deltas = [b["choices"][0]["delta"] for b in bodies if b["choices"]]
    assert deltas[0] == {"role": "assistant", "content": ""}
    assert [d.get("reasoning_content") for d in deltas if "reasoning_content" in d] == ["Look", " it", " up"]
    assert [d["content"] for d in deltas[1:] if d.get("content")] == ["It", " is", " sunny."]
    assert [b["choices"][0]["finish_reason"] for b in bodies if b["choices"]][-1] == "tool_calls"
    assert bodies[-1]["choices"] == [] and bodies[-1]["usage"]["total_tokens"] == 21
    assert {b["id"] for b in bodies} == {"chatcmpl-x"} and {b["model"] for b in bodies} == {"m"}
    again = entries.of_answer("chat", assemble_openai_sse(b"".join(chunks)))  # what the replay says is the entry
    assert again == ENTRY


def test_an_ollama_stream_ends_with_done_and_the_counts():
    lines = [json.loads(c) for c in replay.stream(ENTRY, Reply("ollama", "chat", True), "m", 1700000000.0, "x", 0.002)]
    assert "".join(line["message"].get("thinking", "") for line in lines) == "Look it up"
    assert "".join(line["message"]["content"] for line in lines) == "It is sunny."
    calls = [c for line in lines for c in line["message"].get("tool_calls") or ()]
    assert calls == [{"function": {"name": "weather", "arguments": {"city": "Paris"}}, "id": "call_1"}]
    last = lines[-1]
    assert last["done"] is True and not any(line["done"] for line in lines[:-1])
    assert (last["done_reason"], last["prompt_eval_count"], last["eval_count"]) == ("stop", 12, 9)
    assert last["total_duration"] == 2_000_000


def test_a_generate_entry_replays_as_ollama_generate_and_openai_text_completion():
    entry = {**ENTRY, "op": "generate", "tool_calls": [], "thinking": "", "finish_reason": "stop"}
    whole = json.loads(replay.whole(entry, Reply("ollama", "generate"), "m", 1700000000.0, "x"))
    assert whole["response"] == "It is sunny." and whole["done"] is True
    text = json.loads(replay.whole(entry, Reply("openai", "completion"), "m", 1700000000.0, "cmpl-x"))
    assert text["object"] == "text_completion" and text["choices"][0]["text"] == "It is sunny."
    assert text["usage"] == {"prompt_tokens": 12, "completion_tokens": 9, "total_tokens": 21}


def test_answers_that_are_not_whole_make_no_entry():
    from proxy.streaming import Answer

    cut, failed, open_ended = Answer(), Answer(), Answer()
    cut.finish_reason = "length"
    failed.finish_reason, failed.error = "stop", "the backend closed the stream before it finished"
    assert entries.of_answer("chat", cut) is None and entries.of_answer("chat", failed) is None
    assert entries.of_answer("chat", open_ended) is None and entries.of_answer("chat", None) is None
    assert entries.of_embedding(b'{"embeddings": [[1.0]]}', "ollama", "embed", 2) is None  # one vector for two
    assert entries.of_embedding(b"not json", "openai", "embed", 1) is None


def test_an_agent_front_is_fed_chat_chunks_a_word_each_then_the_finish_and_the_usage():
    chunks = replay.chat_chunks(ENTRY, "m", 1700000000.0)
    deltas = [c["choices"][0]["delta"] for c in chunks if c["choices"]]
    assert deltas[0] == {"role": "assistant", "content": ""}
    assert [d["content"] for d in deltas[1:] if d.get("content")] == ["It", " is", " sunny."]
    assert [c["choices"][0]["finish_reason"] for c in chunks if c["choices"]][-1] == "tool_calls"
    assert chunks[-1]["choices"] == [] and chunks[-1]["usage"]["completion_tokens"] == 9
    whole = replay.chat_completion(ENTRY, "m", 1700000000.0, "msg_1")
    message = whole["choices"][0]["message"]
    assert (message["content"], message["reasoning_content"]) == ("It is sunny.", "Look it up")
    assert json.loads(message["tool_calls"][0]["function"]["arguments"]) == {"city": "Paris"}
