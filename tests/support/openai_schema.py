"""Validation of OpenAI-front bodies against the official OpenAPI schemas (tests/data/specs).

`assert_openai_schema(obj, "CreateChatCompletionStreamResponse")` validates `obj` against
`#/components/schemas/<name>` with every `$ref` resolved inside the same file.
"""

from __future__ import annotations

import copy
import functools
import json
from typing import Any

import jsonschema
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT202012

from tests.support import TESTS_DIR

SPEC_PATH = TESTS_DIR / "data" / "specs" / "openai-openapi-subset.json"
SPEC_URI = "urn:openai-openapi-subset"

# The names tests use; every one must exist in the spec file (checked at first use).
KNOWN = (
    "CreateChatCompletionResponse",
    "CreateChatCompletionStreamResponse",
    "ListModelsResponse",
    "Model",
    "CreateEmbeddingResponse",
    "CreateCompletionResponse",
    "ErrorResponse",
    "CreateCompletionStreamResponse",
)

# Derived schemas, not in the file. OpenAI's spec says completion stream chunks share the shape
# of CreateCompletionResponse, but real streams carry `finish_reason: null` until the last
# choice chunk; this variant allows that null and nothing else.
DERIVED = {"CreateCompletionStreamResponse": "CreateCompletionResponse"}


@functools.cache
def _spec() -> dict:
    spec = json.loads(SPEC_PATH.read_text())
    schemas = spec["components"]["schemas"]
    stream = copy.deepcopy(schemas["CreateCompletionResponse"])
    reason = stream["properties"]["choices"]["items"]["properties"]["finish_reason"]
    reason["type"] = ["string", "null"]
    reason["enum"] = [*reason["enum"], None]
    schemas["CreateCompletionStreamResponse"] = stream
    return spec


@functools.cache
def _validator(name: str) -> jsonschema.Draft202012Validator:
    spec = _spec()
    schemas = spec["components"]["schemas"]
    assert name in schemas, f"{name} is not a schema in {SPEC_PATH.name}"
    resource = Resource.from_contents(spec, default_specification=DRAFT202012)
    registry = Registry().with_resource(SPEC_URI, resource)
    schema = {"$ref": f"{SPEC_URI}#/components/schemas/{name}"}
    return jsonschema.Draft202012Validator(schema, registry=registry)


def openai_schema_errors(obj: Any, name: str) -> list[str]:
    errors = sorted(_validator(name).iter_errors(obj), key=lambda e: list(e.absolute_path))
    return [f"{'/'.join(map(str, e.absolute_path)) or '<root>'}: {e.message}" for e in errors]


def assert_openai_schema(obj: Any, name: str) -> None:
    """Fail with every violation listed when `obj` does not match the OpenAI schema `name`."""
    errors = openai_schema_errors(obj, name)
    assert not errors, (
        f"not a valid {name}:\n  " + "\n  ".join(errors[:20])
        + f"\nobject: {json.dumps(obj)[:1500]}"
    )
