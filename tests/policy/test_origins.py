"""CORS_ORIGINS entries are origins (a host may begin with `*.`), checked at start-up and matched against the
whole Origin header: a longer name, a path or a query that merely starts like an allowed origin gets no CORS
grant. Also the dual-stack reading of ALLOWED_NETWORKS (`::/0` holds every IPv4-mapped client)."""
from __future__ import annotations

import logging

import pytest
from flask import Flask
from flask_cors import CORS

from proxy.config import ConfigError, Settings
from proxy.hostguard import Origins
from proxy.values import parse_origins
from tests.support.policy import ALICE, assert_openai_error, call

ALLOWED = "https://chat.example.org,https://*.example.net,http://localhost:3000"
LOOKALIKES = ["https://chat.example.org.evil.net", "https://chat.example.orgx", "https://xchat.example.org",
              "https://chat.example.org:8443", "http://chat.example.org", "https://example.net",
              "https://evil.net", "https://a.example.net.evil.net", "https://aexample.net", "https://a.example.netx",
              "http://localhost:30001", "http://localhost:3000.evil.net", "null"]
GRANTED = ["https://chat.example.org", "HTTPS://Chat.Example.Org", "https://a.example.net", "https://a.b.example.net",
           "http://localhost:3000"]


@pytest.mark.parametrize("origin", LOOKALIKES)
def test_origins_that_only_start_like_an_allowed_one_get_no_cors_grant_over_http(backend_setup, origin):
    setup = backend_setup("openai", CORS_ORIGINS=ALLOWED)
    resp = call(setup.proxy, "GET", "/api/tags", headers={"Origin": origin})
    assert "Access-Control-Allow-Origin" not in resp.headers, resp.headers
    pre = call(setup.proxy, "OPTIONS", "/v1/chat/completions",
               headers={"Origin": origin, "Access-Control-Request-Method": "POST"})
    assert "Access-Control-Allow-Origin" not in pre.headers


def test_a_listed_origin_still_gets_its_grant_over_http(backend_setup):
    setup = backend_setup("openai", CORS_ORIGINS=ALLOWED)
    resp = call(setup.proxy, "GET", "/api/tags", headers={"Origin": "https://chat.example.org"})
    assert resp.headers["Access-Control-Allow-Origin"] == "https://chat.example.org"


@pytest.mark.parametrize("origin, granted", [(o, False) for o in LOOKALIKES] + [(o, True) for o in GRANTED])
def test_what_flask_cors_is_given_matches_whole_origins(origin, granted):
    app = Flask(__name__)
    CORS(app, origins=Origins(parse_origins(ALLOWED)).for_flask_cors(), send_wildcard=True)
    app.add_url_rule("/x", "x", lambda: "ok")
    resp = app.test_client().get("/x", headers={"Origin": origin})
    assert (resp.headers.get("Access-Control-Allow-Origin") == origin) is granted
    assert Origins(parse_origins(ALLOWED)).allows(origin) is granted


def test_star_allows_every_origin():
    assert Origins(parse_origins("*")).for_flask_cors() == "*"
    assert Origins(parse_origins("https://a.example, *")).allows("https://anything.example")


@pytest.mark.parametrize("raw", ["chat.example.org", "https://chat.example.org/app", "https://.*\\.example\\.org",
                                 "https://chat.example.org*", "https://*example.org", "https://a.*.example.org",
                                 "^https://chat\\.example\\.org$", "https://chat.example.org:port"])
def test_cors_origins_that_are_not_origins_stop_start_up_with_the_entry_named(raw):
    with pytest.raises(ConfigError) as info:
        Settings.from_env({"CORS_ORIGINS": f"https://ok.example, {raw}"})
    assert "CORS_ORIGINS" in str(info.value) and "no path" in str(info.value)


def test_cors_origins_are_normalised():
    assert parse_origins(" HTTPS://Chat.Example.org/ , https://chat.example.org,*") == ("https://chat.example.org", "*")


# --- ALLOWED_NETWORKS on a dual-stack listener -----------------------------------------------------------------

def test_on_a_dual_stack_listener_v6_zero_admits_ipv4_clients_too(wsgi_proxy, fake_upstream):
    fake_upstream.serve_openai_models("qwen3-8b")
    proxy = wsgi_proxy(HOST="::", API_KEYS=f"alice:{ALICE}", ALLOWED_NETWORKS="::/0")  # url stays 127.0.0.1
    assert call(proxy, "GET", "/v1/models").status_code == 200  # an IPv4 client, as ::ffff:127.0.0.1
    assert "ALLOWED_NETWORKS ::/0 admits every client, IPv4 ones too" in proxy.output()


def test_on_a_dual_stack_listener_ipv4_networks_match_mapped_clients_and_v6_ones_do_not(wsgi_proxy, fake_upstream):
    fake_upstream.serve_openai_models("qwen3-8b")
    v4 = wsgi_proxy(HOST="::", API_KEYS=f"alice:{ALICE}", ALLOWED_NETWORKS="127.0.0.0/8")
    assert call(v4, "GET", "/v1/models").status_code == 200
    v6 = wsgi_proxy(HOST="::", API_KEYS=f"alice:{ALICE}", ALLOWED_NETWORKS="::1/128,fd00::/8")
    assert_openai_error(call(v6, "GET", "/v1/models"), 401)
    assert call(v6, "GET", "/v1/models", ALICE).status_code == 200


def test_a_zero_prefix_network_is_warned_about(caplog):
    from proxy.policy.gate import Policy

    with caplog.at_level(logging.WARNING, logger="proxy.policy.gate"):
        Policy(Settings.from_env({"ALLOWED_NETWORKS": "0.0.0.0/0", "BACKEND_TYPE": "stub"}))
    assert "ALLOWED_NETWORKS 0.0.0.0/0 admits every client without a key" in caplog.text


def test_a_subdomain_pattern_is_served_end_to_end_and_its_lookalike_refused(backend_setup):
    setup = backend_setup("openai", CORS_ORIGINS=ALLOWED)
    ok = call(setup.proxy, "GET", "/api/tags", headers={"Origin": "https://a.b.example.net"})
    assert ok.status_code == 200 and ok.headers["Access-Control-Allow-Origin"] == "https://a.b.example.net"
    evil = call(setup.proxy, "GET", "/api/tags", headers={"Origin": "https://a.example.net.evil.net"})
    assert evil.status_code == 403 and "Access-Control-Allow-Origin" not in evil.headers
