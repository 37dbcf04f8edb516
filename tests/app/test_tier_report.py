"""The README's plain test command says why tiers were skipped: without `-ra`, the run ends with a
"tiers skipped" section naming each skipped tier, its reason and what turns it on."""
from __future__ import annotations

import os
import subprocess
import sys

from tests.support import REPO_ROOT

TIER_VARIABLES = ("TEST_POSTGRES_URL", "TEST_MYSQL_URL", "E2E_REQUIRED", "SMOLLM2_GGUF", "LLAMA_CACHE_DIR")


def test_plain_pytest_run_names_each_skipped_tier_its_reason_and_its_switch(tmp_path):
    env = {k: v for k, v in os.environ.items() if k not in TIER_VARIABLES and not k.startswith("PYTEST_")}
    env["LLAMA_SERVER_BIN"] = str(tmp_path / "no-llama-server")
    result = subprocess.run([sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-q",
                             "tests/e2e", "tests/store/test_schema.py"],
                            cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=300)
    out = result.stdout  # whether the tests that ran passed is their own files' business
    assert "tiers skipped" in out, out[-3000:]
    section = out[out.index("tiers skipped"):]
    assert "e2e (real llama.cpp):" in section and "llama-server binary not found" in section
    assert "LLAMA_SERVER_BIN" in section
    assert "PostgreSQL:" in section and "TEST_POSTGRES_URL is not set" in section
    assert "MySQL:" in section and "TEST_MYSQL_URL" in section
