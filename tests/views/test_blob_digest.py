"""`/api/blobs/<digest>` forwards only a digest Ollama itself would accept (`sha256:` and 64 hex digits):
anything else is a 400 in the Ollama dialect and nothing reaches the backend, so spaces, CR/LF and `../`
never end up in the upstream request line."""
from __future__ import annotations

import http.client
import json

import pytest

DIGEST = "sha256:" + "0123456789abcdef" * 4


def _send(proxy_url: str, method: str, target: str, body: bytes | None = None) -> tuple[int, bytes]:
    host, port = proxy_url.rsplit("//", 1)[1].split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=10)
    try:
        conn.putrequest(method, target, skip_accept_encoding=True)  # the target goes on the wire as written
        conn.putheader("Content-Length", str(len(body or b"")))
        conn.endheaders(body)
        resp = conn.getresponse()
        return resp.status, resp.read()
    finally:
        conn.close()


@pytest.mark.parametrize("target", [
    "/api/blobs/sha256:ab%20cd",
    "/api/blobs/sha256:" + "0" * 63,
    "/api/blobs/sha256:" + "0" * 65,
    "/api/blobs/md5:" + "0" * 64,
    "/api/blobs/" + "0" * 64,
    "/api/blobs/sha256:" + "g" * 64,
    "/api/blobs/sha256:" + "0" * 64 + "%20HTTP/1.1",
])
@pytest.mark.parametrize("method", ["POST", "HEAD"])
def test_malformed_blob_digest_is_400_in_ollama_dialect_and_never_forwarded(ollama_backend, method, target):
    status, body = _send(ollama_backend.url, method, target, b"blob" if method == "POST" else None)
    assert status == 400
    if method == "POST":
        error = json.loads(body)
        assert set(error) == {"error"} and "digest" in error["error"], error
    assert not [r for r in ollama_backend.fake.requests if "blobs" in r.path], ollama_backend.fake.requests.paths()


@pytest.mark.parametrize("target", [
    "/api/blobs/sha256:%0D%0AX-Injected:%201",
    "/api/blobs/sha256:../../api/delete",
    "/api/blobs/..%2F..%2Fapi%2Fdelete",
])
def test_blob_paths_with_line_breaks_or_dot_segments_never_reach_the_backend(ollama_backend, target):
    """Refused before or by the view (an unrouted path, a path not in plain form, a bad digest): a 4xx
    in the Ollama dialect either way."""
    status, body = _send(ollama_backend.url, "POST", target, b"blob")
    assert status in (400, 404)
    error = json.loads(body)
    assert set(error) == {"error"} and isinstance(error["error"], str), error
    assert not [r for r in ollama_backend.fake.requests if "blobs" in r.path], ollama_backend.fake.requests.paths()


@pytest.mark.parametrize("method", ["POST", "HEAD"])
def test_valid_blob_digest_is_forwarded_with_exactly_that_path(ollama_backend, method):
    from tests.support.fakes import Reply

    ollama_backend.fake.default(method, f"/api/blobs/{DIGEST}", Reply(status=201 if method == "POST" else 200))
    status, _ = _send(ollama_backend.url, method, f"/api/blobs/{DIGEST}", b"blob" if method == "POST" else None)
    assert status == (201 if method == "POST" else 200)
    assert ollama_backend.fake.last(f"/api/blobs/{DIGEST}").method == method
