"""LOG_FILE: the stdout lines also reach the file; `python wsgi.py` opens it again on SIGHUP after logrotate
renamed it; LOG_FILE_MAX_MB rotates it by size, keeping LOG_FILE_BACKUPS files."""
from __future__ import annotations

import logging
import signal
import time

import pytest
import requests

from proxy.accesslog import configure_logging
from proxy.config import ConfigError, Settings


@pytest.fixture
def own_handlers():
    """Put the root logger's handlers back as they were (configure_logging replaces the proxy's own)."""
    root = logging.getLogger()
    before, level = list(root.handlers), root.level
    yield
    for handler in list(root.handlers):
        if handler not in before:
            root.removeHandler(handler)
            handler.close()
    for handler in before:
        if handler not in root.handlers:
            root.addHandler(handler)
    root.setLevel(level)


def _wait_for_text(path, text: str, timeout: float = 10.0) -> str:
    end = time.monotonic() + timeout
    while True:
        content = path.read_text() if path.exists() else ""
        if text in content:
            return content
        assert time.monotonic() < end, f"{text!r} not in {path}:\n{content}"
        time.sleep(0.05)


def test_access_lines_reach_the_log_file(make_proxy, tmp_path, own_handlers):
    path = tmp_path / "proxy.log"
    proxy = make_proxy(BACKEND_TYPE="stub", LOG_LEVEL="INFO", LOG_FILE=path, LOG_FORMAT="json")
    rid = requests.get(proxy.url + "/api/version").headers["X-Request-ID"]
    line = next(line for line in _wait_for_text(path, rid).splitlines() if rid in line)
    assert '"event": "access"' in line and '"path": "/api/version"' in line


def test_sighup_opens_the_log_file_again_after_it_was_renamed(wsgi_proxy, tmp_path):
    path = tmp_path / "proxy.log"
    proxy = wsgi_proxy(BACKEND_TYPE="stub", LOG_LEVEL="INFO", LOG_FILE=path)
    before = requests.get(proxy.url + "/api/version").headers["X-Request-ID"]
    _wait_for_text(path, before)
    rotated = tmp_path / "proxy.log.1"
    path.rename(rotated)  # what logrotate does before it signals the server
    proxy.process.send_signal(signal.SIGHUP)
    after = requests.get(proxy.url + "/api/version").headers["X-Request-ID"]
    content = _wait_for_text(path, after)
    assert before not in content and after not in rotated.read_text()
    assert proxy.process.poll() is None  # SIGHUP does not stop it


def test_size_rotation_keeps_the_configured_number_of_backups(tmp_path, own_handlers):
    path = tmp_path / "proxy.log"
    configure_logging(Settings.from_env({"LOG_FILE": str(path), "LOG_FILE_MAX_MB": "1", "LOG_FILE_BACKUPS": "2",
                                         "LOG_LEVEL": "INFO"}))
    log = logging.getLogger("proxy.test")
    for i in range(4 * 1024):  # about 4 MiB of lines: three rotations
        log.info("line %05d %s", i, "x" * 1000)
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names == ["proxy.log", "proxy.log.1", "proxy.log.2"]
    assert all(p.stat().st_size <= (1 << 20) for p in tmp_path.iterdir())
    assert "line 04095" in path.read_text()


def test_a_log_file_in_a_missing_folder_stops_start_up_with_its_name(tmp_path):
    with pytest.raises(ConfigError, match="LOG_FILE="):
        Settings.from_env({"LOG_FILE": str(tmp_path / "missing" / "proxy.log")})
