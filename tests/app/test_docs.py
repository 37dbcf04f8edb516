"""docs/configuration.md and .env.example stay in step with the settings table; the README keeps its
set-up commands."""

from proxy.config import SETTINGS
from tests.support import REPO_ROOT

ROOT = REPO_ROOT


def test_every_setting_is_in_env_example_with_its_default():
    text = (ROOT / ".env.example").read_text()
    for s in SETTINGS:
        assert f"\n{s.env}={s.default}\n" in text, f"{s.env} missing from .env.example (run scripts/gen_settings_docs.py)"


def test_every_setting_is_in_the_configuration_table():
    text = (ROOT / "docs" / "configuration.md").read_text()
    for s in SETTINGS:
        assert f"| `{s.env}` |" in text, f"{s.env} missing from docs/configuration.md (run scripts/gen_settings_docs.py)"


def test_readme_names_the_two_setup_commands():
    text = (ROOT / "README.md").read_text()
    assert "pip install -r requirements.txt && .venv/bin/python wsgi.py" in text
    assert "pip install -r requirements-dev.txt && .venv/bin/python -m pytest" in text
