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

from tests.support.fake_http import (  # noqa: F401 - re-exported
    Exchange,
    FakeUpstream,
    RecordedRequest,
    ReplyOrResponder,
    RequestLog,
)
from tests.support.fake_ollama import (  # noqa: F401 - re-exported
    DEFAULT_METRICS,
    GIF_1PX,
    JPEG_MAGIC,
    OLLAMA_TS,
    PNG_1PX,
    WEBP_MAGIC,
    ollama_chat_chunk,
    ollama_chat_responder,
    ollama_chat_response,
    ollama_chat_stream,
    ollama_chat_stream_objects,
    ollama_embed,
    ollama_generate_chunk,
    ollama_generate_responder,
    ollama_generate_response,
    ollama_generate_stream_objects,
    ollama_show,
    ollama_tags,
    ollama_tool_call,
)
from tests.support.fake_openai import (  # noqa: F401 - re-exported
    CREATED,
    llamacpp_models,
    llamacpp_props,
    openai_chat_responder,
    openai_chunk,
    openai_completion,
    openai_embeddings,
    openai_embeddings_responder,
    openai_error,
    openai_models,
    openai_stream,
    openai_stream_events,
    openai_text_completion,
    openai_text_completion_events,
    openai_text_completion_responder,
    openai_tool_call,
    pack_floats,
    tool_call_fragments,
    unpack_floats,
    usage,
)
from tests.support.fake_wire import (  # noqa: F401 - re-exported
    DATA_DIR,
    JSON,
    NDJSON,
    REPLY_KW,
    SSE,
    WIRE_DIR,
    Reply,
    encode_sse,
    json_reply,
    load_json,
    ndjson_lines,
    ndjson_objects,
    ndjson_reply,
    split_reply_kw,
    sse_events,
    sse_payloads,
    sse_reply,
    text_reply,
    wire_path,
)

