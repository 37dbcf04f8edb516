"""HTTPS backends and outbound proxies: an https backend whose certificate comes from a private CA is refused
(502 naming the backend, a clear TLS message) until BACKEND_CA_BUNDLE names that CA; HTTP_PROXY sends backend
requests through the proxy and NO_PROXY lets a backend bypass it. Real sockets; the CA comes from `trustme`."""
from __future__ import annotations

import http.server as http_server
import ssl
import threading

import pytest
import trustme

from proxy.backends.base import HTTPBackend
from proxy.config import Settings
from proxy.errors import BackendUnavailable
from tests.backends.fake_raw import RawServer, http

PROXY_VARIABLES = ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "NO_PROXY", "REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE")


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch):
    for name in PROXY_VARIABLES:
        monkeypatch.delenv(name, raising=False)
        monkeypatch.delenv(name.lower(), raising=False)


class _Models(http_server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_GET(self):  # noqa: N802 - the name http.server calls
        body = b'{"data": [{"id": "m1"}]}'
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


@pytest.fixture
def https_backend(tmp_path):
    """An https server on localhost with a certificate from a test CA; yields (url, the CA's PEM path)."""
    ca = trustme.CA()
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("localhost").configure_cert(context)
    server = http_server.ThreadingHTTPServer(("127.0.0.1", 0), _Models)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    ca_path = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(ca_path))
    yield f"https://localhost:{server.server_address[1]}", str(ca_path)
    server.shutdown()
    server.server_close()


def backend_for(url: str, **env: str) -> HTTPBackend:
    return HTTPBackend(Settings.from_env({"BACKEND_URL": url, "BACKEND_TIMEOUT": "5", **env}))


def test_an_https_backend_signed_by_an_unknown_ca_is_refused_naming_it(https_backend):
    url, _ = https_backend
    with pytest.raises(BackendUnavailable) as info:
        backend_for(url).get_json("/v1/models")
    assert info.value.status == 502
    assert url in info.value.message and "TLS failed: certificate verify failed" in info.value.message


def test_an_https_backend_is_served_once_backend_ca_bundle_names_its_ca(https_backend):
    url, ca_path = https_backend
    assert backend_for(url, BACKEND_CA_BUNDLE=ca_path).get_json("/v1/models") == {"data": [{"id": "m1"}]}


def test_requests_ca_bundle_is_read_when_backend_ca_bundle_is_unset(https_backend, monkeypatch):
    url, ca_path = https_backend
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", ca_path)
    assert backend_for(url).get_json("/v1/models") == {"data": [{"id": "m1"}]}


def test_a_missing_ca_bundle_stops_start_up_naming_the_setting(tmp_path):
    with pytest.raises(ValueError, match="BACKEND_CA_BUNDLE"):
        Settings.from_env({"BACKEND_CA_BUNDLE": str(tmp_path / "nowhere.pem")})


@pytest.fixture
def raw_pair():
    proxy, backend = RawServer().start(), RawServer().start()
    yield proxy, backend
    proxy.stop()
    backend.stop()


def test_http_proxy_carries_backend_requests(raw_pair, monkeypatch):
    proxy, _ = raw_pair
    monkeypatch.setenv("HTTP_PROXY", proxy.url)
    proxy.script(http(body=b'{"via": "proxy"}'))
    assert backend_for("http://backend.invalid:8080/api").get_json("/v1/models") == {"via": "proxy"}
    [seen] = proxy.requests
    assert seen.target == "http://backend.invalid:8080/api/v1/models"  # absolute form: a request to a proxy


def test_no_proxy_lets_a_backend_bypass_the_proxy(raw_pair, monkeypatch):
    proxy, backend = raw_pair
    monkeypatch.setenv("HTTP_PROXY", proxy.url)
    monkeypatch.setenv("NO_PROXY", "127.0.0.1")
    backend.script(http(body=b'{"via": "direct"}'))
    assert backend_for(backend.url).get_json("/v1/models") == {"via": "direct"}
    assert proxy.requests == [] and backend.requests[0].target == "/v1/models"


def test_an_unreachable_proxy_is_502_naming_the_backend(monkeypatch):
    monkeypatch.setenv("HTTP_PROXY", "http://127.0.0.1:1")
    with pytest.raises(BackendUnavailable) as info:
        backend_for("http://backend.invalid:8080").get_json("/v1/models")
    assert "http://backend.invalid:8080" in info.value.message and "proxy" in info.value.message
