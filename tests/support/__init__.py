"""Code the tests share, imported by name (`from tests.support import free_port`): the repository's
paths, the model names the fake upstream lists, a free port; the fakes, wire and schema checks and the
store and policy helpers are the modules beside this one. Fixtures are in the conftest.py files."""
from __future__ import annotations

import socket
from pathlib import Path

TESTS_DIR = Path(__file__).resolve().parent.parent
REPO_ROOT = TESTS_DIR.parent
OPENAI_MODELS = ("qwen3-8b", "text-embed-3")
OLLAMA_MODELS = ("llama3.2:latest", "nomic-embed-text:latest")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
