"""The bodies an exchange keeps for the log (proxy/exchange.py): limits, truncation and packing."""
from __future__ import annotations

import sys

from proxy.exchange import BodyBuffer


def sse_chunks(n: int) -> list[bytes]:
    return [b'data: {"id":"chatcmpl-1","object":"chat.completion.chunk","choices":[{"index":0,'
            b'"delta":{"content":"word %d "},"finish_reason":null}]}\n\n' % i for i in range(n)]


def test_a_packed_copy_gives_back_exactly_the_bytes_added():
    chunks = sse_chunks(500)
    body = BodyBuffer(10 * 1024 * 1024, pack=True)
    for chunk in chunks:
        body.add(chunk)
    assert body.packed  # it did pack
    assert body.value() == b"".join(chunks)
    assert body.size == sum(map(len, chunks)) and not body.truncated


def test_packing_gives_back_blocks_larger_than_its_window_and_bytes_that_do_not_compress():
    import os

    chunks = [os.urandom(3000), b"data: " + b"x" * 9000 + b"\n\n", bytes(range(256)) * 5, b"\x00"]
    body = BodyBuffer(10 ** 6, pack=True)
    for chunk in chunks:
        body.add(chunk)
    assert len(body.packed) == 3 and body.value() == b"".join(chunks)


def test_small_blocks_are_merged_and_everything_still_reads_back_in_order():
    chunks = sse_chunks(1000)
    body = BodyBuffer(10 ** 7, pack=True)
    for i, chunk in enumerate(chunks):
        body.add(chunk)
        if i in (0, 7, 63, 64, 65, 500):
            assert body.value() == b"".join(chunks[:i + 1])
    assert len(body.merged) >= 2 and len(body.packed) < BodyBuffer.MERGE_EVERY
    assert body.value() == b"".join(chunks)


def test_packing_keeps_a_long_stream_copy_several_times_smaller():
    chunks = sse_chunks(600)  # ~80 KB, a minute of a fast model
    packed, plain = BodyBuffer(10 ** 7, pack=True), BodyBuffer(10 ** 7)
    for chunk in chunks:
        packed.add(chunk)
        plain.add(chunk)
    held = sum(map(sys.getsizeof, packed.packed + packed.merged)) + sys.getsizeof(packed.data)
    assert held * 10 < sys.getsizeof(plain.data)


def test_the_limit_still_truncates_a_packed_copy_and_counts_every_byte():
    chunks = sse_chunks(200)
    body = BodyBuffer(10000, pack=True)
    for chunk in chunks:
        body.add(chunk)
    total = sum(map(len, chunks))
    assert body.truncated and body.size == total
    assert body.value() == b"".join(chunks)[:10000]


def test_an_unpacked_body_is_one_copy_of_what_was_added():
    body = BodyBuffer(100)
    body.add(b"x" * 5000)
    assert not body.packed and body.value() == b"x" * 100 and body.size == 5000 and body.truncated


def test_answer_pieces_are_joined_as_they_come_and_read_back_whole():
    from proxy.streaming import Answer

    answer = Answer()
    words = [f"w{i} " for i in range(1000)]
    for word in words:
        answer.content.append(word)
    assert len(answer.content) < answer.content.JOIN_EVERY  # a few strings, not a thousand
    assert "".join(answer.content) == "".join(words) == answer.as_dict()["content"]
    assert not answer.thinking and answer.as_dict()["thinking"] == ""
