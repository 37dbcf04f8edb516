"""`gunicorn wsgi:app` (gunicorn.conf.py: gevent workers) on a free port, with the stub backend and a SQLite log by
default; ``workers`` sets `-w`; an environment variable given as None is left out."""
from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import requests

from tests.support import REPO_ROOT, free_port


class Gunicorn:
    def __init__(self, tmp_path: Path, workers: int = 1, **env: str | None):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.db = tmp_path / "gunicorn.db"
        self.log_path = tmp_path / "gunicorn.log"
        full = {**os.environ, "BACKEND_TYPE": "stub", "HOST": "127.0.0.1", "PORT": str(self.port),
                "DATABASE_URL": f"sqlite:///{self.db}", "LOG_LEVEL": "WARNING", "LOG_CLEANUP_MINUTES": "0",
                **{k: str(v) for k, v in env.items()}}
        for name in [k for k, v in env.items() if v is None]:
            del full[name]
        log = open(self.log_path, "wb")  # noqa: SIM115 - the server process writes it; closed when it stops
        self.process = subprocess.Popen([sys.executable, "-m", "gunicorn", "-w", str(workers), "wsgi:app"],
                                        cwd=REPO_ROOT, env=full, stdout=log, stderr=subprocess.STDOUT)
        log.close()
        deadline = time.monotonic() + 30
        while True:
            assert self.process.poll() is None, self.output()
            try:
                if requests.get(self.url + "/health", timeout=1).status_code == 200:
                    break
            except requests.RequestException:
                pass
            assert time.monotonic() < deadline, self.output()
            time.sleep(0.2)

    def output(self) -> str:
        return self.log_path.read_text(errors="replace")

    def rows(self) -> list[tuple]:
        with sqlite3.connect(self.db) as conn:
            return conn.execute("SELECT endpoint, status, outcome, error FROM exchanges ORDER BY id").fetchall()

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=5)
