"""Ending an exchange early with several backends, over real sockets: a client that disconnects while the
first backend fails stops the retries (recorded cancelled; the next backend never sees the request), under the
in-process server and under ``python wsgi.py`` (gevent's pywsgi); ``client_gone`` itself on socket pairs;
``total_s`` ends a stream that keeps going with an error chunk in the caller's dialect (recorded as a timeout),
and a whole answer that takes too long with a 504."""
from __future__ import annotations

import json
import socket
import time

import pytest
import requests

from proxy.clientgone import client_gone
from tests.support.pool_proxy import CHAT, backend, wait_until

# --- client_gone ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("make_pair", [socket.socketpair, lambda: __import__("gevent.socket").socket.socketpair()],
                         ids=["plain", "gevent"])
def test_client_gone_reads_end_of_file_without_waiting_or_taking_bytes(make_pair):
    ours, theirs = make_pair()
    try:
        environ = {"werkzeug.socket": ours}
        started = time.monotonic()
        assert not client_gone(environ)  # nothing to read: still there, and no wait
        assert time.monotonic() - started < 0.5
        theirs.sendall(b"GET / HTTP/1.1\r\n")  # a pipelined request: still there, the bytes stay
        assert not client_gone(environ) and ours.recv(100) == b"GET / HTTP/1.1\r\n"
        theirs.close()
        assert client_gone(environ)
        assert not client_gone({})  # no socket known: taken for present
    finally:
        ours.close()


# --- a client that leaves stops the retries ------------------------------------------------------------

def post_and_leave(url: str, body: dict, leave_after: float) -> None:
    """Send a whole request on a raw socket, then close it before any answer."""
    host, port = url.removeprefix("http://").split(":")
    payload = json.dumps(body).encode()
    with socket.create_connection((host, int(port))) as sock:
        sock.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                     b"Content-Length: %d\r\n\r\n%s" % (len(payload), payload))
        time.sleep(leave_after)


@pytest.mark.parametrize("wsgi", [False, True], ids=["werkzeug", "pywsgi"])
def test_a_client_that_disconnects_stops_the_retries(upstreams, proxy, wsgi):
    hole, good = upstreams("never", hang=30), upstreams("fine")
    running = proxy(backend("hole", hole, "weight = 9\ntimeouts = { first_byte_s = 1 }\n") + backend("good", good)
                    + '[routing]\nstrategy = "weighted"\nretries = 2\nbackoff_ms = 1\n', wsgi=wsgi)
    r = requests.post(running.url + "/v1/chat/completions", json=CHAT, timeout=10)  # a client that stays
    assert r.status_code == 200 and r.json()["choices"][0]["message"]["content"] == "fine"
    assert len(hole.calls("/v1/chat/completions")) == 1 and len(good.calls("/v1/chat/completions")) == 1
    post_and_leave(running.url, CHAT, leave_after=0.3)  # gone while "hole" keeps it waiting
    wait_until(lambda: len(hole.calls("/v1/chat/completions")) == 2)
    time.sleep(1.5)  # "hole" times out after 1 s: "good" would be next
    assert len(good.calls("/v1/chat/completions")) == 1  # no further attempt
    if wsgi:
        wait_until(lambda: "outcome=cancelled" in running.output())
        line = next(li for li in running.output().splitlines() if "outcome=cancelled" in li)
        assert " 499 " in line
    else:
        row = running.rows(2)[-1]
        assert row["outcome"] == "cancelled" and row["status"] == 499
        assert "client closed the connection after 1 failed attempt" in row["error"]
        assert [a["backend"] for a in json.loads(row["attempts"])] == ["hole"]


# --- total_s --------------------------------------------------------------------------------------------

def test_total_s_ends_a_stream_that_keeps_going_with_an_error_chunk_in_each_dialect(upstreams, proxy):
    slow = upstreams(*[f" w{i}" for i in range(30)], delay=0.1)  # never idle for long; 3 s in all
    running = proxy(backend("slow", slow, "timeouts = { total_s = 1, idle_s = 5 }\n"))
    started = time.monotonic()
    r = requests.post(running.url + "/v1/chat/completions", json={**CHAT, "stream": True}, timeout=10)
    took = time.monotonic() - started
    assert r.status_code == 200 and 0.9 < took < 2.5
    events = [line.removeprefix("data: ") for line in r.text.splitlines() if line.startswith("data: ")]
    assert events[-1] == "[DONE]" and " w2" in r.text and " w29" not in r.text
    error = json.loads(events[-2])["error"]
    assert "did not finish within 1 s (total_s)" in error["message"]
    row = running.rows(1)[-1]
    assert row["outcome"] == "timeout" and "total_s" in row["error"]
    r = requests.post(running.url + "/api/chat", json={**CHAT, "stream": True}, timeout=10)  # Ollama front
    lines = [json.loads(line) for line in r.text.splitlines() if line]
    assert r.status_code == 200 and "total_s" in lines[-1]["error"] and len(lines) > 3


def test_total_s_bounds_a_whole_answer_too(upstreams, proxy):
    late = upstreams("late", hang=5)
    running = proxy(backend("late", late, "timeouts = { total_s = 0.5 }\n") + "[routing]\nretries = 0\n")
    started = time.monotonic()
    r = requests.post(running.url + "/v1/chat/completions", json=CHAT, timeout=10)
    assert r.status_code == 504 and "total_s" in r.json()["error"]["message"]
    assert time.monotonic() - started < 2
