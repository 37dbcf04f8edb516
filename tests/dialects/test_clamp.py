"""``proxy.clamp``: output limits lowered to what the context leaves after the estimated prompt, in both
dialects' bodies, and left alone when they fit, when the context is unknown, or when the prompt alone seems
to fill it."""
from __future__ import annotations

import pytest

from proxy.clamp import MARGIN, asks_for_limit, clamp, prompt_estimate

ROOM_8K_4KB = 8192 - 1000 - MARGIN  # the room an 8K context leaves after a 4,000-byte body


@pytest.mark.parametrize("field", ["max_tokens", "max_completion_tokens"])
def test_an_openai_limit_past_the_room_is_lowered(field):
    body = {"model": "m", field: 32000, "messages": []}
    out, changes = clamp(body, "openai", 8192, 4000)
    assert out[field] == ROOM_8K_4KB and changes == {field: [32000, ROOM_8K_4KB]}
    assert body[field] == 32000  # the caller's body is not changed


def test_an_ollama_num_predict_past_the_room_is_lowered_and_num_ctx_is_the_context():
    body = {"model": "m", "options": {"num_predict": 9000, "temperature": 0.1}}
    out, changes = clamp(body, "ollama", 8192, 4000)
    assert out["options"] == {"num_predict": ROOM_8K_4KB, "temperature": 0.1}
    out, _ = clamp({**body, "options": {"num_predict": 9000, "num_ctx": 4096}}, "ollama", 8192, 4000)
    assert out["options"]["num_predict"] == 4096 - 1000 - MARGIN


@pytest.mark.parametrize("body, context, size", [
    ({"max_tokens": 100}, 8192, 4000),  # fits
    ({"max_tokens": 32000}, None, 4000),  # context unknown
    ({"max_tokens": 32000}, 8192, 40000),  # the prompt alone fills the context: the backend says so
    ({"messages": []}, 8192, 4000),  # no limit asked
])
def test_limits_that_fit_or_cannot_be_judged_are_left_alone(body, context, size):
    assert clamp(body, "openai", context, size) == (body, {})


def test_ollama_negative_num_predict_means_no_limit_and_stays():
    body = {"options": {"num_predict": -1}}
    assert clamp(body, "ollama", 2048, 100) == (body, {})


def test_asks_for_limit_and_the_estimate():
    assert asks_for_limit({"max_tokens": 5}, "openai") and not asks_for_limit({"options": {}}, "ollama")
    assert asks_for_limit({"options": {"num_predict": 5}}, "ollama")
    assert prompt_estimate(4000) == 1000
