"""Settings: defaults, parsing, one error naming every bad variable, secrets masked."""
import logging

import pytest

from proxy.config import SETTINGS, ConfigError, Settings


def test_defaults_match_the_design_contract():
    s = Settings.from_env({})
    assert (s.host, s.port, s.backend_type, s.backend_url) == ("127.0.0.1", 11434, "openai", "http://127.0.0.1:8080")
    assert s.backend_timeout == 300 and s.inject_mode == "last" and s.log_format == "text"
    assert s.database_url == "sqlite:///data/proxy.db" and s.log_max_requests == 10000


@pytest.mark.parametrize("env, variable", [
    ({"PORT": "http"}, "PORT"),
    ({"BACKEND_TYPE": "llama"}, "BACKEND_TYPE"),
    ({"BACKEND_URL": "localhost:8080"}, "BACKEND_URL"),
    ({"BACKEND_TIMEOUT": "-1"}, "BACKEND_TIMEOUT"),
    ({"INJECT_MODE": "middle"}, "INJECT_MODE"),
    ({"MODEL_MAP": "justaname"}, "MODEL_MAP"),
    ({"LOG_MESSAGES": "maybe"}, "LOG_MESSAGES"),
    ({"DATABASE_URL": "oracle://x"}, "DATABASE_URL"),
])
def test_bad_value_names_the_variable_and_what_is_accepted(env, variable):
    with pytest.raises(ConfigError) as info:
        Settings.from_env(env)
    assert variable in str(info.value) and "expected" in str(info.value)


def test_all_problems_are_reported_at_once():
    with pytest.raises(ConfigError) as info:
        Settings.from_env({"PORT": "x", "INJECT_MODE": "y"})
    assert "PORT" in str(info.value) and "INJECT_MODE" in str(info.value)


def test_secret_values_never_appear_in_errors_or_display():
    s = Settings.from_env({"BACKEND_API_KEY": "sk-very-secret", "ADMIN_TOKEN": "tok-secret"})
    shown = dict(s.public_items())
    assert "sk-very-secret" not in str(shown) and "tok-secret" not in str(shown)
    assert shown["BACKEND_API_KEY"] == "********"


def test_model_map_exact_and_glob_aliases():
    s = Settings.from_env({"MODEL_MAP": "llama3.2=smollm2, gpt-*=qwen3"})
    assert s.backend_model_for("llama3.2") == "smollm2"
    assert s.backend_model_for("gpt-4o") == "qwen3"
    assert s.backend_model_for("other") == "other"
    assert s.client_aliases() == (("llama3.2", "smollm2"),)


def test_every_setting_has_help_and_a_parseable_default():
    for setting in SETTINGS:
        assert setting.help
        setting.parse(setting.default)


def test_a_retired_limits_exact_gets_one_warning_line_not_a_failure(caplog):
    with caplog.at_level(logging.WARNING, logger="proxy.config"):
        Settings.from_env({"LIMITS_EXACT": "true", "REDIS_URL": "redis://127.0.0.1:6379/0"})
    lines = [r.getMessage() for r in caplog.records if r.name == "proxy.config"]
    assert len(lines) == 1 and "LIMITS_EXACT is no longer a setting" in lines[0]
    caplog.clear()
    Settings.from_env({})
    assert not caplog.records
