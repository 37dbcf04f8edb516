"""Unit tests of the gate's pure parts: API_KEYS / ALLOWED_NETWORKS parsing, key matching, the headers a
key may come in, KEYS_FILE parsing and reloading, model globs, and the settings that carry them."""
from __future__ import annotations

import os
import time

import pytest

from proxy import create_app
from proxy.catalog import model_allowed
from proxy.config import ConfigError, Settings
from proxy.policy.keys import KeyRing, Networks, digest, presented_keys
from proxy.policy.keysfile import KeysFileError, KeysFileWatcher, parse
from proxy.values import parse_api_keys, parse_networks

# --- API_KEYS -----------------------------------------------------------------------------------------

def test_api_keys_are_name_key_pairs_and_bare_keys_get_positional_names():
    assert parse_api_keys("alice:sk-a, bob:sk-b ,sk-bare") == (("alice", "sk-a"), ("bob", "sk-b"), ("key3", "sk-bare"))


def test_api_keys_split_at_the_first_colon_only():
    assert parse_api_keys("ci:abc:def") == (("ci", "abc:def"),)


@pytest.mark.parametrize("raw", ["alice:", "a b:key", "alice:k1,alice:k2", "alice:k,bob:k", ":key"])
def test_api_keys_reject_empty_keys_bad_names_and_duplicates(raw):
    with pytest.raises(ValueError):
        parse_api_keys(raw)


def test_bad_api_keys_stop_start_up_without_showing_the_value():
    with pytest.raises(ConfigError) as info:
        Settings.from_env({"API_KEYS": "alice:sk-secret-1,alice:sk-secret-2"})
    assert "API_KEYS=<hidden>" in str(info.value)
    assert "sk-secret" not in str(info.value)


def test_settings_display_key_names_and_mask_the_redis_password():
    settings = Settings.from_env({"API_KEYS": "alice:sk-secret-1,sk-secret-2",
                                  "REDIS_URL": "redis://:hunter2@redis.local:6379/2"})
    shown = dict(settings.public_items())
    assert shown["API_KEYS"] == "alice, key2 (keys hidden)"
    assert shown["REDIS_URL"] == "redis://:***@redis.local:6379/2"
    assert "sk-secret" not in repr(settings.public_items()) and "hunter2" not in repr(settings.public_items())


def test_limit_settings_defaults():
    settings = Settings.from_env({})
    assert settings.max_request_bytes == 32 * 1024 * 1024
    assert settings.limits_fail_open is True
    assert settings.rate_limit == "" and settings.redis_url == "" and settings.api_keys == ()
    assert settings.rate_limit_strategy == "moving-window"


@pytest.mark.parametrize("env, name", [({"RATE_LIMIT": "lots"}, "RATE_LIMIT"),
                                       ({"ALLOWED_NETWORKS": "10.0.0.0/33"}, "ALLOWED_NETWORKS"),
                                       ({"REDIS_URL": "http://x"}, "REDIS_URL"),
                                       ({"KEYS_FILE": "/does/not/exist.toml"}, "KEYS_FILE"),
                                       ({"MAX_REQUEST_BYTES": "-1"}, "MAX_REQUEST_BYTES"),
                                       ({"LIMITS_FAIL_OPEN": "maybe"}, "LIMITS_FAIL_OPEN")])
def test_bad_limit_settings_name_the_variable(env, name):
    with pytest.raises(ConfigError) as info:
        Settings.from_env(env)
    assert str(info.value).startswith(f"{name}=")


def test_a_keys_file_with_wrong_tables_stops_the_app_from_being_built(tmp_path):
    path = tmp_path / "keys.toml"
    path.write_text("[keys.alice]\nrpm = \"many\"\n")
    settings = Settings.from_env({"KEYS_FILE": str(path), "BACKEND_TYPE": "stub", "LOG_ENABLED": "false"})
    with pytest.raises(ConfigError) as info:
        create_app(settings)
    assert str(info.value).startswith("KEYS_FILE=") and "rpm" in str(info.value)


def test_a_keys_file_that_is_not_toml_is_a_bad_setting(tmp_path):
    path = tmp_path / "keys.toml"
    path.write_text("[keys.alice\n")
    with pytest.raises(ConfigError) as info:
        Settings.from_env({"KEYS_FILE": str(path)})
    assert str(info.value).startswith("KEYS_FILE=") and "not valid TOML" in str(info.value)


def test_rate_limit_accepts_several_windows():
    assert Settings.from_env({"RATE_LIMIT": "10/second;1000/hour"}).rate_limit == "10/second;1000/hour"


# --- matching -----------------------------------------------------------------------------------------

def test_key_ring_names_the_matching_key_and_nothing_else():
    ring = KeyRing([("alice", digest("sk-a")), ("bob", digest("sk-b"))])
    assert ring.identify("sk-a") == "alice"
    assert ring.identify("sk-b") == "bob"
    assert ring.identify("sk-") is None
    assert ring.identify("sk-a ") is None
    assert ring.identify("") is None


def test_key_ring_keeps_digests_not_keys():
    from proxy.policy.gate import Policy

    policy = Policy(Settings.from_env({"API_KEYS": "alice:sk-very-secret"}))
    assert "sk-very-secret" not in repr(vars(policy)) + repr(vars(policy._ring))
    assert policy._ring.entries == (("alice", digest("sk-very-secret")),)


def test_keys_are_matched_by_digest_never_by_the_text_presented(monkeypatch):
    import proxy.policy.keys as keys

    hashed = []
    real = keys.digest
    monkeypatch.setattr(keys, "digest", lambda key: hashed.append(key) or real(key))
    ring = KeyRing([(name, real(key)) for name, key in (("a", "k1"), ("b", "k2"), ("c", "k3"), ("d", "k1"))])
    hashed.clear()
    assert ring.identify("k1") == "a"  # the first name of a key given twice
    assert ring.identify("k2") == "b" and ring.identify("k") is None and ring.identify("k10") is None
    assert hashed == ["k1", "k2", "k", "k10"]  # what was presented is hashed first, then looked up


@pytest.mark.parametrize("headers, expected", [
    ({"HTTP_AUTHORIZATION": "Bearer sk-a"}, ["sk-a"]),
    ({"HTTP_AUTHORIZATION": "bearer   sk-a  "}, ["sk-a"]),
    ({"HTTP_X_API_KEY": "sk-b"}, ["sk-b"]),
    ({"HTTP_X_API_KEY": "sk-b", "HTTP_AUTHORIZATION": "Bearer sk-a"}, ["sk-b", "sk-a"]),
    ({"HTTP_AUTHORIZATION": "Basic YWxhZGRpbjpvcGVu"}, []),
    ({"HTTP_AUTHORIZATION": "Bearer"}, []),
    ({}, []),
])
def test_keys_come_as_bearer_token_or_x_api_key(headers, expected):
    assert presented_keys(headers) == expected


def test_networks_match_v4_v6_and_v4_mapped_addresses():
    nets = Networks(parse_networks("10.0.0.0/8, 192.168.1.7, fd00::/8"))
    assert nets.contains("10.1.2.3")
    assert nets.contains("192.168.1.7") and not nets.contains("192.168.1.8")
    assert nets.contains("fd12::1")
    assert nets.contains("::ffff:10.9.9.9")
    assert not nets.contains("127.0.0.1")
    assert not nets.contains("not-an-address") and not nets.contains("") and not nets.contains(None)


@pytest.mark.parametrize("name, patterns, allowed", [
    ("qwen3-8b", ("qwen3-*",), True),
    ("llama3.2:latest", ("llama3.2",), True),
    ("llama3.2", ("llama3.2:latest",), True),
    ("llama3.2:1b", ("llama3.2",), False),
    ("gpt-4o", ("qwen3-*", "llama*"), False),
    ("Qwen3-8b", ("qwen3-*",), False),
])
def test_model_globs_match_ollama_names_with_or_without_latest(name, patterns, allowed):
    assert model_allowed(name, patterns) is allowed


# --- KEYS_FILE ----------------------------------------------------------------------------------------

FULL = """
[defaults]
rpm = 100
concurrency = 4

[keys.alice]
key = "sk-alice"
models = ["qwen3-*"]
networks = ["10.0.0.0/8", "192.168.0.1"]
rpm = 60
tpm = 5000
daily_tokens = 100000

[keys.bob]
key_sha256 = "{}"
tokens = "100/second;1000/hour"
concurrency = 0

[keys.carol]
""".format(digest("sk-bob").hex())


def test_keys_file_parses_every_field():
    kf = parse(FULL, "keys.toml")
    alice = kf.rules_for("alice")
    assert alice.models == ("qwen3-*",)
    assert alice.networks == ("10.0.0.0/8", "192.168.0.1/32")
    assert (alice.requests, alice.tokens, alice.daily_tokens, alice.concurrency) == ("60/minute", "5000/minute",
                                                                                      100000, 4)
    bob = kf.rules_for("bob")
    assert (bob.requests, bob.tokens, bob.concurrency) == ("100/minute", "100/second;1000/hour", 0)
    assert kf.rules_for("carol").requests == "100/minute"  # only defaults
    assert kf.rules_for(None).concurrency == 4
    assert KeyRing(kf.keys).identify("sk-alice") == "alice"
    assert KeyRing(kf.keys).identify("sk-bob") == "bob"


@pytest.mark.parametrize("text, says", [
    ("[keys.alice]\nrpn = 3\n", "unknown field(s) rpn"),
    ("[keys.alice]\nrpm = -1\n", "[keys.alice].rpm must be an integer >= 0"),
    ("[keys.alice]\nrpm = true\n", "[keys.alice].rpm must be an integer"),
    ("[keys.alice]\nrpm = 3\nrequests = \"3/minute\"\n", "both rpm and requests"),
    ("[keys.alice]\ntokens = \"many\"\n", "[keys.alice].tokens must be windows"),
    ("[keys.alice]\nnetworks = [\"10.0.0.300/8\"]\n", "[keys.alice].networks must hold CIDR"),
    ("[keys.alice]\nmodels = [1]\n", "[keys.alice].models must be a string or a list"),
    ("[keys.alice]\nkey_sha256 = \"abc\"\n", "key_sha256 must be 64 hex digits"),
    ("[keys.\"a b\"]\n", "a key name uses"),
    ("[keys.a]\nkey = \"k\"\n[keys.b]\nkey = \"k\"\n", "same key is given to two names"),
    ("[limits]\n", "unknown table(s) limits"),
    ("[keys.alice\n", "not valid TOML"),
])
def test_keys_file_errors_name_the_table_and_field(text, says):
    with pytest.raises(KeysFileError) as info:
        parse(text, "keys.toml")
    assert says in str(info.value)
    assert str(info.value).startswith("keys.toml")


def test_keys_file_errors_never_show_a_key():
    with pytest.raises(KeysFileError) as info:
        parse('[keys.alice]\nkey = "sk-visible-secret"\nrpm = "x"\n', "k.toml")
    assert "sk-visible-secret" not in str(info.value)


def test_keys_file_watcher_reloads_on_change_and_keeps_the_last_good_version(tmp_path, caplog):
    path = tmp_path / "keys.toml"
    path.write_text('[keys.alice]\nkey = "sk-1"\n')
    watcher = KeysFileWatcher(str(path), interval=0)
    first = watcher.get()
    assert watcher.get() is first  # unchanged file: not re-read
    path.write_text('[keys.alice]\nkey = "sk-2"\nrpm = 5\n')
    os.utime(path, ns=(time.time_ns(), time.time_ns() + 1_000_000))
    second = watcher.get()
    assert second is not first and second.rules_for("alice").requests == "5/minute"
    path.write_text('[keys.alice]\nrpm = "broken"\n')
    os.utime(path, ns=(time.time_ns(), time.time_ns() + 2_000_000))
    assert watcher.get() is second
    assert "KEYS_FILE not reloaded" in caplog.text
    path.unlink()
    assert watcher.get() is second


def test_keys_file_watcher_looks_at_the_file_at_most_once_per_interval(tmp_path):
    path = tmp_path / "keys.toml"
    path.write_text('[keys.alice]\nkey = "sk-1"\n')
    now = [100.0]
    watcher = KeysFileWatcher(str(path), interval=1.0, clock=lambda: now[0])
    first = watcher.get()
    path.write_text('[keys.alice]\nkey = "sk-2"\nrpm = 5\n')
    os.utime(path, ns=(time.time_ns(), time.time_ns() + 1_000_000))
    now[0] += 0.5
    assert watcher.get() is first  # not looked at yet
    now[0] += 0.6
    assert watcher.get().rules_for("alice").requests == "5/minute"


def _rewrite(path, text: str, bump_ms: int) -> None:
    path.write_text(text)
    later = time.time_ns() + bump_ms * 1_000_000
    os.utime(path, ns=(later, later))


@pytest.mark.parametrize("emptied", ["", "\n  \n", "# every key removed for now\n"])
def test_a_keys_file_that_turns_empty_keeps_the_last_good_rules_with_a_warning(tmp_path, caplog, emptied):
    path = tmp_path / "keys.toml"
    path.write_text('[keys.alice]\nkey = "sk-1"\nmodels = ["qwen3-*"]\n')
    watcher = KeysFileWatcher(str(path), interval=0)
    good = watcher.get()
    _rewrite(path, emptied, 1)
    assert watcher.get() is good and watcher.get().keys  # not "no keys at all": that would open the proxy
    assert "is now empty" in caplog.text and "previous version stays in force" in caplog.text
    _rewrite(path, '[keys.alice]\nkey = "sk-2"\n', 2)  # the edit, finished
    assert watcher.get().keys == (("alice", digest("sk-2")),)


def test_a_keys_file_left_with_an_empty_defaults_table_is_taken_as_meant(tmp_path):
    path = tmp_path / "keys.toml"
    path.write_text('[keys.alice]\nkey = "sk-1"\n')
    watcher = KeysFileWatcher(str(path), interval=0)
    _rewrite(path, "[defaults]\n", 1)
    assert watcher.get().keys == () and not watcher.get().empty


def test_a_keys_file_written_to_while_it_is_read_is_read_again_at_the_next_look(tmp_path, monkeypatch):
    from proxy.policy import keysfile

    path = tmp_path / "keys.toml"
    path.write_text('[keys.alice]\nkey = "sk-1"\nmodels = ["qwen3-*"]\n')
    watcher = KeysFileWatcher(str(path), interval=0)
    good = watcher.get()
    real_load = keysfile.load

    def torn_load(name: str):  # the writer is not done: the read sees the first half, then the rest lands
        half = keysfile.parse('[keys.alice]\nkey = "sk-1"\n', name)
        _rewrite(path, '[keys.alice]\nkey = "sk-1"\nmodels = ["llama*"]\n', 2)
        monkeypatch.setattr(keysfile, "load", real_load)
        return half

    _rewrite(path, '[keys.alice]\nkey = "sk-1"\n', 1)
    monkeypatch.setattr(keysfile, "load", torn_load)
    assert watcher.get() is good  # the half-read version (alice unrestricted) is never in force
    assert watcher.get().rules_for("alice").models == ("llama*",)
