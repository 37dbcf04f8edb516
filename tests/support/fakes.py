"""Everything a socket test needs to script an upstream, in one namespace.

    fake_wire    Reply, fixture-file readers (tests/data/wire), json/text/SSE/NDJSON replies
    fake_http    FakeUpstream: the scripted server on a real port, and what it recorded
    fake_openai  OpenAI-shaped bodies, tool-call fragments, responders
    fake_ollama  Ollama-shaped bodies, tiny images, responders

Usage:

    fake = FakeUpstream().start()                      # or the `fake_upstream` fixture
    fake.serve_openai_models("qwen3-8b")               # presets for model lists
    fake.default("POST", "/v1/chat/completions", sse_reply("openai_chat_stream_tool_call.sse"))
    fake.expect("POST", "/api/chat", ollama_chat_responder(["Hi"], gate=event, gate_at=1))
    ...
    fake.last("/v1/chat/completions").json             # what the proxy sent upstream
    fake.exchanges_to("/api/chat")[0].client_disconnected
"""

from tests.support.fake_http import *  # noqa: F401,F403
from tests.support.fake_ollama import *  # noqa: F401,F403
from tests.support.fake_openai import *  # noqa: F401,F403
from tests.support.fake_wire import *  # noqa: F401,F403
