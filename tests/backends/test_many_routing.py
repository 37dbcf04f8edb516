"""Routing among several backends (proxy.routing), without sockets: which members serve a model (rules,
aliases, models globs, lists), the strategies' picks, passive and active health, backoff, the 503."""
from __future__ import annotations

import tomllib
from collections import Counter

import pytest

from proxy import backendsfile as bf
from proxy import routing
from proxy.catalog import ModelInfo
from proxy.config import Settings
from proxy.errors import ModelNotFound


class FakeCatalog:
    _ttl = 10.0

    def __init__(self, *names: str, fail: bool = False):
        self.names, self.fail, self._models = names, fail, None

    def models(self) -> list[ModelInfo]:
        if self.fail:
            from proxy.errors import BackendUnavailable
            raise BackendUnavailable("cannot connect: connection refused")
        self._models = [ModelInfo(id=n) for n in self.names]
        return self._models


class FakeBackend:
    def __init__(self, kind: str):
        self.type = kind
        self.dialect = "ollama" if kind == "ollama" else "openai"
        self.base_url = f"http://{kind}"

    def describe(self) -> str:
        return f"{self.type} backend"


def pool_of(text: str, lists: dict[str, tuple[str, ...]], **settings: str) -> routing.Pool:
    config = bf.parse(tomllib.loads(text), "b.toml", {})
    members = [routing.Member(spec, FakeBackend(spec.type), FakeCatalog(*lists.get(spec.name, ()),  # type: ignore
                                                                          fail=spec.name in lists.get("_dead", ())))
               for spec in config.backends]
    return routing.Pool(config, members, Settings.from_env(settings))


THREE = """
[backends.a]
type = "openai"
url = "http://a"
[backends.b]
type = "ollama"
url = "http://b"
aliases = { fast = "llama3.2" }
[backends.c]
type = "openai"
url = "http://c"
models = ["gpt-*"]
"""


def names(plan) -> list[tuple[str, str]]:
    return [(m.name, model) for m, model in plan]


def test_a_model_goes_to_the_members_that_list_it_or_whose_models_match():
    pool = pool_of(THREE, {"a": ("qwen3", "llama3.2:latest"), "b": ("llama3.2:latest",), "c": ("anything",)})
    assert sorted(names(pool.plan("qwen3"))) == [("a", "qwen3")]
    assert sorted(names(pool.plan("llama3.2"))) == [("a", "llama3.2"), ("b", "llama3.2")]
    assert names(pool.plan("gpt-4o")) == [("c", "gpt-4o")]  # `models` decides, not its list
    assert names(pool.plan("fast")) == [("b", "llama3.2")]  # b's own alias
    with pytest.raises(ModelNotFound) as caught:
        pool.plan("nothing")
    assert "qwen3" in caught.value.message and "gpt-4o" not in caught.value.message


def test_rules_send_globs_to_named_backends_first_match_wins():
    text = THREE + '[[routing.rules]]\nmodel = "llama*"\nbackends = ["b"]\n[[routing.rules]]\nmodel = "*"\n' \
                   'backends = ["a"]\n'
    pool = pool_of(text, {"a": ("qwen3", "llama3.2"), "b": ("llama3.2",)})
    assert names(pool.plan("llama3.2")) == [("b", "llama3.2")]
    assert names(pool.plan("qwen3")) == [("a", "qwen3")]
    with pytest.raises(ModelNotFound):
        pool.plan("gpt-4o")  # `*` sends it to a, which does not serve it


def test_model_map_applies_before_the_members_aliases():
    pool = pool_of(THREE, {"a": ("qwen3",)}, MODEL_MAP="big=qwen3")
    assert names(pool.plan("big")) == [("a", "qwen3")]


def members(n: int, weights=None) -> list[routing.Member]:
    text = "".join(f'[backends.m{i}]\ntype = "stub"\nweight = {(weights or [1] * n)[i]}\n' for i in range(n))
    return list(pool_of(text, {}).members)


def test_round_robin_takes_turns_and_the_rest_follow_in_order():
    ms = members(3)
    picks = [routing.ordered("round-robin", ms, turn)[0].name for turn in range(6)]
    assert picks == ["m0", "m1", "m2", "m0", "m1", "m2"]
    assert [m.name for m in routing.ordered("round-robin", ms, 1)] == ["m1", "m2", "m0"]


def test_weighted_gives_each_its_share_spread_out():
    ms = members(3, [5, 1, 1])
    picks = [ms[routing.choose("weighted", ms, t)].name for t in range(7)]
    assert Counter(picks) == {"m0": 5, "m1": 1, "m2": 1}
    assert picks == ["m0", "m0", "m1", "m0", "m2", "m0", "m0"]  # nginx's smooth order: the light ones spread


def test_least_busy_picks_the_fewest_in_flight_ties_by_turn():
    ms = members(3)
    ms[0].in_flight, ms[1].in_flight, ms[2].in_flight = 2, 0, 0
    assert routing.choose("least-busy", ms, 0) == 1
    assert routing.choose("least-busy", ms, 2) == 2
    ms[2].in_flight = 5
    assert routing.choose("least-busy", ms, 2) == 1


def test_latency_picks_the_fastest_and_measures_the_unmeasured_first():
    ms = members(3)
    ms[0].answered(50)
    ms[1].answered(10)
    assert routing.choose("latency", ms, 0) == 2  # never measured
    ms[2].answered(30)
    assert routing.choose("latency", ms, 0) == 1
    ms[1].answered(110)  # the average moves a fifth of the way
    assert ms[1].latency_ms == pytest.approx(30)


def test_consecutive_failures_take_a_member_out_and_probes_bring_it_back():
    pool = pool_of(THREE, {"a": ("qwen3",), "b": ("qwen3",)})
    a = pool.by_name["a"]
    a.failed("refused")
    a.answered(5)  # a success resets the count
    a.failed("refused")
    a.failed("refused")
    assert a.healthy
    a.failed("refused")  # the third in a row (unhealthy_after = 3)
    assert not a.healthy and names(pool.plan("qwen3")) == [("b", "qwen3")]
    a.probed(True)
    assert not a.healthy
    a.probed(True)  # healthy_after = 2
    assert a.healthy


def test_no_healthy_member_is_a_503_naming_them_and_their_errors_with_retry_after():
    pool = pool_of(THREE, {"a": ("qwen3",), "b": ("qwen3",)})
    for name in ("a", "b"):
        for _ in range(3):
            pool.by_name[name].failed(f"{name} refused")
    with pytest.raises(routing.NoHealthyBackend) as caught:
        pool.plan("qwen3")
    exc = caught.value
    assert exc.status == 503 and exc.retry_after == 20  # interval 10 s x healthy_after 2
    assert "a: a refused" in exc.message and "b: b refused" in exc.message


def test_the_union_of_lists_has_one_entry_per_name_and_skips_down_or_dead_members():
    pool = pool_of(THREE, {"a": ("qwen3", "llama3.2:latest"), "b": ("llama3.2",), "c": ("gpt-4o", "dall-e"),
                           "_dead": ()})
    listed = [m.id for m in pool.models()]
    assert listed.count("qwen3") == 1 and "gpt-4o" in listed and "dall-e" not in listed
    assert len([n for n in listed if n.startswith("llama3.2")]) == 1
    for _ in range(3):
        pool.by_name["a"].failed("down")
    assert "qwen3" not in [m.id for m in pool.models()]


def test_a_dead_members_list_is_not_asked_again_until_the_ttl():
    pool = pool_of(THREE, {"a": ("qwen3",), "_dead": ("b",)})
    b = pool.by_name["b"]
    assert b.models() == [] and b.failures == 1
    assert b.models() == [] and b.failures == 1  # not fetched again


def test_backoff_doubles_and_jitters():
    pool = pool_of('[backends.a]\ntype = "stub"\n[routing]\nbackoff_ms = 100\n', {})
    assert pool.backoff(1, 0.5) == pytest.approx(0.1)
    assert pool.backoff(3, 0.5) == pytest.approx(0.4)
    assert pool.backoff(1, 0.0) == pytest.approx(0.05) and pool.backoff(1, 1.0) == pytest.approx(0.15)
