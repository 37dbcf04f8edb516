"""BACKENDS_FILE hot reload over real sockets: the file rewritten while a stream runs (the stream completes on
the backend it started on, the next request goes to the new one, the removed backend's probes stop); unchanged
backends keep their member, health and connections; a broken edit keeps serving the last good configuration,
says so once on the log and on the UI's overview, and a fixed file is taken again."""
from __future__ import annotations

import logging
import os
import threading
import time
from typing import Any

import pytest
import requests

from tests.support.pool_proxy import CHAT, PoolProxy, backend, wait_until


def answer(proxy: PoolProxy) -> str:
    r = requests.post(proxy.url + "/v1/chat/completions", json=CHAT, timeout=10)
    assert r.status_code == 200, r.text
    return r.json()["choices"][0]["message"]["content"]


def test_a_rewrite_while_a_stream_runs_lets_it_finish_and_sends_the_next_request_to_the_new_backend(
        upstreams, proxy):
    gate = threading.Event()
    old = upstreams("from", " old", gate=gate, gate_at=2)  # the role chunk, "from", then it waits
    new = upstreams("from new")
    running = proxy(backend("old", old, 'health = { interval_s = 0.1 }\n'))
    wait_until(lambda: len(old.calls("/v1/models")) >= 2)  # probed
    stream = requests.post(running.url + "/v1/chat/completions", json={**CHAT, "stream": True}, stream=True,
                           timeout=10)
    lines = stream.iter_lines()
    assert b"from" in next(line for line in lines if b'"from"' in line)  # through; the rest waits
    started = time.monotonic()
    running.rewrite(backend("new", new))
    wait_until(lambda: "new" in running.pool.by_name)
    assert time.monotonic() - started < 2.5  # within 2 s of the change (and a look)
    assert answer(running) == "from new"  # new requests see the new pool while the old stream still runs
    gate.set()
    rest = b"\n".join(lines)
    assert b" old" in rest and b"[DONE]" in rest and b"error" not in rest  # the stream completed on "old"
    assert old.exchanges_to("/v1/chat/completions")[0].completed
    probes = len(old.calls("/v1/models"))
    time.sleep(0.5)
    assert len(old.calls("/v1/models")) == probes  # the removed backend is no longer probed
    assert [m.name for m in running.pool.members] == ["new"] and answer(running) == "from new"
    health = requests.get(running.url + "/healthz", timeout=5).json()
    assert [b["name"] for b in health["backends"]] == ["new"]


def test_unchanged_backends_keep_their_member_and_health(upstreams, proxy):
    a, b, c = upstreams("a"), upstreams("b"), upstreams("c")
    running = proxy(backend("a", a) + backend("b", b, "weight = 1\n"))
    member_a, member_b = running.pool.by_name["a"], running.pool.by_name["b"]
    member_a.failed("an earlier failure")
    member_b.failed("an earlier failure of b")
    running.rewrite(backend("a", a) + backend("b", b, "weight = 5\n") + backend("c", c))
    wait_until(lambda: "c" in running.pool.by_name)
    assert running.pool.by_name["a"] is member_a and member_a.failures == 1  # the same member: untouched
    kept = running.pool.by_name["b"]  # weight changed: a new member on the same backend object (connections)
    assert kept is not member_b and kept.backend is member_b.backend and kept.spec.weight == 5
    assert kept.failures == 1 and kept.last_error == "an earlier failure of b" and not member_a.retired.is_set()
    assert member_b.retired.is_set()
    assert sorted(answer(running) for _ in range(3)) == ["a", "b", "c"]


def test_a_broken_edit_keeps_the_last_good_configuration_logs_once_and_shows_on_the_overview(
        upstreams, proxy, caplog):
    good, other = upstreams("good"), upstreams("other")
    running = proxy(backend("good", good))
    caplog.set_level(logging.INFO, logger="proxy.backendswatch")
    running.rewrite(backend("good", good) + '[backends.other]\ntype = "openai"\nurl = "nope"\n')
    wait_until(lambda: running.watcher.problem is not None)
    assert "backend 'other', key 'url'" in running.watcher.problem
    assert answer(running) == "good"
    page = requests.get(running.url + "/ui/", timeout=5)
    assert page.status_code == 200 and 'id="backends-file-problem"' in page.text
    assert "backend &#39;other&#39;, key &#39;url&#39;" in page.text
    running.rewrite("[backends.good\n")  # broken differently: one more line
    wait_until(lambda: "not valid TOML" in (running.watcher.problem or ""))
    time.sleep(1.5)  # more looks at the same broken file: no more lines
    lines = [r for r in caplog.records if r.name == "proxy.backendswatch"]
    assert [r.levelname for r in lines] == ["ERROR", "ERROR"]
    assert "last good configuration stays in force" in lines[0].getMessage()
    assert answer(running) == "good" and [m.name for m in running.pool.members] == ["good"]
    running.path.unlink()  # gone: the same, said once
    wait_until(lambda: "gone" in (running.watcher.problem or ""))
    assert answer(running) == "good"
    running.path.write_text(backend("other", other))
    wait_until(lambda: running.watcher.problem is None)
    assert answer(running) == "other"
    assert 'id="backends-file-problem"' not in requests.get(running.url + "/ui/", timeout=5).text
    lines = [r for r in caplog.records if r.name == "proxy.backendswatch"]
    assert [r.levelname for r in lines] == ["ERROR", "ERROR", "ERROR", "INFO"]
    assert "good again" in lines[-1].getMessage() and "added other" in lines[-1].getMessage()


def test_requests_in_flight_keep_the_backend_they_hold_when_it_is_removed(upstreams, proxy):
    slow = upstreams("slow whole", hang=2.5)  # answers after the reload
    fast = upstreams("fast")
    running = proxy(backend("slow", slow))
    result: dict[str, Any] = {}
    worker = threading.Thread(target=lambda: result.update(text=answer(running)))
    worker.start()
    slow.wait_for("/v1/chat/completions")
    running.rewrite(backend("fast", fast))
    wait_until(lambda: "fast" in running.pool.by_name)
    worker.join(timeout=10)
    assert result["text"] == "slow whole"  # a non-streamed answer in flight: whole, from the removed backend
    assert answer(running) == "fast"


def sockets_to(port: int) -> int:
    """How many sockets this process has open to ``port`` on this host (its fds against /proc/net/tcp)."""
    inodes = set()
    for fd in os.listdir("/proc/self/fd"):
        try:
            target = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(target[8:-1])
    count = 0
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with open(table) as lines:
            for line in list(lines)[1:]:
                fields = line.split()
                if int(fields[2].rsplit(":", 1)[1], 16) == port and fields[9] in inodes:
                    count += 1
    return count


def test_a_dropped_backends_connections_are_closed_once_its_requests_end(upstreams, proxy):
    gate = threading.Event()
    old = upstreams("from", " old", gate=gate, gate_at=2)
    new, kept = upstreams("from new"), upstreams("kept")
    running = proxy(backend("old", old) + backend("kept", kept, 'models = ["k"]\nweight = 1\n'))
    answer(running)  # a keep-alive connection to old
    member_old, member_kept = running.pool.by_name["old"], running.pool.by_name["kept"]
    stream = requests.post(running.url + "/v1/chat/completions", json={**CHAT, "stream": True}, stream=True,
                           timeout=10)
    lines = stream.iter_lines()
    next(line for line in lines if b'"from"' in line)
    assert member_old.in_flight == 1 and sockets_to(old.port) >= 1
    running.rewrite(backend("new", new) + backend("kept", kept, 'models = ["k"]\nweight = 2\n'))
    wait_until(lambda: "new" in running.pool.by_name)
    assert not member_old.backend.connection.closed  # its stream still runs
    gate.set()
    assert b"[DONE]" in b"\n".join(lines)
    wait_until(lambda: member_old.backend.connection.closed)  # the stream's end released the last slot
    wait_until(lambda: sockets_to(old.port) == 0)
    assert not member_kept.backend.connection.closed  # its connections go on with the new member
    assert running.pool.by_name["kept"].backend is member_kept.backend and answer(running) == "from new"


def test_a_closed_backend_fails_as_an_unreachable_one_would(upstreams):
    from proxy.backends import make_backend
    from proxy.config import Settings
    from proxy.errors import BackendUnavailable
    from proxy.failover import retryable

    fake = upstreams("x")
    backend_ = make_backend(Settings.from_env({"BACKEND_TYPE": "openai", "BACKEND_URL": fake.url}))
    assert backend_.list_models(timeout=5)[0].id == "m"
    backend_.close()
    with pytest.raises(BackendUnavailable, match="the backend was closed") as info:
        backend_.list_models(timeout=5)
    assert retryable(info.value)  # a request racing a reload goes on to another backend
