"""The command line of `python wsgi.py`, `python -m proxy` and `llm-proxy`: a few settings as flags, which
become entries of the environment mapping the settings are built from (so a flag wins over the environment,
which wins over `.env`), `--env-file`, and the `doctor` subcommand. Serving is ``serving``'s, checking is
``doctor``'s; this module only reads the command line.
"""
from __future__ import annotations

import argparse
import os
import re
import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .config import Settings

# (flag, variable, what to add to the variable's own help)
FLAGS: tuple[tuple[str, str, str], ...] = (
    ("--host", "HOST", ""),
    ("--port", "PORT", ""),
    ("--backend-type", "BACKEND_TYPE", ""),
    ("--backend-url", "BACKEND_URL", ""),
    ("--backend-api-key", "BACKEND_API_KEY", " A flag's value is visible to every user of this machine (`ps`): "
     "prefer BACKEND_API_KEY in the environment or in --env-file."),
)
KEY_VARIABLE = "LLM_PROXY_API_KEY"  # doctor --url: the key sent to the proxy when --api-key is not given
DOCTOR_TIMEOUT_S = 20.0
EPILOG = ("`%(prog)s doctor --help`: check the configuration, the backends and, with --url, the handshakes of "
          "Home Assistant, VS Code Copilot, JetBrains AI Assistant and Open WebUI against a running proxy. Every "
          "other setting is an environment variable (docs/configuration.md).")


def _add_setting_flags(parser: argparse.ArgumentParser) -> None:
    from .config import SETTINGS

    by_name = {s.env: s for s in SETTINGS}
    group = parser.add_argument_group("settings", "each flag wins over its environment variable, which wins "
                                                  "over the .env file")
    for flag, name, extra in FLAGS:
        setting = by_name[name]
        default = f"default {setting.default}" if setting.default else "empty by default"
        text = f"sets {name}: {setting.help} ({default}).{extra}"
        group.add_argument(flag, dest=name, metavar=name, default=argparse.SUPPRESS, help=text.replace("%", "%%"))
    group.add_argument("--env-file", metavar="PATH", default=argparse.SUPPRESS,
                       help="read this file instead of the working directory's .env (it must exist; variables "
                            "already set win over it)")


def build_parser(prog: str | None = None) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=prog, allow_abbrev=False, epilog=EPILOG, description="LLM Proxy: serve "
                                     "the Ollama and OpenAI APIs in front of LLM servers (gevent's WSGIServer).")
    _add_setting_flags(parser)
    commands = parser.add_subparsers(dest="command", metavar="{doctor}")
    doctor = commands.add_parser(
        "doctor", allow_abbrev=False, help="check the configuration, the backends and clients' handshakes",
        description="Read the configuration as the server would (environment, .env, flags, BACKENDS_FILE), reach "
                    "each backend, list its models, run a one-token chat in the dialect it speaks; with --url, "
                    "replay the handshakes of Home Assistant, VS Code Copilot, JetBrains AI Assistant and Open "
                    "WebUI against a running proxy. One line per check: PASS, or what is wrong and how to fix "
                    "it. Exit status 0 only when every check passes.")
    _add_setting_flags(doctor)
    doctor.add_argument("--url", metavar="URL", help="a running proxy, e.g. http://127.0.0.1:11434: replay the "
                        "clients' handshakes against it")
    doctor.add_argument("--api-key", metavar="KEY", help=f"the key sent to --url (else ${KEY_VARIABLE}, else the "
                        "first of API_KEYS); visible in `ps`: prefer the variable")
    doctor.add_argument("--model", metavar="NAME", help="the model the handshakes chat with (default: the first "
                        "chat model --url lists)")
    doctor.add_argument("--timeout", metavar="SECONDS", type=_seconds, default=DOCTOR_TIMEOUT_S,
                        help=f"the most one request may take (default {DOCTOR_TIMEOUT_S:g})")
    return parser


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = 0.0
    if not 0 < value < float("inf"):
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds above 0")
    return value


def flag_values(args: argparse.Namespace) -> dict[str, str]:
    """The variables the flags given set."""
    return {name: value for _, name, _ in FLAGS if (value := getattr(args, name, None)) is not None}


def environment(args: argparse.Namespace) -> dict[str, str]:
    """The mapping the settings are built from: ``.env`` (or --env-file) under the environment under the flags.
    The file is loaded into ``os.environ``, as the server does (BACKENDS_FILE's ``${VAR}`` reads it there)."""
    from .startup import load_env_file

    load_env_file(path=getattr(args, "env_file", None))
    return {**os.environ, **flag_values(args)}


def settings_for(args: argparse.Namespace) -> Settings:
    """The Settings the server would run with; ConfigError naming each variable, and the flag that set it."""
    from .config import ConfigError, Settings

    try:
        return Settings.from_env(environment(args))
    except ConfigError as exc:
        named = [f"{flag} sets {name}" for flag, name, _ in FLAGS
                 if getattr(args, name, None) is not None and re.search(rf"\b{name}\b", str(exc))]
        raise ConfigError(f"{exc} ({', '.join(named)})" if named else str(exc)) from None


def main(argv: Sequence[str] | None = None, prog: str | None = None) -> int:
    """`llm-proxy [flags]` serves (until a signal); `llm-proxy doctor [flags]` checks and returns its status."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if "doctor" not in argv:  # serving: gevent patches the standard library before anything uses it
        from gevent import monkey

        monkey.patch_all()
    args = build_parser(prog).parse_args(argv)
    if args.command == "doctor":
        from .doctor import run

        api_key = args.api_key or os.environ.get(KEY_VARIABLE, "")
        try:
            return run(lambda: settings_for(args), url=args.url, api_key=api_key, model=args.model,
                       timeout=args.timeout)
        except BrokenPipeError:  # `llm-proxy doctor | head`: the reader left
            sys.stdout = open(os.devnull, "w")  # noqa: SIM115 - so that the exit's flush does not fail again
            return 1
    serve(args)
    return 0


def serve(args: argparse.Namespace) -> None:
    from .config import ConfigError
    from .serving import build_app, fail, run
    from .startup import StartupError

    try:
        settings = settings_for(args)
    except (ConfigError, StartupError) as exc:
        fail(f"configuration error: {exc}", 2)
    run(build_app(settings), settings)
