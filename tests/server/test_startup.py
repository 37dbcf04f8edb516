"""Start-up as an operator and a new user meet it: a bad PORT or HOST, or a port in use, is one line
and an exit status, never a traceback; an unreachable backend is one warning saying what to do, and
does not hold up serving; the stub's start line names no URL; `.env` is read from the working
directory (not from wsgi.py's folder or a parent), under `python wsgi.py` and under gunicorn."""
from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests

from tests.support import REPO_ROOT, free_port

WSGI = str(REPO_ROOT / "wsgi.py")


def clean_env(**env: str) -> dict[str, str]:
    """The test process's environment without any proxy setting (each test names the ones it means)."""
    from proxy.config import SETTINGS

    names = {s.env for s in SETTINGS}
    base = {k: v for k, v in os.environ.items() if k not in names}
    return {**base, "PYTHONUNBUFFERED": "1", **env}


def run_to_exit(cwd: Path, timeout: float = 30, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, WSGI], cwd=cwd, env=clean_env(**env), capture_output=True, text=True,
                          timeout=timeout)


def start(cwd: Path, args: list[str], **env: str) -> tuple[subprocess.Popen, Path]:
    log_path = cwd / f"out-{time.monotonic_ns()}.log"
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(args, cwd=cwd, env=clean_env(**env), stdout=log, stderr=subprocess.STDOUT)
    return proc, log_path


def wait_healthy(proc: subprocess.Popen, url: str, log_path: Path, timeout: float = 30) -> float:
    """Seconds until GET /health answered OK."""
    began = time.monotonic()
    while True:
        if proc.poll() is not None:
            raise AssertionError(f"exited with {proc.returncode}:\n{log_path.read_text()}")
        try:
            if requests.get(url + "/health", timeout=1).text.strip() == "OK":
                return time.monotonic() - began
        except requests.RequestException:
            pass
        if time.monotonic() - began > timeout:
            raise AssertionError(f"no /health in {timeout} s:\n{log_path.read_text()}")
        time.sleep(0.05)


def stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=5)


def stub_env(tmp_path: Path, port: int, **env: str) -> dict[str, str]:
    return {"HOST": "127.0.0.1", "PORT": str(port), "BACKEND_TYPE": "stub", "STUB_DELAY_MS": "0",
            "DATABASE_URL": f"sqlite:///{tmp_path}/log.db", "LOG_CLEANUP_MINUTES": "0", **env}


def assert_one_line(result: subprocess.CompletedProcess, *words: str) -> str:
    assert "Traceback" not in result.stderr + result.stdout, result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    for word in words:
        assert word in lines[0], lines[0]
    return lines[0]


# --- item 20: start-up failures are one line ------------------------------------------------------------

def test_port_out_of_range_is_one_line_naming_port_and_exit_2(tmp_path):
    result = run_to_exit(tmp_path, **stub_env(tmp_path, 99999))
    assert result.returncode == 2
    assert_one_line(result, "PORT", "99999", "1 to 65535")


def test_host_that_is_not_an_address_is_one_line_naming_host(tmp_path):
    result = run_to_exit(tmp_path, **stub_env(tmp_path, free_port(), HOST="999.1.1.1"))
    assert result.returncode == 2
    assert_one_line(result, "HOST", "999.1.1.1")


def test_host_name_that_does_not_resolve_is_one_line_naming_host(tmp_path):
    # `.invalid` never resolves (RFC 6761); a plain `bad` only fails where no search domain knows it
    result = run_to_exit(tmp_path, **stub_env(tmp_path, free_port(), HOST="bad.invalid"))
    assert result.returncode == 1
    assert_one_line(result, "HOST=bad.invalid", "resolve")


def test_port_in_use_is_one_line_naming_the_port(tmp_path):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        result = run_to_exit(tmp_path, **stub_env(tmp_path, port))
    assert result.returncode == 1
    assert_one_line(result, f"127.0.0.1:{port}", "already in use", "PORT")


# --- item 20: the backend probe and the start line ------------------------------------------------------

def test_unreachable_backend_is_one_warning_saying_what_to_do(tmp_path):
    port, dead = free_port(), free_port()  # nothing listens on `dead`
    env = stub_env(tmp_path, port, BACKEND_TYPE="openai", BACKEND_URL=f"http://127.0.0.1:{dead}")
    proc, log_path = start(tmp_path, [sys.executable, WSGI], **env)
    try:
        wait_healthy(proc, f"http://127.0.0.1:{port}", log_path)
        deadline = time.monotonic() + 15
        while "not reachable" not in log_path.read_text() and time.monotonic() < deadline:
            time.sleep(0.1)
    finally:
        stop(proc)
    out = log_path.read_text()
    warnings = [line for line in out.splitlines() if "not reachable" in line]
    assert len(warnings) == 1, out
    assert "WARNING" in warnings[0] and f"http://127.0.0.1:{dead}" in warnings[0] and "openai" in warnings[0]
    assert "connection refused" in warnings[0] and "BACKEND_TYPE=stub" in warnings[0]
    assert "Traceback" not in out


def test_backend_that_never_answers_does_not_hold_up_serving(tmp_path):
    with socket.socket() as silent:  # accepts connections (the kernel does) but never answers
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        port = free_port()
        env = stub_env(tmp_path, port, BACKEND_TYPE="openai",
                       BACKEND_URL=f"http://127.0.0.1:{silent.getsockname()[1]}")
        proc, log_path = start(tmp_path, [sys.executable, WSGI], **env)
        try:
            wait_healthy(proc, f"http://127.0.0.1:{port}", log_path)
            assert "not reachable" not in log_path.read_text()  # /health answered while the probe waited
            deadline = time.monotonic() + 15
            while "not reachable" not in log_path.read_text() and time.monotonic() < deadline:
                time.sleep(0.1)
        finally:
            stop(proc)
    warnings = [line for line in log_path.read_text().splitlines() if "not reachable" in line]
    assert len(warnings) == 1 and "did not answer" in warnings[0] and "BACKEND_TYPE=stub" in warnings[0]


def test_stub_start_line_names_no_url_and_no_warning(tmp_path):
    port = free_port()
    proc, log_path = start(tmp_path, [sys.executable, WSGI], **stub_env(tmp_path, port))
    try:
        wait_healthy(proc, f"http://127.0.0.1:{port}", log_path)
        time.sleep(0.5)
    finally:
        stop(proc)
    out = log_path.read_text()
    ready = [line for line in out.splitlines() if "LLM Proxy ready" in line]
    assert len(ready) == 1 and "stub" in ready[0] and "://" not in ready[0], out
    assert "not reachable" not in out and "WARNING" not in out


# --- item 21: .env comes from the working directory ------------------------------------------------------

def write_env_file(folder: Path, **env: str) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / ".env").write_text("".join(f"{k}={v}\n" for k, v in env.items()))


def test_env_file_of_the_working_directory_is_read(tmp_path):
    port = free_port()
    write_env_file(tmp_path, **stub_env(tmp_path, port))
    proc, log_path = start(tmp_path, [sys.executable, WSGI])  # nothing but .env sets PORT and the stub
    try:
        wait_healthy(proc, f"http://127.0.0.1:{port}", log_path)
        models = requests.get(f"http://127.0.0.1:{port}/v1/models", timeout=5).json()
    finally:
        stop(proc)
    assert [m["id"] for m in models["data"]] == ["stub", "stub-embed"]


def test_environment_wins_over_the_env_file(tmp_path):
    write_env_file(tmp_path, **stub_env(tmp_path, free_port(), STUB_DELAY_MS="not-a-number"))
    result = run_to_exit(tmp_path, STUB_DELAY_MS="0", PORT="99999")  # the environment's PORT is the bad one
    assert result.returncode == 2
    line = assert_one_line(result, "PORT='99999'")
    assert "STUB_DELAY_MS" not in line


def test_env_file_of_a_parent_folder_is_not_read(tmp_path):
    write_env_file(tmp_path, STUB_DELAY_MS="not-a-number")  # would stop start-up if it were read
    below = tmp_path / "below"
    below.mkdir()
    with socket.socket() as taken:  # so that, when the parent's .env is rightly ignored, start-up stops here
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        result = run_to_exit(below, **stub_env(tmp_path, taken.getsockname()[1]))
    assert result.returncode == 1 and "already in use" in result.stderr and "STUB_DELAY_MS" not in result.stderr


def test_unreadable_env_file_is_one_line(tmp_path):
    (tmp_path / ".env").write_bytes(b"PORT=\xff\xfe\n")
    result = run_to_exit(tmp_path, **stub_env(tmp_path, free_port()))
    assert result.returncode == 2
    assert_one_line(result, ".env")


def test_env_file_of_the_working_directory_is_read_under_gunicorn(tmp_path):
    pytest.importorskip("gunicorn")
    port = free_port()
    write_env_file(tmp_path, BACKEND_TYPE="stub", STUB_DELAY_MS="0", DATABASE_URL=f"sqlite:///{tmp_path}/log.db",
                   LOG_CLEANUP_MINUTES="0")
    args = [sys.executable, "-m", "gunicorn", "-k", "gevent", "-w", "1", "--bind", f"127.0.0.1:{port}",
            "--pythonpath", str(REPO_ROOT), "wsgi:app"]
    proc, log_path = start(tmp_path, args)
    try:
        wait_healthy(proc, f"http://127.0.0.1:{port}", log_path)
        models = requests.get(f"http://127.0.0.1:{port}/v1/models", timeout=5).json()
    finally:
        stop(proc)
    assert [m["id"] for m in models["data"]] == ["stub", "stub-embed"]


# --- what HOST and PORT accept -----------------------------------------------------------------------------

@pytest.mark.parametrize("raw, parsed", [
    ("127.0.0.1", "127.0.0.1"), ("0.0.0.0", "0.0.0.0"), ("::", "::"), ("[::1]", "::1"), ("::1", "::1"),
    ("localhost", "localhost"), ("my-box.lan", "my-box.lan"), (" 10.0.0.2 ", "10.0.0.2"),
])
def test_host_accepts_addresses_and_host_names(raw, parsed):
    from proxy.config import Settings

    assert Settings.from_env({"HOST": raw}).host == parsed


@pytest.mark.parametrize("raw", ["", "999.1.1.1", "http://127.0.0.1", "127.0.0.1:8080", "a b", "-bad-", "x" * 300])
def test_host_refuses_what_cannot_be_bound(raw):
    from proxy.config import ConfigError, Settings

    with pytest.raises(ConfigError, match="HOST"):
        Settings.from_env({"HOST": raw})


@pytest.mark.parametrize("raw", ["0", "65536", "99999", "-1", "http"])
def test_port_must_be_1_to_65535(raw):
    from proxy.config import ConfigError, Settings

    with pytest.raises(ConfigError, match="PORT"):
        Settings.from_env({"PORT": raw})
