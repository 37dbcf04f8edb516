"""Prometheus metrics count finished exchanges: requests, tokens, durations."""
import requests


def test_metrics_count_requests_and_tokens_of_finished_exchanges(make_proxy):
    proxy = make_proxy(BACKEND_TYPE="stub", STUB_DELAY_MS="0")
    r = requests.post(proxy.url + "/api/chat", json={"model": "stub", "stream": False,
                                                     "messages": [{"role": "user", "content": "one two"}]})
    assert r.status_code == 200
    requests.post(proxy.url + "/v1/chat/completions", json={"model": "nope", "messages": [{"role": "user", "content": "x"}]})
    text = requests.get(proxy.url + "/metrics").text
    assert 'llm_proxy_requests_total{endpoint="/api/chat",front="ollama",model="stub",outcome="ok",status="200"} 1.0' in text
    assert 'llm_proxy_requests_total{endpoint="/v1/chat/completions",front="openai",model="-",outcome="client_error",status="404"} 1.0' in text
    assert 'llm_proxy_tokens_total{kind="completion",model="stub"} 4.0' in text
    assert 'llm_proxy_request_duration_seconds_count{endpoint="/api/chat",front="ollama"} 1.0' in text
