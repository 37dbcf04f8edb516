"""The proxy as a process of its own, for the command-line and deployment tests: an environment without the
test process's proxy settings, start (output to a file), wait for /health, stop."""
from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import requests

from tests.support import REPO_ROOT


def clean_env(**env: str) -> dict[str, str]:
    """The test process's environment without any proxy setting (each test names the ones it means)."""
    from proxy.cli import KEY_VARIABLE
    from proxy.config import SETTINGS

    names = {s.env for s in SETTINGS} | {KEY_VARIABLE, "NO_COLOR"}
    base = {k: v for k, v in os.environ.items() if k not in names}
    return {**base, "PYTHONUNBUFFERED": "1", "PYTHONPATH": str(REPO_ROOT), **env}


def start(cwd: Path, args: list[str], **env: str) -> tuple[subprocess.Popen, Path]:
    """`python ARGS` in ``cwd`` with ``env`` added to a clean environment; (process, its output file)."""
    log_path = cwd / f"out-{time.monotonic_ns()}.log"
    with open(log_path, "wb") as log:
        proc = subprocess.Popen([sys.executable, *args], cwd=cwd, env=clean_env(**env), stdout=log,
                                stderr=subprocess.STDOUT)
    return proc, log_path


def wait_healthy(proc: subprocess.Popen, url: str, log_path: Path, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while True:
        assert proc.poll() is None, f"exited with {proc.returncode}:\n{log_path.read_text()}"
        try:
            if requests.get(url + "/health", timeout=1).text.strip() == "OK":
                return
        except requests.RequestException:
            pass
        assert time.monotonic() < deadline, f"no /health in {timeout} s:\n{log_path.read_text()}"
        time.sleep(0.05)


def stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=5)
