"""Regenerate `.env.example` and docs/configuration.md's table from proxy.config.SETTINGS.

Run after adding a setting: `python scripts/gen_settings_docs.py`. tests/app/test_docs.py fails when
either file is out of step with the table.
"""
from __future__ import annotations

import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from proxy.config import SETTINGS  # noqa: E402

BEGIN, END = "<!-- settings:begin -->", "<!-- settings:end -->"


def env_example() -> str:
    lines = ["# LLM Proxy configuration. Copy to .env in the folder you start the proxy from, and edit;",
             "# only that folder's .env is read, and real environment variables win over it.",
             "# Every variable, with its default and what it does.", ""]
    for s in SETTINGS:
        lines.append(f"# {s.help}")
        lines.append(f"{s.env}={s.default}")
        lines.append("")
    return "\n".join(lines)


def readme_table() -> str:
    rows = ["| variable | default | meaning |", "| --- | --- | --- |"]
    for s in SETTINGS:
        default = f"`{s.default}`" if s.default else "empty"
        rows.append(f"| `{s.env}` | {default} | {s.help.replace('|', '&#124;')} |")
    return "\n".join(rows)


def main() -> None:
    (ROOT / ".env.example").write_text(env_example())
    readme = ROOT / "docs" / "configuration.md"
    text = readme.read_text()
    block = f"{BEGIN}\n{readme_table()}\n{END}"
    text = re.sub(re.escape(BEGIN) + r".*?" + re.escape(END), lambda _: block, text, flags=re.S)
    readme.write_text(text)


if __name__ == "__main__":
    main()
