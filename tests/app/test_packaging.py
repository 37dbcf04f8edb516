"""pyproject.toml makes an installable project: `llm-proxy`, at proxy/version.py's version, with
requirements.txt's pins and the log view's templates and static files. Built here as the wheel is made (setuptools'
egg_info and build_py in a copy of the project; this venv's setuptools has no bdist_wheel without `wheel`)."""
from __future__ import annotations

import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from tests.support import REPO_ROOT

PROJECT_FILES = ("pyproject.toml", "README.md", "requirements.txt")


def pins(path: Path) -> list[str]:
    lines = (line.split("#", 1)[0].strip() for line in path.read_text().splitlines())
    return [line for line in lines if line and not line.startswith("-")]


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> tuple[Path, Path]:
    """(egg-info folder, build tree) of the project, built from a copy of it."""
    pytest.importorskip("setuptools")
    work = tmp_path_factory.mktemp("project")
    for name in PROJECT_FILES:
        shutil.copy(REPO_ROOT / name, work / name)
    shutil.copytree(REPO_ROOT / "proxy", work / "proxy", ignore=shutil.ignore_patterns("__pycache__"))
    result = subprocess.run([sys.executable, "-W", "ignore", "-c", "from setuptools import setup; setup()", "-q",
                             "egg_info", "--egg-base", str(work), "build_py", "--build-lib", str(work / "lib")],
                            cwd=work, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    [info] = work.glob("*.egg-info")
    return info, work / "lib"


def test_project_is_named_llm_proxy_at_the_version_of_proxy_version(built):
    from proxy.version import __version__

    info, _ = built
    meta = (info / "PKG-INFO").read_text()
    assert "\nName: llm-proxy\n" in meta and f"\nVersion: {__version__}\n" in meta
    assert "\nRequires-Python: >=3.11\n" in meta


def test_dependencies_are_the_pins_of_requirements_txt(built):
    info, _ = built
    required = [line for line in (info / "requires.txt").read_text().splitlines() if line.strip()]
    assert required == pins(REPO_ROOT / "requirements.txt")
    assert all(re.fullmatch(r"[A-Za-z0-9._-]+==[0-9][0-9A-Za-z.]*", r) for r in required), required


def test_console_script_llm_proxy_is_the_command_line_main(built):
    info, _ = built
    assert "[console_scripts]\nllm-proxy = proxy.cli:main" in (info / "entry_points.txt").read_text()
    from proxy.cli import main

    assert callable(main)


def test_templates_static_and_every_module_are_in_the_build(built):
    _, lib = built
    source = REPO_ROOT / "proxy"
    wanted = {p.relative_to(source.parent) for p in source.rglob("*") if p.is_file() and "__pycache__" not in p.parts}
    shipped = {p.relative_to(lib) for p in lib.rglob("*") if p.is_file()}
    assert wanted - shipped == set()
    assert {Path("proxy/templates/ui/base.html"), Path("proxy/static/ui.css"),
            Path("proxy/dialects/openai.py"), Path("proxy/doctor/clients.py")} <= shipped
    assert not any(p.parts[0] in ("tests", "bench", "scripts") for p in shipped)


def test_build_system_and_package_data_are_declared():
    project = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())
    assert project["build-system"]["build-backend"] == "setuptools.build_meta"
    assert project["project"]["scripts"] == {"llm-proxy": "proxy.cli:main"}
    assert set(project["project"]["dynamic"]) == {"version", "dependencies"}
