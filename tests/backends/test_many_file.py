"""BACKENDS_FILE parsing (proxy.backendsfile): what a good file gives, and that every bad one is refused with a
message naming the backend (or table) and the key."""
from __future__ import annotations

import tomllib

import pytest

from proxy import backendsfile as bf
from proxy.config import ConfigError, Settings

GOOD = """
[backends.gpu]
type = "openai"
url = "http://10.0.0.5:8080/"
api_key = "${GPU_KEY}"
flavor = "llamacpp"
models = ["qwen3-*", "smollm2"]
aliases = { fast = "smollm2" }
weight = 3
max_concurrency = 4
queue = { max_waiting = 8, max_wait_s = 2.5 }
timeouts = { connect_s = 2, first_byte_s = 30, idle_s = 60, total_s = 600 }
health = { interval_s = 5, unhealthy_after = 2 }

[backends.nas]
type = "ollama"
url = "http://nas:11434"

[backends.demo]
type = "stub"

[routing]
strategy = "weighted"
retries = 1
backoff_ms = 50
[[routing.rules]]
model = "gpt-*"
backends = ["gpu"]
[[routing.rules]]
model = "*"
backends = ["nas", "demo"]
"""


def parse(text: str, **environ: str) -> bf.BackendsConfig:
    return bf.parse(tomllib.loads(text), "b.toml", environ)


def test_a_good_file_gives_every_value_and_the_defaults():
    config = parse(GOOD, GPU_KEY="sk-1")
    gpu, nas, demo = config.backends
    assert (gpu.name, gpu.type, gpu.url, gpu.api_key, gpu.flavor) == ("gpu", "openai", "http://10.0.0.5:8080",
                                                                       "sk-1", "llamacpp")
    assert gpu.models == ("qwen3-*", "smollm2") and gpu.aliases == (("fast", "smollm2"),)
    assert (gpu.weight, gpu.max_concurrency, gpu.queue) == (3, 4, bf.QueueBounds(8, 2.5))
    assert nas.max_concurrency == 0 and nas.queue == bf.QueueBounds()
    assert gpu.timeouts == bf.Timeouts(2, 30, 60, 600)
    assert gpu.health == bf.Health("/v1/models", 5, 3, 2, 2)
    assert nas.health.path == "/api/tags" and nas.models == () and nas.weight == 1
    assert demo.url == "" and demo.health.path == ""
    assert config.routing == bf.Routing("weighted", 1, 50, (bf.Rule("gpt-*", ("gpu",)), bf.Rule("*", ("nas", "demo"))))
    assert config.backend("nas") is nas


def test_routing_has_defaults():
    config = parse('[backends.a]\ntype = "stub"\n')
    assert config.routing == bf.Routing()


@pytest.mark.parametrize(("text", "names"), [
    ("", ("table 'backends'", "at least one")),
    ("[backends]\n", ("table 'backends'",)),
    ("[other]\n", ("the file, key 'other'", "unknown key")),
    ('[backends.a]\nurl = "http://x"\n', ("backend 'a', key 'type'", "missing")),
    ('[backends.a]\ntype = "grpc"\nurl = "http://x"\n', ("backend 'a', key 'type'", "openai, ollama, stub")),
    ('[backends.a]\ntype = "openai"\n', ("backend 'a', key 'url'", "missing")),
    ('[backends.a]\ntype = "openai"\nurl = "ftp://x"\n', ("backend 'a', key 'url'", "http://")),
    ('[backends.a]\ntype = "openai"\nurl = "http://x"\nweight = 0\n', ("backend 'a', key 'weight'", ">= 1")),
    ('[backends.a]\ntype = "openai"\nurl = "http://x"\nweight = true\n', ("backend 'a', key 'weight'",)),
    ('[backends.a]\ntype = "openai"\nurl = "http://x"\nmax_concurrency = -1\n', ("key 'max_concurrency'",)),
    ('[backends.a]\ntype = "openai"\nurl = "http://x"\nqueue = { max_waiting = -1 }\n',
     ("backend 'a', queue, key 'max_waiting'", ">= 0")),
    ('[backends.a]\ntype = "openai"\nurl = "http://x"\nqueue = { max_wait_s = 0 }\n',
     ("backend 'a', queue, key 'max_wait_s'", "> 0")),
    ('[backends.a]\ntype = "openai"\nurl = "http://x"\nqueue = { length = 3 }\n',
     ("backend 'a', table 'queue', key 'length'",)),
    ('[backends.a]\ntype = "openai"\nurl = "http://x"\nflavor = "tgi"\n', ("backend 'a', key 'flavor'",)),
    ('[backends.a]\ntype = "openai"\nurl = "http://x"\nmodels = []\n', ("backend 'a', key 'models'",)),
    ('[backends.a]\ntype = "openai"\nurl = "http://x"\naliases = ["x"]\n', ("backend 'a', key 'aliases'",)),
    ('[backends.a]\ntype = "openai"\nurl = "http://x"\nspeed = 1\n', ("backend 'a', key 'speed'", "unknown")),
    ('[backends.a]\ntype = "openai"\nurl = "http://x"\ntimeouts = { idle_s = 0 }\n',
     ("backend 'a', timeouts, key 'idle_s'", "> 0")),
    ('[backends.a]\ntype = "openai"\nurl = "http://x"\ntimeouts = { read_s = 1 }\n',
     ("backend 'a', table 'timeouts', key 'read_s'",)),
    ('[backends.a]\ntype = "openai"\nurl = "http://x"\ntimeouts = 5\n', ("backend 'a', key 'timeouts'", "a table")),
    ('[backends.a]\ntype = "openai"\nurl = "http://x"\nhealth = { path = "v1" }\n',
     ("backend 'a', health, key 'path'",)),
    ('[backends.a]\ntype = "openai"\nurl = "http://x"\nhealth = { healthy_after = 0 }\n',
     ("backend 'a', health, key 'healthy_after'", ">= 1")),
    ('[backends.a]\ntype = "openai"\nurl = "http://x"\napi_key = "${NOPE}"\n',
     ("backend 'a', key 'api_key'", "${NOPE}")),
    ('[backends.a]\ntype = "openai"\nurl = "http://u:p@x"\napi_key = "k"\n', ("backend 'a', key 'api_key'",)),
    ('[backends."a b"]\ntype = "stub"\n', ("backend 'a b'", "letters")),
    ('[backends.a]\ntype = "stub"\n[routing]\nstrategy = "random"\n', ("table 'routing', key 'strategy'",)),
    ('[backends.a]\ntype = "stub"\n[routing]\nretries = -1\n', ("table 'routing', key 'retries'",)),
    ('[backends.a]\ntype = "stub"\n[routing]\nsticky = true\n', ("table 'routing', key 'sticky'",)),
    ('[backends.a]\ntype = "stub"\n[[routing.rules]]\nmodel = "*"\nbackends = ["b"]\n',
     ("routing rule 1, key 'backends'", "'b' is not one")),
    ('[backends.a]\ntype = "stub"\n[[routing.rules]]\nbackends = ["a"]\n', ("routing rule 1, key 'model'",)),
])
def test_a_bad_file_is_refused_naming_the_place_and_the_key(text, names):
    with pytest.raises(ConfigError) as caught:
        parse(text)
    message = str(caught.value)
    assert message.startswith("BACKENDS_FILE='b.toml': ")
    for name in names:
        assert name in message, message


def test_environment_references_expand_in_the_url_and_the_key():
    config = parse('[backends.a]\ntype = "openai"\nurl = "http://${HOST}:8080"\napi_key = "Bearer-${K}-x"\n',
                   HOST="gpu", K="s3")
    assert (config.backends[0].url, config.backends[0].api_key) == ("http://gpu:8080", "Bearer-s3-x")


def test_load_reads_a_file_and_names_an_unreadable_or_broken_one(tmp_path):
    good = tmp_path / "b.toml"
    good.write_text('[backends.a]\ntype = "stub"\n')
    assert bf.load(str(good), {}).backends[0].name == "a"
    with pytest.raises(ConfigError, match="cannot be read"):
        bf.load(str(tmp_path / "missing.toml"), {})
    good.write_text("[backends\n")
    with pytest.raises(ConfigError, match="not valid TOML"):
        bf.load(str(good), {})


def test_the_file_and_backend_variables_together_stop_start_up_naming_what_to_remove(tmp_path):
    path = tmp_path / "b.toml"
    path.write_text('[backends.a]\ntype = "stub"\n')
    with pytest.raises(ConfigError) as caught:
        Settings.from_env({"BACKENDS_FILE": str(path), "BACKEND_URL": "http://x", "BACKEND_TYPE": "ollama"})
    message = str(caught.value)
    assert "remove BACKEND_TYPE, BACKEND_URL" in message and "or remove BACKENDS_FILE" in message
    assert Settings.from_env({"BACKENDS_FILE": str(path)}).backends_file == str(path)
    assert Settings.from_env({"BACKENDS_FILE": "", "BACKEND_URL": "http://x"}).backends_file == ""


def test_an_unreadable_file_stops_start_up(tmp_path):
    with pytest.raises(ConfigError, match="BACKENDS_FILE"):
        Settings.from_env({"BACKENDS_FILE": str(tmp_path / "none.toml")})
