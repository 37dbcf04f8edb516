"""The model catalog: TTL, stale-while-refresh, aliases both ways, `foo` == `foo:latest`."""
import threading

import pytest

from proxy.catalog import Catalog, ModelInfo
from proxy.config import Settings
from proxy.errors import BackendUnavailable, ModelNotFound


class FakeFetch:
    def __init__(self, names):
        self.names = names
        self.calls = 0
        self.fail = False
        self.refreshed = threading.Event()
        self.gate = None  # when set, a fetch waits for it (a slow backend)

    def __call__(self, timeout):
        self.calls += 1
        self.refreshed.set()
        if self.gate is not None:
            assert self.gate.wait(5)
        if self.fail:
            raise BackendUnavailable("cannot connect to openai backend at http://x: refused")
        return [ModelInfo(id=n) for n in self.names]


def make(names, model_map="", ttl=10.0):
    settings = Settings.from_env({"MODEL_MAP": model_map})
    now = [1000.0]
    fetch = FakeFetch(names)
    catalog = Catalog(fetch, settings.client_aliases(), settings.backend_model_for, ttl, clock=lambda: now[0])
    return catalog, fetch, now


def test_list_is_fetched_once_within_the_ttl():
    catalog, fetch, now = make(["a"])
    catalog.models()
    now[0] += 5
    catalog.models()
    assert fetch.calls == 1


def test_stale_list_is_served_at_once_while_a_refresh_runs_in_the_background():
    catalog, fetch, now = make(["a"])
    catalog.models()
    fetch.names, fetch.refreshed, fetch.gate = ["a", "b"], threading.Event(), threading.Event()
    now[0] += 11
    assert [m.id for m in catalog.models()] == ["a"]  # stale, immediately, while the backend is slow
    assert fetch.refreshed.wait(2)
    assert [m.id for m in catalog.models()] == ["a"] and fetch.calls == 2  # one refresh at a time
    fetch.gate.set()
    for _ in range(100):
        if len(catalog.models()) == 2:
            break
        threading.Event().wait(0.01)
    assert [m.id for m in catalog.models()] == ["a", "b"]


def test_backend_down_keeps_serving_the_last_list():
    catalog, fetch, now = make(["a"])
    catalog.models()
    fetch.fail, fetch.refreshed = True, threading.Event()
    now[0] += 11
    assert [m.id for m in catalog.models()] == ["a"]
    assert fetch.refreshed.wait(2)
    assert [m.id for m in catalog.models()] == ["a"]


def test_backend_down_with_no_list_raises_a_backend_error():
    catalog, fetch, _ = make(["a"])
    fetch.fail = True
    with pytest.raises(BackendUnavailable):
        catalog.models()


def test_latest_tag_matches_the_bare_name_both_ways():
    catalog, _, _ = make(["smollm2", "qwen3:8b"])
    assert catalog.upstream_name("smollm2:latest") == "smollm2"
    assert catalog.upstream_name("qwen3:8b") == "qwen3:8b"


def test_exact_alias_is_listed_and_resolved():
    catalog, _, _ = make(["smollm2"], "llama3.2=smollm2")
    assert [m.id for m in catalog.models()] == ["smollm2", "llama3.2"]
    assert catalog.upstream_name("llama3.2:latest") == "smollm2"


def test_glob_alias_routes_any_name():
    catalog, _, _ = make(["smollm2"], "gpt-*=smollm2")
    assert catalog.upstream_name("gpt-4o") == "smollm2"
    assert catalog.find("gpt-4o").id == "gpt-4o"


def test_unknown_model_is_not_found():
    catalog, _, _ = make(["smollm2"])
    with pytest.raises(ModelNotFound):
        catalog.upstream_name("nope")


def test_no_list_at_all_lets_the_backend_judge_the_name():
    catalog, fetch, _ = make(["a"], "x=a")
    fetch.fail = True
    assert catalog.upstream_name("x") == "a"
