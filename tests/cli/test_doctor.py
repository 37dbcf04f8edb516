"""`doctor`: against the stub proxy every check passes (exit 0); each backend is reached, its models listed and
a one-token chat run in its dialect; a proxy that breaks one client's handshake, an unreachable backend, a bad
setting or a missing key each make it exit non-zero with a line naming what is wrong and the fix."""
from __future__ import annotations

import io
import json
import socket
import sys
import time

import pytest

from proxy.config import Settings
from proxy.doctor import run
from tests.cli.conftest import run_cli
from tests.support import OLLAMA_MODELS, OPENAI_MODELS, REPO_ROOT, fakes, free_port
from tests.support.procs import start as serve
from tests.support.procs import stop, wait_healthy

WSGI = str(REPO_ROOT / "wsgi.py")
CLIENTS = ("Home Assistant", "VS Code Copilot", "JetBrains AI Assistant", "Open WebUI")


def doctor(env: dict[str, str] | None = None, **kw) -> tuple[int, list[str]]:
    """The doctor in-process over real sockets: (exit status, its lines)."""
    out = io.StringIO()
    env = env or {}
    base = {} if "BACKENDS_FILE" in env else {"BACKEND_TYPE": "stub"}
    status = run(lambda: Settings.from_env({**base, **env}), out=out, timeout=10, **kw)
    return status, out.getvalue().splitlines()


def failures(lines: list[str]) -> list[str]:
    return [line for line in lines if line.startswith("FAIL")]


# --- all is well ---------------------------------------------------------------------------------------------

def test_doctor_passes_every_check_against_the_stub_proxy_and_exits_0(tmp_path):
    port = free_port()
    proc, log_path = serve(tmp_path, [WSGI, "--port", str(port), "--backend-type", "stub"], STUB_DELAY_MS="0",
                           DATABASE_URL=f"sqlite:///{tmp_path}/log.db", LOG_CLEANUP_MINUTES="0")
    try:
        wait_healthy(proc, f"http://127.0.0.1:{port}", log_path)
        result = run_cli(["doctor", "--backend-type", "stub", "--url", f"http://127.0.0.1:{port}"], tmp_path)
    finally:
        stop(proc)
    lines = result.stdout.splitlines()
    assert result.returncode == 0, result.stdout + result.stderr
    checks = [line for line in lines if line.startswith(("PASS", "FAIL", "SKIP"))]
    assert checks and all(line.startswith("PASS  ") for line in checks), result.stdout
    for client in CLIENTS:
        assert any(line.startswith(f"PASS  {client}: ") for line in lines), client
    assert lines[-1] == f"{len(checks)} passed, 0 failed"
    assert "\033[" not in result.stdout  # no colour when the output is not a terminal


@pytest.mark.parametrize("kind", ["openai", "ollama"])
def test_doctor_lists_each_backends_models_and_runs_a_one_token_chat_in_its_dialect(fake_upstream, kind):
    if kind == "openai":
        fake_upstream.serve_openai_models(*OPENAI_MODELS)
        fake_upstream.default("POST", "/v1/chat/completions", fakes.openai_chat_responder(["OK"]))
    else:
        fake_upstream.serve_ollama_models(*OLLAMA_MODELS)
        fake_upstream.default("POST", "/api/chat", fakes.ollama_chat_responder(["OK"]))
    status, lines = doctor({"BACKEND_TYPE": kind, "BACKEND_URL": fake_upstream.url})
    assert status == 0, lines
    assert any(line.startswith(f"PASS  backend {kind} at {fake_upstream.url}: model list: 2 models") for line in lines)
    chat = fake_upstream.last("/v1/chat/completions" if kind == "openai" else "/api/chat").json
    if kind == "openai":
        assert chat["max_tokens"] == 1 and chat["stream"] is False and chat["model"] == OPENAI_MODELS[0]
    else:
        assert chat["options"] == {"num_predict": 1} and chat["stream"] is False
    assert any("one-token chat" in line and "said 'OK'" in line for line in lines), lines


def test_doctor_checks_every_backend_of_backends_file(fake_upstream, tmp_path):
    fake_upstream.serve_openai_models("qwen3-8b")
    fake_upstream.serve_ollama_models("llama3.2:latest")
    fake_upstream.default("POST", "/v1/chat/completions", fakes.openai_chat_responder(["OK"]))
    fake_upstream.default("POST", "/api/chat", fakes.ollama_chat_responder(["OK"]))
    path = tmp_path / "backends.toml"
    path.write_text(f'[backends.gpu]\ntype = "openai"\nurl = "{fake_upstream.url}"\n'
                    f'[backends.box]\ntype = "ollama"\nurl = "{fake_upstream.url}"\n'
                    '[backends.demo]\ntype = "stub"\n')
    out = io.StringIO()
    status = run(lambda: Settings.from_env({"BACKENDS_FILE": str(path)}), out=out, timeout=10)
    lines = out.getvalue().splitlines()
    assert status == 0, lines
    assert sum(line.startswith("PASS  backend gpu ") for line in lines) == 2
    assert sum(line.startswith("PASS  backend box ") for line in lines) == 2


def test_files_are_read_as_the_server_reads_them(tmp_path):
    keys = tmp_path / "keys.toml"
    keys.write_text('[keys.alice]\nkey = "sk-a"\nrpm = "many"\n')
    backends = tmp_path / "backends.toml"
    backends.write_text('[backends.gpu]\ntype = "vllm"\nurl = "http://127.0.0.1:1"\n')
    status, lines = doctor({"KEYS_FILE": str(keys), "BACKENDS_FILE": str(backends)})
    keys_line, backends_line = failures(lines)
    assert status == 1
    assert keys_line.startswith("FAIL  KEYS_FILE: ") and "rpm" in keys_line and "Fix: fix the file" in keys_line
    assert backends_line.startswith("FAIL  BACKENDS_FILE: ") and "gpu" in backends_line and "type" in backends_line
    keys.write_text('[keys.alice]\nkey = "sk-a"\nrpm = 60\n')
    backends.write_text('[backends.demo]\ntype = "stub"\n')
    status, lines = doctor({"KEYS_FILE": str(keys), "BACKENDS_FILE": str(backends)})
    assert status == 0, lines
    assert "PASS  KEYS_FILE: 1 key table (" in "\n".join(lines) and "PASS  BACKENDS_FILE: 1 backend: demo" in "\n".join(lines)


# --- the backends ------------------------------------------------------------------------------------------

def test_unreachable_backend_fails_naming_the_setting_and_skips_its_chat():
    dead = free_port()
    status, lines = doctor({"BACKEND_TYPE": "openai", "BACKEND_URL": f"http://127.0.0.1:{dead}"})
    assert status == 1
    [failed] = failures(lines)
    assert "model list" in failed and "connection refused" in failed
    assert "Fix: start the backend, or fix BACKEND_URL" in failed
    assert any(line.startswith("SKIP") and "one-token chat" in line for line in lines)
    assert lines[-1] == "1 passed, 2 failed"


def test_backend_that_refuses_the_key_names_the_key(fake_upstream):
    fake_upstream.default("GET", "/v1/models", fakes.json_reply({"error": {"message": "bad key"}}, status=401))
    status, lines = doctor({"BACKEND_TYPE": "openai", "BACKEND_URL": fake_upstream.url, "BACKEND_API_KEY": "sk-x"})
    [failed] = failures(lines)
    assert status == 1 and "HTTP 401" in failed and "BACKEND_API_KEY" in failed and "sk-x" not in failed


def test_backend_that_cannot_chat_fails_the_chat_check(fake_upstream):
    fake_upstream.serve_openai_models("qwen3-8b")
    fake_upstream.default("POST", "/v1/chat/completions", fakes.json_reply({"error": {"message": "no slot"}}, 503))
    status, lines = doctor({"BACKEND_TYPE": "openai", "BACKEND_URL": fake_upstream.url})
    [failed] = failures(lines)
    assert status == 1 and "one-token chat" in failed and "no slot" in failed and "Fix:" in failed


def test_bad_setting_fails_the_configuration_check():
    status, lines = doctor({"PORT": "99999"})
    [failed] = failures(lines)
    assert status == 1 and failed.startswith("FAIL  configuration: PORT='99999'") and "Fix: change the var" in failed


@pytest.mark.parametrize("entry", [[WSGI, "doctor"], ["-m", "proxy", "doctor"]], ids=["wsgi.py", "-m proxy"])
def test_doctor_runs_from_each_entry_point_with_the_env_file_flag(tmp_path, entry):
    chosen = tmp_path / "chosen.env"
    chosen.write_text("BACKEND_TYPE=stub\nPORT=18080\n")
    result = run_cli([*entry, "--env-file", str(chosen)], tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.startswith("PASS  configuration: listens on 127.0.0.1:18080; stub backend")


def test_bad_flag_value_reaches_the_doctor_naming_the_flag(tmp_path):
    result = run_cli(["doctor", "--backend-type", "stub", "--port", "0"], tmp_path)
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert "FAIL  configuration: PORT='0'" in result.stdout and "--port sets PORT" in result.stdout


# --- the clients' handshakes against a proxy that breaks one ---------------------------------------------------

def _no(key):
    return lambda body: {k: v for k, v in body.items() if k != key}


def _string_arguments(line):
    for call in line.get("message", {}).get("tool_calls") or ():
        call["function"]["arguments"] = json.dumps(call["function"]["arguments"])
    return line


def _size_as_string(body):
    for entry in body["models"]:
        entry["size"] = str(entry["size"])
    return body


def _drop_sse_done(body: bytes) -> bytes:
    return body.replace(b"data: [DONE]\n\n", b"")


BREAKS = [  # (path, change, lines, raw, who fails, what its line says)
    ("/api/show", _no("capabilities"), False, False, "VS Code Copilot", "no 'capabilities' array"),
    ("/api/show", _no("model_info"), False, False, "Home Assistant", "no 'model_info' object"),
    ("/api/chat", _string_arguments, True, False, "Home Assistant", "arguments are a string, not an object"),
    ("/api/chat", lambda line: None if line.get("done") else line, True, False, "Open WebUI",
     "ended without a line with done true"),
    ("/api/version", lambda body: {"version": "0.5.1"}, False, False, "VS Code Copilot", "below 0.6.4"),
    ("/api/version", lambda body: {"version": "proxy-1"}, False, False, "Open WebUI", "not a dotted number"),
    ("/api/tags", _size_as_string, False, False, "JetBrains AI Assistant", "size is a string, not an integer"),
    ("/v1/chat/completions", _drop_sse_done, False, True, "VS Code Copilot", "without 'data: [DONE]'"),
    ("/api/ps", lambda body: {"models": [{"name": "x", "expires_at": "soon"}]}, False, False, "Open WebUI",
     "not an RFC 3339 time"),
]


@pytest.mark.parametrize("path, change, lines, raw, who, says", BREAKS,
                         ids=[f"{b[0]}:{b[5]}" for b in BREAKS])
def test_a_broken_handshake_fails_naming_the_client_and_the_fix(broken_proxy, path, change, lines, raw, who, says):
    proxy = broken_proxy(path, change, lines=lines, raw=raw)
    status, out = doctor(url=proxy.url)
    assert status == 1
    named = [line for line in failures(out) if line.startswith(f"FAIL  {who}: ") and says in line]
    assert named, "\n".join(out)
    assert all(" Fix: " in line for line in failures(out))
    assert out[-1].endswith(f"{len(failures(out))} failed")


def test_model_without_tools_fails_copilots_agent_mode(broken_proxy):
    def no_tools(body):
        body["capabilities"] = [c for c in body["capabilities"] if c != "tools"]
        return body

    proxy = broken_proxy("/api/show", no_tools)
    status, out = doctor(url=proxy.url)
    [failed] = failures(out)
    assert status == 1 and "hides it from agent mode" in failed and "supports_tools" in failed


def test_proxy_with_keys_fails_without_one_and_passes_with_it(make_proxy):
    proxy = make_proxy(BACKEND_TYPE="stub", STUB_DELAY_MS="0", API_KEYS="ci:sk-doctor")
    status, out = doctor(url=proxy.url)
    assert status == 1 and any("HTTP 401" in line and "--api-key" in line for line in failures(out)), out
    assert doctor(url=proxy.url, api_key="sk-doctor")[0] == 0
    assert doctor({"API_KEYS": "ci:sk-doctor"}, url=proxy.url)[0] == 0  # the configuration's first key


def test_key_from_the_environment_variable_is_sent(make_proxy, tmp_path):
    proxy = make_proxy(BACKEND_TYPE="stub", STUB_DELAY_MS="0", API_KEYS="ci:sk-doctor")
    result = run_cli(["doctor", "--backend-type", "stub", "--url", proxy.url], tmp_path,
                     LLM_PROXY_API_KEY="sk-doctor")
    assert result.returncode == 0, result.stdout
    assert "sk-doctor" not in result.stdout + result.stderr


def test_nothing_listening_at_url_is_one_failure_and_the_rest_skipped():
    status, out = doctor(url=f"http://127.0.0.1:{free_port()}")
    [failed] = failures(out)
    assert status == 1 and "connection refused" in failed and "Fix: start the proxy, or fix --url" in failed
    assert sum(line.startswith("SKIP") for line in out) >= 20


def test_a_proxy_that_never_answers_fails_within_the_timeout():
    with socket.socket() as silent:  # the kernel accepts; nothing ever answers
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        began = time.monotonic()
        out = io.StringIO()
        status = run(lambda: Settings.from_env({"BACKEND_TYPE": "stub"}), out=out, timeout=0.5,
                     url=f"http://127.0.0.1:{silent.getsockname()[1]}")
        took = time.monotonic() - began
    assert status == 1 and took < 5
    assert "did not answer within 0.5 s" in out.getvalue()


def test_colour_only_on_a_terminal(monkeypatch):
    from proxy.doctor.report import Check, run_checks

    class Terminal(io.StringIO):
        def isatty(self):
            return True

    monkeypatch.delenv("NO_COLOR", raising=False)
    tty = Terminal()
    run_checks([Check("one", lambda: "fine")], tty)
    assert tty.getvalue().startswith("\033[32mPASS\033[0m  one: fine")
    monkeypatch.setenv("NO_COLOR", "1")
    plain = Terminal()
    run_checks([Check("one", lambda: "fine")], plain)
    assert plain.getvalue().startswith("PASS  one: fine")
    assert sys.stdout is not None
