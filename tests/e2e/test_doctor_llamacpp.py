"""`doctor` against the real llama.cpp server and the proxy in front of it: the backend is listed and answers a
one-token chat, and every client's handshake passes but Copilot's agent mode, which SmolLM2 cannot serve: its
chat template takes no tools (llama-server's /props says so), and the doctor names that fix."""
from __future__ import annotations

import io

import requests

from proxy.config import Settings
from proxy.doctor import run


def test_doctor_passes_all_but_tools_against_llama_server(llama_server, e2e_proxy):
    out = io.StringIO()
    status = run(lambda: Settings.from_env({"BACKEND_TYPE": "openai", "BACKEND_URL": llama_server.url}),
                 url=e2e_proxy.url, out=out, timeout=120)
    lines = out.getvalue().splitlines()
    failed = [line for line in lines if line.startswith(("FAIL", "SKIP"))]
    assert any(line.startswith(f"PASS  backend openai at {llama_server.url}: one-token chat") for line in lines)
    assert sum(line.startswith("PASS  ") for line in lines) >= 20, lines
    caps = requests.get(llama_server.url + "/props", timeout=10).json().get("chat_template_caps") or {}
    if caps.get("supports_tools") is False:
        assert status == 1 and len(failed) == 1, lines
        assert "VS Code Copilot" in failed[0] and "does not offer tools" in failed[0] and "supports_tools" in failed[0]
    else:
        assert status == 0 and failed == [], lines
