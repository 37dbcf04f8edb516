"""The Dockerfile, docker-compose.yml and the systemd unit, checked against the project (no container engine
runs here, and no systemd): what they copy exists and is not ignored, they run the documented command, the port
and the health check are the ones the proxy serves, the compose file's URLs point at its own services, and the
unit keeps its hardening and passes `systemd-analyze verify`."""
from __future__ import annotations

import json
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from proxy.config import SETTINGS
from tests.support import REPO_ROOT, fakes, free_port
from tests.support.procs import clean_env, stop, wait_healthy

DOCUMENTED = "gunicorn -k gevent -w 2 wsgi:app"
DEFAULTS = {s.env: s.default for s in SETTINGS}


def instructions(path: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) of a Dockerfile, continuation lines joined, comments dropped."""
    joined = re.sub(r"\\\n", " ", "\n".join(line for line in path.read_text().splitlines()
                                           if not line.lstrip().startswith("#")))
    found = []
    for line in joined.splitlines():
        if line.strip():
            word, _, rest = line.strip().partition(" ")
            found.append((word.upper(), " ".join(rest.split())))
    return found


def one(kind: str) -> str:
    [value] = [args for word, args in instructions(REPO_ROOT / "Dockerfile") if word == kind]
    return value


def unit(path: Path) -> dict[str, list[str]]:
    """Key -> its values, across the unit's sections (systemd keys may repeat)."""
    keys: dict[str, list[str]] = {}
    for line in path.read_text().splitlines():
        if "=" in line and not line.startswith(("#", ";", "[")):
            key, _, value = line.partition("=")
            keys.setdefault(key.strip(), []).append(value.strip())
    return keys


# --- Dockerfile ----------------------------------------------------------------------------------------------

def test_image_is_python_3_11_slim():
    assert one("FROM") == "python:3.11-slim"


def test_every_copied_path_exists_and_is_not_left_out_by_dockerignore():
    ignore = [line for line in (REPO_ROOT / ".dockerignore").read_text().splitlines()
              if line.strip() and not line.startswith("#")]
    assert ignore[0] == "*"  # everything is left out but what is named again
    kept = {line[1:] for line in ignore if line.startswith("!")}
    copies = [args.split()[:-1] for word, args in instructions(REPO_ROOT / "Dockerfile") if word == "COPY"]
    sources = [source for group in copies for source in group]
    assert sources
    for source in sources:
        assert (REPO_ROOT / source).exists(), source
        assert source.rstrip("/") in kept, f"{source} is left out of the build context by .dockerignore"
    assert ".env" not in kept


def test_image_runs_the_documented_command_as_a_user_that_is_not_root():
    assert json.loads(one("CMD")) == DOCUMENTED.split()
    assert one("USER") not in ("root", "0", "")
    assert "useradd" in " ".join(args for word, args in instructions(REPO_ROOT / "Dockerfile") if word == "RUN")


def test_image_listens_beyond_loopback_on_the_default_port_it_exposes():
    env = one("ENV")
    assert "HOST=0.0.0.0" in env.split() and f"PORT={DEFAULTS['PORT']}" in env.split()
    assert one("EXPOSE") == DEFAULTS["PORT"]


def test_default_log_database_is_in_the_volume():
    assert DEFAULTS["DATABASE_URL"] == "sqlite:///data/proxy.db"  # relative to the working directory
    assert one("WORKDIR") == "/app" and json.loads(one("VOLUME")) == ["/app/data"]


def healthcheck_command() -> list[str]:
    options, _, command = one("HEALTHCHECK").partition("CMD ")
    assert "--interval=" in options and "--timeout=" in options
    return json.loads(command)


def test_healthcheck_passes_against_a_running_proxy_and_fails_without_one(make_proxy):
    command = healthcheck_command()
    assert command[0] == "python" and "/health'" in command[-1]
    proxy = make_proxy(BACKEND_TYPE="stub")
    ok = subprocess.run([sys.executable, *command[1:]], env={"PORT": str(proxy.port)}, capture_output=True, timeout=30)
    assert ok.returncode == 0, ok.stderr
    down = subprocess.run([sys.executable, *command[1:]], env={"PORT": str(free_port())}, capture_output=True,
                          timeout=30)
    assert down.returncode != 0


# --- docker-compose.yml ------------------------------------------------------------------------------------

def substituted(value: str) -> str:
    """Compose's ${VAR:-default} and ${VAR:?error} as with VAR unset (a required one gets a placeholder)."""
    value = re.sub(r"\$\{[A-Z_]+:\?[^}]*\}", "secret", value)
    return re.sub(r"\$\{[A-Z_]+:-([^}]*)\}", r"\1", value)


def test_compose_points_database_url_and_redis_url_at_its_own_services():
    from proxy.values import database_url, redis_url

    text = (REPO_ROOT / "docker-compose.yml").read_text()
    services = set(re.findall(r"^  ([a-z-]+):$", text, re.M))
    assert {"proxy", "postgres", "redis"} <= services
    env = dict(re.findall(r"^      ([A-Z_]+): (.+)$", text, re.M))
    database, redis = substituted(env["DATABASE_URL"]), substituted(env["REDIS_URL"])
    assert database_url(database).startswith("postgresql://") and "@postgres:5432/" in database
    assert redis_url(redis) == "redis://redis:6379/0"
    assert "image: postgres:" in text and "image: redis:" in text and "build: ." in text
    assert "/app/data" in text  # the image's volume


# --- systemd ---------------------------------------------------------------------------------------------------

SERVICE = REPO_ROOT / "deploy" / "llm-proxy.service"
HARDENING = {
    "DynamicUser": "yes", "StateDirectory": "llm-proxy", "ProtectSystem": "strict", "ProtectHome": "yes",
    "NoNewPrivileges": "yes", "PrivateTmp": "yes", "PrivateDevices": "yes", "CapabilityBoundingSet": "",
    "RestrictAddressFamilies": "AF_UNIX AF_INET AF_INET6", "SystemCallFilter": "@system-service",
    "MemoryDenyWriteExecute": "yes", "Restart": "on-failure",
}


def test_unit_runs_the_documented_command_from_the_checkout_in_its_state_directory():
    keys = unit(SERVICE)
    [start] = keys["ExecStart"]
    program, *args = shlex.split(start)
    checkout = Path(program).parent.parent.parent  # <checkout>/.venv/bin/gunicorn
    assert program.startswith("/") and Path(program).name == "gunicorn"
    assert args[:4] == ["-c", str(checkout / "gunicorn.conf.py"), "--pythonpath", str(checkout)]
    assert args[4:] == DOCUMENTED.split()[1:]
    assert (REPO_ROOT / "wsgi.py").exists() and (REPO_ROOT / "gunicorn.conf.py").exists()
    # relative paths (the default DATABASE_URL, sqlite:///data/proxy.db) land in the one writable place
    assert keys["WorkingDirectory"] == [f"/var/lib/{keys['StateDirectory'][0]}"]
    assert not any("DATABASE_URL" in v for v in keys.get("Environment", []))


def test_gunicorn_started_elsewhere_as_the_unit_does_keeps_its_data_in_the_working_directory(tmp_path):
    pytest.importorskip("gunicorn")
    program, *args = shlex.split(unit(SERVICE)["ExecStart"][0])
    args = [a.replace("/opt/llm-proxy", str(REPO_ROOT)) for a in args]
    port = free_port()
    log_path = tmp_path / "gunicorn.log"
    with open(log_path, "wb") as log:
        proc = subprocess.Popen([sys.executable, "-m", "gunicorn", *args], cwd=tmp_path, stdout=log,
                                stderr=subprocess.STDOUT,
                                env=clean_env(BACKEND_TYPE="stub", PORT=str(port), LOG_CLEANUP_MINUTES="0"))
    try:
        wait_healthy(proc, f"http://127.0.0.1:{port}", log_path)
    finally:
        stop(proc)
    assert (tmp_path / "data" / "proxy.db").exists()


def test_unit_has_the_hardening_systemd_offers():
    keys = unit(SERVICE)
    for key, value in HARDENING.items():
        assert value in keys.get(key, []), f"{key}={value}"
    assert keys["EnvironmentFile"] == ["/etc/llm-proxy/llm-proxy.env"]


# Refuse pages that are (or become) writable and executable, as MemoryDenyWriteExecute does, for this process
# and what it executes (Linux 6.3's PR_SET_MDWE, inherited across execve), then run the given command.
MDWE = """
import ctypes, mmap, os, sys
libc = ctypes.CDLL(None, use_errno=True)
if libc.prctl(65, 1, 0, 0, 0) != 0:  # PR_SET_MDWE, PR_MDWE_REFUSE_EXEC_GAIN
    sys.exit(77)
try:
    mmap.mmap(-1, 4096, prot=mmap.PROT_READ | mmap.PROT_WRITE | mmap.PROT_EXEC)
    sys.exit(78)  # not refused: the check would prove nothing
except OSError:
    pass
os.execv(sys.executable, [sys.executable, *sys.argv[1:]])
"""


def test_proxy_serves_every_handshake_with_memory_deny_write_execute(tmp_path, fake_upstream):
    """The unit's MemoryDenyWriteExecute: gunicorn, gevent's workers and greenlets, the backend client, all
    without a writable and executable page (checked with the kernel's own refusal, not under systemd)."""
    import io

    from proxy.config import Settings
    from proxy.doctor import run

    if not sys.platform.startswith("linux"):
        pytest.skip("PR_SET_MDWE is Linux's")
    probe = subprocess.run([sys.executable, "-c", MDWE, "-c", "pass"], capture_output=True, timeout=30).returncode
    if probe == 77:
        pytest.skip("this kernel has no PR_SET_MDWE (Linux 6.3 or later)")
    assert probe == 0, "a writable and executable page was not refused" if probe == 78 else probe
    fake_upstream.serve_openai_models("qwen3-8b")
    fake_upstream.default("POST", "/v1/chat/completions", fakes.openai_chat_responder(["Hello", " there"]))
    program, *args = shlex.split(unit(SERVICE)["ExecStart"][0])
    args = [a.replace("/opt/llm-proxy", str(REPO_ROOT)) for a in args]
    port = free_port()
    log_path = tmp_path / "gunicorn.log"
    with open(log_path, "wb") as log:
        proc = subprocess.Popen([sys.executable, "-c", MDWE, "-m", "gunicorn", *args], cwd=tmp_path, stdout=log,
                                stderr=subprocess.STDOUT,
                                env=clean_env(BACKEND_TYPE="openai", BACKEND_URL=fake_upstream.url, PORT=str(port),
                                              LOG_CLEANUP_MINUTES="0"))
    try:
        wait_healthy(proc, f"http://127.0.0.1:{port}", log_path)
        out = io.StringIO()
        status = run(lambda: Settings.from_env({"BACKEND_TYPE": "stub"}), url=f"http://127.0.0.1:{port}", out=out,
                     timeout=10)
    finally:
        stop(proc)
    assert status == 0, out.getvalue() + log_path.read_text()
    assert "Traceback" not in log_path.read_text()


def test_unit_passes_systemd_analyze_verify(tmp_path):
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.skip("systemd-analyze is not installed")
    gunicorn = Path(sys.executable).parent / "gunicorn"
    copy = tmp_path / "llm-proxy.service"  # the command pointed at this venv's gunicorn, which exists here
    copy.write_text(SERVICE.read_text().replace("/opt/llm-proxy/.venv/bin/gunicorn ", f"{gunicorn} "))
    result = subprocess.run([analyze, "verify", str(copy)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0 and result.stderr.strip() == "", result.stderr


# --- the docs --------------------------------------------------------------------------------------------------

def test_documented_command_and_files_are_in_the_readme_and_deploy_docs():
    readme = " ".join((REPO_ROOT / "README.md").read_text().split())
    deploy = " ".join((REPO_ROOT / "docs" / "deploy.md").read_text().split())
    assert DOCUMENTED in readme and DOCUMENTED in deploy
    assert "deploy/llm-proxy.service" in readme and "deploy/llm-proxy.service" in deploy
    assert "untested in CI" in readme and "untested in CI" in deploy
