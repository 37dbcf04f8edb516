"""Flags of `python wsgi.py` and `python -m proxy`: each wins over its environment variable, which wins over
`.env`; `--env-file` replaces the working directory's `.env`; a bad value is one line and exit status 2, as a
bad variable is; `--help` lists the flags and warns that a key given as a flag shows in `ps`."""
from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
import requests

from tests.cli.conftest import run_cli
from tests.support import REPO_ROOT, free_port
from tests.support.procs import start as serve
from tests.support.procs import stop, wait_healthy

WSGI = str(REPO_ROOT / "wsgi.py")


def write(path: Path, **env: str) -> Path:
    path.write_text("".join(f"{k}={v}\n" for k, v in env.items()))
    return path


def model_ids(url: str) -> set[str]:
    return {m["id"] for m in requests.get(url + "/v1/models", timeout=5).json()["data"]}


@pytest.mark.parametrize("entry", [[WSGI], ["-m", "proxy"]], ids=["wsgi.py", "python -m proxy"])
def test_flags_win_over_the_environment_which_wins_over_the_env_file(tmp_path, entry):
    flag_port, env_port, file_port = free_port(), free_port(), free_port()
    write(tmp_path / ".env", PORT=str(file_port), BACKEND_TYPE="ollama", MODEL_MAP="from-dotenv=stub",
          DATABASE_URL=f"sqlite:///{tmp_path}/from-dotenv.db", LOG_CLEANUP_MINUTES="0", STUB_DELAY_MS="0")
    proc, log_path = serve(tmp_path, [*entry, "--port", str(flag_port), "--backend-type", "stub"],
                           PORT=str(env_port), BACKEND_TYPE="openai", MODEL_MAP="from-environ=stub")
    url = f"http://127.0.0.1:{flag_port}"
    try:
        wait_healthy(proc, url, log_path)
        ids = model_ids(url)
        backend = requests.get(url + "/healthz", timeout=5).json()["backend"]
        for other in (env_port, file_port):  # nothing listens where the environment or .env said
            with pytest.raises(requests.ConnectionError):
                requests.get(f"http://127.0.0.1:{other}/health", timeout=1)
    finally:
        stop(proc)
    assert backend["type"] == "stub"  # the flag, over BACKEND_TYPE=openai (environment) and =ollama (.env)
    assert "from-environ" in ids and "from-dotenv" not in ids  # the environment over .env
    assert (tmp_path / "from-dotenv.db").exists()  # .env still gives what neither flags nor environment set


def test_backend_url_and_key_flags_reach_the_backend(tmp_path, fake_upstream):
    fake_upstream.serve_openai_models("qwen3-8b")
    port = free_port()
    proc, log_path = serve(tmp_path, [WSGI, "--port", str(port), "--backend-type", "openai", "--backend-url",
                                      fake_upstream.url, "--backend-api-key", "sk-from-flag"],
                           BACKEND_URL="http://127.0.0.1:9", BACKEND_API_KEY="sk-from-environment",
                           DATABASE_URL=f"sqlite:///{tmp_path}/log.db", LOG_CLEANUP_MINUTES="0")
    try:
        wait_healthy(proc, f"http://127.0.0.1:{port}", log_path)
        assert "qwen3-8b" in model_ids(f"http://127.0.0.1:{port}")
    finally:
        stop(proc)
    assert fake_upstream.last("/v1/models").header("Authorization") == "Bearer sk-from-flag"
    assert "sk-from-flag" not in log_path.read_text()


def test_env_file_flag_replaces_the_working_directory_env_file(tmp_path):
    port = free_port()
    write(tmp_path / ".env", STUB_DELAY_MS="not-a-number")  # would stop start-up if it were read
    chosen = write(tmp_path / "chosen.env", PORT=str(port), BACKEND_TYPE="stub",
                   DATABASE_URL=f"sqlite:///{tmp_path}/log.db", LOG_CLEANUP_MINUTES="0")
    proc, log_path = serve(tmp_path, [WSGI, "--env-file", str(chosen)])
    try:
        wait_healthy(proc, f"http://127.0.0.1:{port}", log_path)
        assert model_ids(f"http://127.0.0.1:{port}") == {"stub", "stub-embed"}
    finally:
        stop(proc)


def one_line(result: subprocess.CompletedProcess, *words: str) -> str:
    assert "Traceback" not in result.stderr + result.stdout, result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    for word in words:
        assert word in lines[0], lines[0]
    return lines[0]


@pytest.mark.parametrize("args, words", [
    (["--port", "99999"], ("PORT='99999'", "1 to 65535", "--port sets PORT")),
    (["--port", "http"], ("PORT='http'", "--port sets PORT")),
    (["--host", "999.1.1.1"], ("HOST='999.1.1.1'", "--host sets HOST")),
    (["--backend-type", "llama"], ("BACKEND_TYPE='llama'", "openai", "--backend-type sets BACKEND_TYPE")),
    (["--backend-url", "ftp://x"], ("BACKEND_URL=", "--backend-url sets BACKEND_URL")),
])
def test_bad_flag_value_is_one_line_naming_it_and_exit_2(tmp_path, args, words):
    result = run_cli([WSGI, *args], tmp_path, BACKEND_TYPE="stub")
    assert result.returncode == 2
    one_line(result, "configuration error", *words)


def test_a_flag_is_named_only_for_the_variable_it_sets(tmp_path):
    result = run_cli([WSGI, "--host", "127.0.0.1", "--backend-type", "nope"], tmp_path, PORT="99999")
    assert result.returncode == 2
    line = one_line(result, "PORT='99999'", "BACKEND_TYPE='nope'", "(--backend-type sets BACKEND_TYPE)")
    assert "--host" not in line and "--port" not in line


def test_bad_environment_value_is_the_same_line_without_a_flag(tmp_path):
    result = run_cli([WSGI], tmp_path, BACKEND_TYPE="stub", PORT="99999")
    assert result.returncode == 2
    assert "--port" not in one_line(result, "configuration error", "PORT='99999'", "1 to 65535")


def test_missing_env_file_is_one_line_and_exit_2(tmp_path):
    result = run_cli([WSGI, "--env-file", str(tmp_path / "absent.env")], tmp_path)
    assert result.returncode == 2
    one_line(result, "absent.env", "No such file")


def test_api_key_flag_shown_in_an_error_stays_hidden(tmp_path):
    result = run_cli([WSGI, "--backend-api-key", "sk-secret", "--backend-url", "http://u:p@127.0.0.1:1"], tmp_path)
    assert result.returncode == 2
    assert "sk-secret" not in result.stderr + result.stdout
    one_line(result, "BACKEND_API_KEY")


@pytest.mark.parametrize("entry", [[WSGI], ["-m", "proxy"]], ids=["wsgi.py", "python -m proxy"])
def test_help_lists_every_flag_and_warns_that_a_key_flag_shows_in_ps(tmp_path, entry):
    result = run_cli([*entry, "--help"], tmp_path)
    assert result.returncode == 0 and result.stderr == ""
    for flag in ("--host", "--port", "--backend-type", "--backend-url", "--backend-api-key", "--env-file", "doctor"):
        assert flag in result.stdout
    text = " ".join(result.stdout.split())
    assert "visible to every user of this machine (`ps`)" in text and "prefer BACKEND_API_KEY" in text
    assert "default 11434" in text


def test_doctor_help_lists_its_flags(tmp_path):
    result = run_cli(["doctor", "--help"], tmp_path)
    assert result.returncode == 0
    for flag in ("--url", "--api-key", "--model", "--timeout", "--backend-url", "--env-file"):
        assert flag in result.stdout


@pytest.mark.parametrize("value", ["0", "-1", "soon", "inf"])
def test_doctor_timeout_must_be_seconds_above_zero(tmp_path, value):
    result = run_cli(["doctor", "--timeout", value], tmp_path)
    assert result.returncode == 2 and "is not a number of seconds above 0" in result.stderr


def test_unknown_flag_is_refused_with_exit_2(tmp_path):
    result = run_cli([WSGI, "--prot=1"], tmp_path)
    assert result.returncode == 2 and "unrecognized arguments: --prot=1" in result.stderr
    assert "Traceback" not in result.stderr and result.stderr.startswith("usage: wsgi.py")
