"""OpenAI shapes: request checks, builders and embedding encodings."""
import base64
import struct

import pytest

from proxy.dialects import openai as oa
from proxy.errors import BadRequest


@pytest.mark.parametrize("body, param", [
    ([], None), ({"messages": [{"role": "user", "content": "x"}]}, "model"),
    ({"model": 3, "messages": [{"role": "user", "content": "x"}]}, "model"),
    ({"model": "m", "messages": []}, "messages"), ({"model": "m", "messages": "hi"}, "messages"),
    ({"model": "m", "messages": [{"content": "x"}]}, "messages"),
    ({"model": "m", "messages": [{"role": "user", "content": 5}]}, "messages"),
    ({"model": "m", "messages": [{"role": "user", "content": "x"}], "temperature": "hot"}, "temperature"),
    ({"model": "m", "messages": [{"role": "user", "content": "x"}], "max_tokens": 1.5}, "max_tokens"),
    ({"model": "m", "messages": [{"role": "user", "content": "x"}], "stream": "yes"}, "stream"),
])
def test_bad_chat_requests_are_rejected_with_the_field_named(body, param):
    with pytest.raises(BadRequest) as info:
        oa.check_chat_request(body)
    assert info.value.param == param


def test_base64_embedding_is_little_endian_float32():
    encoded = oa.encode_embedding([1.0, -0.5], "base64")
    assert struct.unpack("<2f", base64.b64decode(encoded)) == (1.0, -0.5)
    assert oa.decode_embedding(encoded) == [1.0, -0.5]
    assert oa.encode_embedding([1.0], "float") == [1.0]


def test_reasoning_is_read_under_both_names():
    assert oa.reasoning_of({"reasoning_content": "a"}) == "a"
    assert oa.reasoning_of({"reasoning": "b"}) == "b"
    assert oa.reasoning_of({"content": "c"}) is None


def test_content_parts_become_plain_text():
    assert oa.content_text([{"type": "text", "text": "a"}, {"type": "image_url"}, {"type": "text", "text": "b"}]) == "a\nb"
    assert oa.content_text(None) == ""


def test_integers_written_as_floats_are_integers_and_are_rewritten_in_place():
    body = {"model": "m", "messages": [{"role": "user", "content": "x"}], "max_tokens": 16.0, "n": 1.0, "seed": -3.0}
    oa.check_chat_request(body)
    assert body["max_tokens"] == 16 and type(body["max_tokens"]) is int
    assert type(body["n"]) is int and body["seed"] == -3 and type(body["seed"]) is int


@pytest.mark.parametrize("check, body, param", [
    (oa.check_completion_request, {"prompt": "x", "stream_options": 1}, "stream_options"),
    (oa.check_chat_request, {"response_format": {"type": "json_schema", "json_schema": 5}}, "response_format"),
    (oa.check_chat_request, {"tool_choice": {"function": 5}}, "tool_choice"),
    (oa.check_chat_request, {"seed": 2.0 ** 64}, "seed"),
    (oa.check_embedding_request, {"input": "x", "dimensions": 2.5}, "dimensions"),
    (oa.check_embedding_request, {"input": "x", "dimensions": oa.MAX_DIMENSIONS + 1}, "dimensions"),
])
def test_every_field_the_proxy_reads_is_checked_from_the_table(check, body, param):
    body = {"model": "m", "messages": [{"role": "user", "content": "x"}], **body}
    with pytest.raises(BadRequest) as info:
        check(body)
    assert info.value.param == param
