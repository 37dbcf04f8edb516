"""Framing and stream translators, fed recorded streams split at every byte offset."""
import json
import re

import pytest

from proxy.errors import BackendError
from proxy.framing import Lines, iter_ndjson_lines, iter_sse_events
from proxy.passthrough import model_renames, passthrough_lines, passthrough_sse
from proxy.streaming import OllamaToOpenAI, OpenAIToOllama, ollama_ndjson_to_openai, openai_sse_to_ollama
from tests.support import TESTS_DIR

WIRE = TESTS_DIR / "data" / "wire"


def wire(name: str) -> bytes:
    return (WIRE / name).read_bytes()


def splits(data: bytes, every_offset_up_to: int = 2048):
    """The stream whole; one byte at a time (a boundary at every offset at once); then split in two at
    every offset (for long recordings, every offset of the first 2 KiB and a stride of 127 after it)."""
    yield [data]
    yield [data[i:i + 1] for i in range(len(data))]
    offsets = list(range(1, min(len(data), every_offset_up_to))) + list(range(every_offset_up_to, len(data), 127))
    for i in offsets:
        yield [data[:i], data[i:]]


def clock():
    return 1700000000.0


def to_ollama(chunks, kind="chat"):
    translator = OpenAIToOllama(kind, "client-model", 1699999999.0, clock=clock)
    lines = [json.loads(x) for x in openai_sse_to_ollama(chunks, translator)]
    return lines, translator.answer


def to_openai(chunks, kind="chat", include_usage=False):
    translator = OllamaToOpenAI(kind, "client-model", "chatcmpl-x", 1700000000, include_usage, clock=clock)
    out = b"".join(ollama_ndjson_to_openai(chunks, translator))
    return out, translator.answer


def test_lines_survive_any_split_including_crlf():
    data = b"a\r\nbb\n\nccc\r\nd"
    for chunks in splits(data):
        splitter = Lines()
        lines = [line for chunk in chunks for line in splitter.lines(chunk)]
        assert lines + [splitter.rest()] == [b"a\r", b"bb", b"", b"ccc\r", b"d"]


def test_sse_event_split_across_chunks_is_reassembled():
    data = b": comment\ndata: {\"a\":1}\n\nevent: error\ndata:{\"b\":\ndata: 2}\n\ndata: [DONE]\n\n"
    for chunks in splits(data):
        assert list(iter_sse_events(chunks)) == [("", b'{"a":1}'), ("error", b'{"b":\n2}'), ("", b"[DONE]")]


def test_sse_events_take_crlf_and_a_last_event_without_its_blank_line():
    data = b"data: 1\r\n\r\nevent: x\r\n: note\r\ndata:2\r\n\r\ndata: 3"
    for chunks in splits(data):
        assert list(iter_sse_events(chunks)) == [("", b"1"), ("x", b"2"), ("", b"3")]


def test_ndjson_lines_skip_blank_lines_and_keep_an_unterminated_last_line():
    data = b'{"a":1}\r\n\n  \n{"b":2}\n{"c":3}'
    for chunks in splits(data):
        assert [line.rstrip(b"\r") for line in iter_ndjson_lines(chunks)] == [b'{"a":1}', b'{"b":2}', b'{"c":3}']


@pytest.mark.parametrize("fixture", ["openai_chat_stream_tool_call.sse", "deepseek_chat_stream_reasoning_content.sse",
                                     "llamacpp_chat_stream_reasoning.SYNTHETIC.sse",
                                     "openai_chat_stream_after_tool_result.sse"])
def test_openai_stream_translation_is_independent_of_chunk_boundaries(fixture):
    data = wire(fixture)
    expected, _ = to_ollama([data])
    for chunks in splits(data):
        assert to_ollama(chunks)[0] == expected


def test_openai_tool_fragments_become_one_ollama_call_with_object_arguments():
    lines, answer = to_ollama([wire("openai_chat_stream_tool_call.sse")])
    calls = [line for line in lines if line["message"].get("tool_calls")]
    assert len(calls) == 1
    call = calls[0]["message"]["tool_calls"][0]
    assert isinstance(call["function"]["arguments"], dict) and call["function"]["name"]
    assert call["id"].startswith("call_")
    final = lines[-1]
    assert final["done"] is True and final["done_reason"] == "stop"
    assert final["prompt_eval_count"] > 0 and final["eval_count"] > 0 and not answer.usage_estimated
    for line in lines:  # every line carries what strict clients require
        assert {"model", "created_at", "message", "done"} <= set(line)
        assert line["message"]["role"] == "assistant" and isinstance(line["message"]["content"], str)
        assert line["created_at"].endswith("Z")


def test_reasoning_content_becomes_thinking_then_content():
    lines, answer = to_ollama([wire("deepseek_chat_stream_reasoning_content.sse")])
    thinking = "".join(line["message"].get("thinking", "") for line in lines)
    content = "".join(line["message"]["content"] for line in lines)
    assert thinking and content and thinking == "".join(answer.thinking)
    first_content = next(i for i, line in enumerate(lines) if line["message"]["content"])
    assert all("thinking" not in line["message"] for line in lines[first_content:])


def test_llamacpp_timings_become_nanosecond_durations():
    lines, _ = to_ollama([wire("llamacpp_chat_stream_reasoning.SYNTHETIC.sse")])
    final = lines[-1]
    timings = [json.loads(e[6:]) for e in wire("llamacpp_chat_stream_reasoning.SYNTHETIC.sse").split(b"\n\n")
               if e.startswith(b"data: {") and b"timings" in e][0]["timings"]
    assert final["prompt_eval_duration"] == int(timings["prompt_ms"] * 1e6)
    assert final["eval_duration"] == int(timings["predicted_ms"] * 1e6)


def test_midstream_error_event_raises_a_backend_error():
    with pytest.raises(BackendError, match="(?i)tool"):
        to_ollama([wire("groq_chat_stream_midstream_error_event.sse")])


def test_stream_ending_without_finish_gives_an_error_line():
    data = b'data: {"choices":[{"index":0,"delta":{"content":"Hel"}}]}\n\n'
    lines, answer = to_ollama([data])
    assert lines[-1] == {"error": "the backend closed the stream before it finished"} and answer.error


def test_missing_usage_is_counted_from_deltas_and_marked_estimated():
    data = (b'data: {"choices":[{"index":0,"delta":{"content":"a"}}]}\n\n'
            b'data: {"choices":[{"index":0,"delta":{"content":"b"}}]}\n\n'
            b'data: {"choices":[{"index":0,"delta":{},"finish_reason":"length"}]}\n\ndata: [DONE]\n\n')
    lines, answer = to_ollama([data])
    assert lines[-1]["eval_count"] == 2 and lines[-1]["done_reason"] == "length" and answer.usage_estimated


def test_text_completion_chunks_become_generate_lines():
    data = (b'data: {"object":"text_completion","choices":[{"index":0,"text":"def","finish_reason":null}]}\n\n'
            b'data: {"object":"text_completion","choices":[{"index":0,"text":" f","finish_reason":"stop"}],'
            b'"usage":{"prompt_tokens":3,"completion_tokens":2}}\n\ndata: [DONE]\n\n')
    lines, _ = to_ollama([data], kind="generate")
    assert [line["response"] for line in lines] == ["def", " f", ""]
    assert lines[-1]["done"] and lines[-1]["prompt_eval_count"] == 3 and "message" not in lines[-1]


def test_ollama_stream_translation_is_independent_of_chunk_boundaries():
    data = wire("ollama_docs_chat_stream_tool_call.ndjson")
    def normalised(out: bytes) -> bytes:  # synthesised call ids differ per run
        return re.sub(rb'"call_[a-z0-9]{8}"', b'"call_id"', out)

    expected = normalised(to_openai([data])[0])
    for chunks in splits(data):
        assert normalised(to_openai(chunks)[0]) == expected


def sse_objects(raw: bytes):
    events = [e[6:] for e in raw.split(b"\n\n") if e.startswith(b"data: ")]
    assert events[-1] == b"[DONE]"
    return [json.loads(e) for e in events[:-1]]


def test_ollama_tool_call_becomes_openai_call_with_string_arguments_and_finish_tool_calls():
    out, _ = to_openai([wire("ollama_docs_chat_stream_tool_call.ndjson")])
    chunks = sse_objects(out)
    assert chunks[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    calls = [c["choices"][0]["delta"]["tool_calls"] for c in chunks if c["choices"][0]["delta"].get("tool_calls")]
    assert len(calls) == 1 and isinstance(calls[0][0]["function"]["arguments"], str)
    assert calls[0][0]["id"].startswith("call_") and calls[0][0]["index"] == 0
    assert chunks[-1]["choices"][0]["finish_reason"] == "tool_calls"
    assert all(set(c) >= {"id", "object", "created", "model", "choices"} for c in chunks)
    assert len({c["id"] for c in chunks}) == 1


def test_usage_chunk_only_when_client_asked():
    data = wire("ollama_docs_chat_stream_tool_call.ndjson")
    without, _ = to_openai([data])
    assert all("usage" not in c for c in sse_objects(without))
    with_usage, _ = to_openai([data], include_usage=True)
    last = sse_objects(with_usage)[-1]
    assert last["choices"] == [] and last["usage"]["total_tokens"] == last["usage"]["prompt_tokens"] + last["usage"]["completion_tokens"]


def test_ollama_thinking_becomes_reasoning_content_chunks():
    out, answer = to_openai([wire("ollama-cloud_generate_stream_thinking_gpt-oss-20b.ndjson")], kind="completion")
    chunks = sse_objects(out)
    assert "".join(c["choices"][0]["text"] for c in chunks if c["choices"]) == "".join(answer.content)
    assert answer.thinking  # kept for the log even though text completions have no reasoning field


def test_ollama_midstream_error_line_raises():
    with pytest.raises(BackendError):
        to_openai([wire("ollama_docs_generate_stream_midstream_error.ndjson")], kind="completion")


def test_ollama_stream_cut_short_ends_with_an_error_event_and_done():
    out, _ = to_openai([b'{"model":"m","created_at":"x","message":{"role":"assistant","content":"a"},"done":false}\n'])
    assert b'"error"' in out and out.endswith(b"data: [DONE]\n\n")


def test_passthrough_without_edits_forwards_chunks_untouched():
    chunks = [b"data: {\"a\"", b":1}\n\n"]
    assert list(passthrough_sse(iter(chunks), strip_usage_chunk=False)) == chunks


def test_passthrough_strips_usage_only_chunk_at_any_split():
    data = wire("openai_chat_stream_tool_call.sse")
    for chunks in splits(data):
        out = b"".join(passthrough_sse(chunks, strip_usage_chunk=True))
        assert b'"choices":[]' not in out and out.endswith(b"data: [DONE]\n\n")
        assert out.count(b"data: ") == data.count(b"data: ") - 1


def test_passthrough_renames_model_back_to_the_alias_at_any_split():
    data = b'{"model":"smollm2","response":"a","done":false}\n{"model":"smollm2","done":true}\n'
    renames = model_renames("smollm2", "llama3.2:latest")
    for chunks in splits(data):
        assert b"".join(passthrough_lines(chunks, renames)) == data.replace(b"smollm2", b"llama3.2:latest")


def test_a_failure_keeps_what_the_same_chunk_translated_before_it_and_ends_the_translation():
    from proxy.streaming import OpenAIStreamToOllama

    push = OpenAIStreamToOllama(OpenAIToOllama("chat", "client-model", 1700000000.0, clock=clock))
    data = (b'data: {"choices":[{"index":0,"delta":{"content":"Hi"}}]}\n\n'
            b'event: error\ndata: {"error":{"message":"boom"}}\n\n')
    out = push(data)
    assert [json.loads(line)["message"]["content"] for line in out] == ["Hi"]
    assert isinstance(push.error, BackendError) and push.error.message == "boom"
    assert push(b'data: {"choices":[]}\n\n') == [] and push.end() == []
