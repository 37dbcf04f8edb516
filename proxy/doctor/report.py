"""The doctor's checks and their report: a check is a name and a small function that returns what it saw or
raises ``Failed`` (what is wrong, how to fix it); each prints one line, PASS or FAIL (coloured on a terminal
only); a check whose prerequisite failed is skipped with a line saying which."""
from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterable, Sized
from dataclasses import dataclass
from typing import TextIO

COLOURS = {"PASS": "\033[32m", "FAIL": "\033[31m", "SKIP": "\033[33m"}
RESET = "\033[0m"


class Failed(Exception):
    """A check failed: ``what`` is wrong, ``fix`` says what to do about it."""

    def __init__(self, what: str, fix: str):
        super().__init__(what)
        self.what, self.fix = what, fix


@dataclass(frozen=True)
class Check:
    name: str
    run: Callable[[], str]  # what was seen, for the PASS line; raises Failed
    after: str | None = None  # the name of a check that must pass first


def raiser(failure: Failed) -> Callable[[], str]:
    """A check that fails as ``failure`` says (a problem found while the checks were being built)."""
    def run() -> str:
        raise failure
    return run


def colour_wanted(stream: TextIO) -> bool:
    """Colour only on a terminal, and never when NO_COLOR is set (no-color.org)."""
    return stream.isatty() and not os.environ.get("NO_COLOR")


def _line(verdict: str, name: str, text: str, colour: bool) -> str:
    mark = f"{COLOURS[verdict]}{verdict}{RESET}" if colour else verdict
    return f"{mark}  {name}: {text}" if text else f"{mark}  {name}"


def count(items: int | Sized, noun: str) -> str:
    """"1 model", "3 models": ``items`` is a number or something with a length."""
    n = items if isinstance(items, int) else len(items)
    return f"{n} {noun}{'' if n == 1 else 's'}"


def one_line(text: str, limit: int = 400) -> str:
    """What a server or an exception said, on one line and bounded."""
    flat = " ".join(str(text).split())
    return flat if len(flat) <= limit else flat[:limit - 1] + "…"


def run_checks(checks: Iterable[Check], out: TextIO) -> tuple[int, int]:
    """Run each check in turn, print its line; (passed, not passed). Never raises for a check's failure."""
    colour = colour_wanted(out)
    passed: set[str] = set()
    good = bad = 0
    for check in checks:
        if check.after is not None and check.after not in passed:
            print(_line("SKIP", check.name, f"not tried: '{check.after}' did not pass", colour), file=out, flush=True)
            bad += 1
            continue
        began = time.monotonic()
        try:
            seen = check.run()
        except Failed as failure:
            print(_line("FAIL", check.name, f"{one_line(failure.what)}. Fix: {one_line(failure.fix)}", colour),
                  file=out, flush=True)
            bad += 1
            continue
        except Exception as exc:  # noqa: BLE001 - a check that breaks is reported as failed, never a traceback
            print(_line("FAIL", check.name, f"the check itself failed: {one_line(repr(exc))}. Fix: report this "
                        "with the line above", colour), file=out, flush=True)
            bad += 1
            continue
        passed.add(check.name)
        good += 1
        took = (time.monotonic() - began) * 1000
        print(_line("PASS", check.name, f"{one_line(seen)} ({took:.0f} ms)" if seen else "", colour), file=out,
              flush=True)
    return good, bad
