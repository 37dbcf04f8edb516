"""Hostile Responses requests (property-based, hypothesis): input items, content parts, tools, tool_choice,
reasoning and text of every wrong shape, through the whole WSGI stack over the stub backend: never a 500,
never an error logged, errors in OpenAI's shape, and a stream that always ends completed or failed."""
from __future__ import annotations

import json
import logging

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from proxy import create_app
from proxy.config import Settings

TEXT = st.text(max_size=12) | st.sampled_from(["", "apply_patch", "shell", "user", "\x00", "🤖"])
ANY = st.recursive(st.none() | st.booleans() | st.integers(-(2 ** 70), 2 ** 70) | st.floats(allow_nan=False) | TEXT,
                   lambda inner: st.lists(inner, max_size=3) | st.dictionaries(TEXT, inner, max_size=3),
                   max_leaves=8)
PART = st.fixed_dictionaries({"type": st.sampled_from(["input_text", "output_text", "input_image", "input_file",
                                                       "refusal", "x"]) | ANY},
                             optional={"text": TEXT | ANY, "image_url": TEXT | ANY, "file_id": ANY, "detail": ANY})
CONTENT = TEXT | st.lists(PART | ANY, max_size=3) | ANY
ITEM = st.fixed_dictionaries({}, optional={
    "type": st.sampled_from(["message", "function_call", "function_call_output", "custom_tool_call",
                             "custom_tool_call_output", "reasoning", "local_shell_call", "compaction", "x"]) | ANY,
    "role": st.sampled_from(["user", "assistant", "developer", "system", "tool"]) | ANY, "content": CONTENT,
    "call_id": TEXT | ANY, "name": TEXT | ANY, "arguments": TEXT | ANY, "input": TEXT | ANY, "output": CONTENT,
    "summary": st.lists(st.fixed_dictionaries({"type": st.just("summary_text"), "text": TEXT | ANY}), max_size=2)
    | ANY, "id": ANY})
TOOL = st.fixed_dictionaries({"type": st.sampled_from(["function", "custom", "web_search", "namespace"]) | ANY},
                             optional={"name": TEXT | ANY, "parameters": ANY, "description": ANY,
                                       "format": st.fixed_dictionaries({"type": st.just("grammar"),
                                                                        "definition": TEXT | ANY}) | ANY})
FIELDS = {
    "input": TEXT | st.lists(ITEM, max_size=4) | ANY, "instructions": TEXT | ANY,
    "tools": st.lists(TOOL, max_size=3) | ANY, "tool_choice": st.sampled_from(["auto", "none", "required"])
    | st.fixed_dictionaries({"type": st.sampled_from(["function", "custom", "x"]), "name": TEXT}) | ANY,
    "reasoning": st.fixed_dictionaries({}, optional={"effort": TEXT | ANY, "summary": ANY}) | ANY,
    "text": st.fixed_dictionaries({}, optional={"format": st.fixed_dictionaries(
        {"type": st.sampled_from(["json_schema", "json_object", "text"])}, optional={"schema": ANY}) | ANY}) | ANY,
    "max_output_tokens": st.integers(-5, 2 ** 65) | ANY, "temperature": ANY, "top_p": ANY,
    "parallel_tool_calls": ANY, "previous_response_id": st.none() | TEXT, "store": ANY, "include": ANY,
}


class _Errors(logging.Handler):
    def __init__(self):
        super().__init__(logging.ERROR)
        self.records: list[logging.LogRecord] = []

    def emit(self, record):
        self.records.append(record)


@pytest.fixture(scope="module")
def fuzz_app(tmp_path_factory):
    env = {"BACKEND_TYPE": "stub", "STUB_DELAY_MS": "0", "LOG_LEVEL": "ERROR", "LOG_CLEANUP_MINUTES": "0",
           "DATABASE_URL": f"sqlite:///{tmp_path_factory.mktemp('fuzzdb')}/fuzz.db", "KEEPALIVE_S": "0"}
    app = create_app(Settings.from_env(env))
    errors = _Errors()
    logging.getLogger().addHandler(errors)
    yield app, errors
    logging.getLogger().removeHandler(errors)
    shutdown = app.extensions["llm_proxy"].extras.get("shutdown")
    if shutdown:
        shutdown()


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                   HealthCheck.too_slow])
@given(fields=st.fixed_dictionaries({}, optional=FIELDS), stream=st.booleans())
def test_hostile_responses_requests_are_answered_in_openai_shape_never_a_500(fuzz_app, fields, stream):
    app, errors = fuzz_app
    errors.records.clear()
    with app.test_client() as client:
        resp = client.post("/v1/responses", json={"model": "stub", **fields, "stream": stream}, buffered=False)
        data = b"".join(resp.response)
        resp.close()
    assert resp.status_code < 500, (resp.status_code, data[:300])
    if resp.status_code >= 400:
        error = json.loads(data)["error"]
        assert isinstance(error["message"], str) and error["message"] and error["type"]
    elif stream:
        events = [json.loads(line[6:]) for line in data.split(b"\n") if line.startswith(b"data: ")]
        assert [e["sequence_number"] for e in events] == list(range(len(events)))
        assert events[-1]["type"] in ("response.completed", "response.failed")
    else:
        assert json.loads(data)["object"] == "response"
    assert not errors.records, [r.getMessage() for r in errors.records]


DEEP = {"input": st.lists(ITEM, min_size=1, max_size=5), "tools": st.lists(TOOL, max_size=3),
        "tool_choice": st.sampled_from(["auto", "required", {"type": "custom", "name": "apply_patch"}])}


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                   HealthCheck.too_slow])
@given(fields=st.fixed_dictionaries(DEEP), stream=st.booleans())
def test_hostile_items_and_tools_past_the_field_checks_never_get_a_500(fuzz_app, fields, stream):
    test_hostile_responses_requests_are_answered_in_openai_shape_never_a_500.hypothesis.inner_test(
        fuzz_app, fields, stream)
