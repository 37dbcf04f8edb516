"""Prometheus metrics count finished exchanges: requests, tokens, durations; labels from closed sets;
/metrics behind METRICS_TOKEN or ADMIN_TOKEN when one is set."""
import uuid

import requests


def test_metrics_count_requests_and_tokens_of_finished_exchanges(make_proxy):
    proxy = make_proxy(BACKEND_TYPE="stub", STUB_DELAY_MS="0")
    r = requests.post(proxy.url + "/api/chat", json={"model": "stub", "stream": False,
                                                     "messages": [{"role": "user", "content": "one two"}]})
    assert r.status_code == 200
    requests.post(proxy.url + "/v1/chat/completions", json={"model": "nope", "messages": [{"role": "user", "content": "x"}]})
    text = requests.get(proxy.url + "/metrics").text
    assert 'llm_proxy_requests_total{endpoint="/api/chat",front="ollama",model="stub",outcome="ok",status="200"} 1.0' in text
    assert 'llm_proxy_requests_total{endpoint="/v1/chat/completions",front="openai",model="other",outcome="client_error",status="404"} 1.0' in text
    assert 'llm_proxy_tokens_total{kind="completion",model="stub"} 4.0' in text
    assert 'llm_proxy_request_duration_seconds_count{endpoint="/api/chat",front="ollama"} 1.0' in text


def _series(text: str) -> list[str]:
    return [line for line in text.splitlines() if line and not line.startswith("#")]


def test_random_paths_and_model_names_do_not_grow_the_metrics(make_proxy):
    proxy = make_proxy(BACKEND_TYPE="stub", STUB_DELAY_MS="0", MODEL_MAP="*=stub")
    chat = {"stream": False, "messages": [{"role": "user", "content": "hi"}]}

    def round_of_junk():
        for path in ("/api/", "/v1/", "/v1/models/", "/api/blobs/sha256:"):
            assert requests.get(proxy.url + path + uuid.uuid4().hex).status_code < 500
        for front in ("/api/chat", "/v1/chat/completions"):
            assert requests.post(proxy.url + front, json={**chat, "model": uuid.uuid4().hex}).status_code == 200

    round_of_junk()
    before = _series(requests.get(proxy.url + "/metrics").text)
    for _ in range(15):
        round_of_junk()
    text = requests.get(proxy.url + "/metrics").text
    assert len(_series(text)) == len(before)
    assert 'endpoint="unmatched"' in text and 'model="other"' in text
    assert 'endpoint="/v1/models/<path:model_id>"' in text
    assert "sha256:" not in text and not any(uuid_part in text for uuid_part in ("/api/0", "/v1/0"))


def test_status_labels_are_standard_codes_or_their_class():
    from proxy.metrics import status_label

    assert [status_label(s) for s in (200, 404, 429, 499, 599, 1234, None)] == ["200", "404", "429", "4xx", "5xx",
                                                                                "other", "0"]


def test_metrics_token_protects_the_scrape_and_wrong_guesses_are_throttled(make_proxy):
    proxy = make_proxy(BACKEND_TYPE="stub", METRICS_TOKEN="scrape-me", ADMIN_TOKEN="admin-secret")
    url = proxy.url + "/metrics"
    r = requests.get(url)
    assert r.status_code == 401 and r.headers["WWW-Authenticate"].startswith("Bearer")
    assert "llm_proxy" not in r.text
    assert requests.get(url, headers={"Authorization": "Bearer scrape-me"}).status_code == 200
    assert requests.get(url, headers={"Authorization": "Bearer admin-secret"}).status_code == 200
    for _ in range(5):
        assert requests.get(url, headers={"Authorization": "Bearer guess"}).status_code == 401
    r = requests.get(url, headers={"Authorization": "Bearer scrape-me"})
    assert r.status_code == 429 and int(r.headers["Retry-After"]) > 0


def test_admin_token_alone_protects_the_scrape_too(make_proxy):
    proxy = make_proxy(BACKEND_TYPE="stub", ADMIN_TOKEN="admin-secret")
    assert requests.get(proxy.url + "/metrics").status_code == 401
    assert requests.get(proxy.url + "/metrics", headers={"Authorization": "Bearer admin-secret"}).status_code == 200


def test_per_backend_series_count_attempts_failures_retries_and_health(tmp_path):
    from proxy import create_app
    from proxy.config import Settings
    from tests.support import free_port

    path = tmp_path / "backends.toml"
    path.write_text(f'[backends.dead]\ntype = "openai"\nurl = "http://127.0.0.1:{free_port()}"\nmodels = ["stub"]\n'
                    'weight = 9\nhealth = { unhealthy_after = 2, interval_s = 60 }\n'
                    '[backends.local]\ntype = "stub"\n[routing]\nstrategy = "weighted"\nretries = 1\n')
    app = create_app(Settings.from_env({"BACKENDS_FILE": str(path), "LOG_ENABLED": "false", "STUB_DELAY_MS": "0",
                                        "LOG_LEVEL": "WARNING"}))
    try:
        client = app.test_client()
        text = client.get("/metrics").text
        assert 'llm_proxy_backend_healthy{backend="dead"} 1.0' in text
        assert 'llm_proxy_backend_queue_length{backend="local"} 0.0' in text
        assert 'llm_proxy_backend_queue_wait_seconds{backend="local"} 0.0' in text
        body = {"model": "stub", "stream": False, "messages": [{"role": "user", "content": "hi"}]}
        for _ in range(3):
            assert client.post("/api/chat", json=body).status_code == 200
        text = client.get("/metrics").text
        # dead is picked first twice (weights 9:1, then it is down after 2 failures); local answers all three
        assert 'llm_proxy_backend_requests_total{backend="dead"} 2.0' in text
        assert 'llm_proxy_backend_failures_total{backend="dead"} 2.0' in text
        assert 'llm_proxy_backend_requests_total{backend="local"} 3.0' in text
        assert 'llm_proxy_backend_retries_total{backend="local"} 2.0' in text
        assert 'llm_proxy_backend_failures_total{backend="local"} 0.0' in text
        assert 'llm_proxy_backend_healthy{backend="dead"} 0.0' in text
        assert 'llm_proxy_backend_in_flight{backend="local"} 0.0' in text
        client.post("/api/chat", json={**body, "model": "a-name-no-backend-has"})
        assert 'backend="a-name' not in client.get("/metrics").text  # labels are the file's names only
    finally:
        app.extensions["llm_proxy"].extras["shutdown"]()


def test_one_backend_has_no_per_backend_series(make_proxy):
    proxy = make_proxy(BACKEND_TYPE="stub", STUB_DELAY_MS="0")
    assert "llm_proxy_backend_" not in requests.get(proxy.url + "/metrics").text
