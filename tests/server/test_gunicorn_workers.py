"""Several gunicorn workers (`gunicorn -k gevent -w 2 wsgi:app`): `/metrics` reports the whole server (both
workers' counts, tokens, histograms and per-backend series add up whichever worker answers); the metrics folder
is emptied at start, and made and removed by the server when not given; a worker that dies leaves the live
gauges; LOG_FILE_MAX_MB is refused; SIGHUP to the master moves every worker to the new LOG_FILE."""
from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import requests

from tests.support import REPO_ROOT, free_port
from tests.support.gunicorn import Gunicorn

CHAT = {"model": "stub", "stream": False, "messages": [{"role": "user", "content": "one two three"}]}


def _children(pid: int) -> set[int]:
    found = set()
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                found.add(int(entry.name))
    return found


def _pids_with(folder: Path, prefix: str) -> set[int]:
    return {int(m.group(1)) for p in folder.glob(f"{prefix}*.db") if (m := re.search(r"_(\d+)\.db$", p.name))}


def _sum(text: str, start: str) -> float:
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines() if line.startswith(start))


def _scrape(server: Gunicorn) -> str:
    return requests.get(server.url + "/metrics", timeout=10).text


def _wait(check, timeout: float = 10.0) -> None:
    end = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < end, "condition not met in time"
        time.sleep(0.1)


def test_metrics_add_up_across_two_gunicorn_workers(tmp_path):
    folder = tmp_path / "metrics"
    folder.mkdir()
    (folder / "counter_999999.db").write_bytes(b"a previous run")  # emptied at start
    backends = tmp_path / "backends.toml"
    backends.write_text('[backends.local]\ntype = "stub"\n')
    server = Gunicorn(tmp_path, workers=2, BACKEND_TYPE=None, BACKENDS_FILE=str(backends), STUB_DELAY_MS="0",
                      PROMETHEUS_MULTIPROC_DIR=str(folder))
    try:
        assert not (folder / "counter_999999.db").exists()
        workers = _children(server.process.pid)
        assert len(workers) == 2
        made = 0
        tokens = 0
        with ThreadPoolExecutor(4) as pool:  # a new connection per request: either worker may take it
            while _pids_with(folder, "counter_") != workers:
                assert made < 400, f"one worker served all {made} requests"
                replies = list(pool.map(lambda _: requests.post(server.url + "/api/chat", json=CHAT, timeout=10),
                                        range(8)))
                assert all(r.status_code == 200 for r in replies)
                made += len(replies)
                tokens += sum(r.json()["eval_count"] for r in replies)
        for _ in range(4):  # several scrapes, on new connections: each worker answers the same totals
            text = _scrape(server)
            assert _sum(text, 'llm_proxy_requests_total{endpoint="/api/chat"') == made, text
            assert _sum(text, 'llm_proxy_tokens_total{kind="completion"') == tokens
            assert _sum(text, 'llm_proxy_request_duration_seconds_count{endpoint="/api/chat"') == made
        _wait(lambda: _sum(_scrape(server), 'llm_proxy_backend_requests_total{backend="local"}') == made)
        text = _scrape(server)
        assert _sum(text, 'llm_proxy_backend_healthy{backend="local"}') == 1  # livemin: not 2
        assert _sum(text, 'llm_proxy_backend_in_flight{backend="local"}') == 0

        dead = sorted(workers)[0]
        _wait(lambda: dead in _pids_with(folder, "gauge_live"))
        os.kill(dead, signal.SIGKILL)  # gunicorn starts another; its live gauges leave the sums
        _wait(lambda: dead not in _pids_with(folder, "gauge_live") and len(_children(server.process.pid)) == 2)
        assert dead in _pids_with(folder, "counter_")  # what it counted stays counted
        assert _sum(_scrape(server), 'llm_proxy_requests_total{endpoint="/api/chat"') == made
    finally:
        server.stop()


def test_several_workers_get_a_metrics_folder_removed_at_exit(tmp_path):
    temp = tmp_path / "temp"
    temp.mkdir()
    server = Gunicorn(tmp_path, workers=2, TMPDIR=str(temp))  # where the server makes its folder
    try:
        [folder] = temp.glob("llm-proxy-metrics-*")
        for _ in range(4):
            assert requests.post(server.url + "/api/chat", json=CHAT, timeout=10).status_code == 200
        _wait(lambda: len(_pids_with(folder, "counter_")) >= 1)
        assert "llm_proxy_requests_total" in _scrape(server)
    finally:
        server.stop()
    assert server.process.returncode == 0 and not folder.exists()


def test_size_rotation_of_the_log_file_is_refused_with_several_workers(tmp_path):
    env = {**os.environ, "BACKEND_TYPE": "stub", "HOST": "127.0.0.1", "PORT": str(free_port()),
           "LOG_ENABLED": "false", "LOG_FILE": str(tmp_path / "proxy.log"), "LOG_FILE_MAX_MB": "10"}
    done = subprocess.run([sys.executable, "-m", "gunicorn", "-w", "2", "wsgi:app"], cwd=REPO_ROOT, env=env,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode != 0 and "LOG_FILE_MAX_MB" in done.stderr and "SIGHUP" in done.stderr


def test_sighup_to_the_master_moves_every_worker_to_the_new_log_file(tmp_path):
    path = tmp_path / "proxy.log"
    server = Gunicorn(tmp_path, workers=2, LOG_LEVEL="INFO", LOG_FILE=str(path), LOG_ENABLED="false")
    try:
        old_workers = _children(server.process.pid)
        _wait(lambda: "LLM Proxy ready" in (path.read_text() if path.exists() else ""))
        path.rename(tmp_path / "proxy.log.1")  # logrotate's rename, then its postrotate signal
        server.process.send_signal(signal.SIGHUP)
        _wait(lambda: _children(server.process.pid).isdisjoint(old_workers) and
              len(_children(server.process.pid)) == 2)
        ids = {requests.post(server.url + "/api/chat", json=CHAT, timeout=10).headers["X-Request-ID"]
               for _ in range(6)}
        _wait(lambda: path.exists() and all(rid in path.read_text() for rid in ids))
        assert not any(rid in (tmp_path / "proxy.log.1").read_text() for rid in ids)
    finally:
        server.stop()
