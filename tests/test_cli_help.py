"""The README's "Command line" synopsis and the parser agree: every option the README shows
exists, and every option a command takes is shown (simulate's scenario knobs aside)."""

from __future__ import annotations

import argparse
import re
from pathlib import Path

import pytest

from hydraguard.cli import build_parser
from hydraguard.simulate.command import _knobs

README = Path(__file__).resolve().parents[1] / "README.md"


def synopsis() -> dict[str, set[str]]:
    text = README.read_text(encoding="utf-8")
    block = text.split("## Command line", 1)[1].split("```", 2)[1]
    options: dict[str, set[str]] = {}
    command = ""
    for line in block.splitlines():
        found = re.match(r"hydraguard (\w+)", line)
        if found:
            command = found.group(1)
        options.setdefault(command, set()).update(re.findall(r"--[a-z][a-z-]*", line))
    options.pop("", None)
    return options


def parser_options(command: str) -> set[str]:
    parser = build_parser()
    commands = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction)).choices
    return {
        flag
        for action in commands[command]._actions
        for flag in action.option_strings
        if flag.startswith("--") and flag != "--help"
    }


@pytest.mark.parametrize("command", ["serve", "check", "replay", "simulate"])
def test_the_readme_synopsis_names_exactly_the_options_of_each_command(command: str) -> None:
    shown = synopsis()[command]
    taken = parser_options(command)
    assert shown - taken == set(), "README shows options the command does not take"
    if command == "simulate":
        knobs = {"--" + f.name.replace("_", "-") for f in _knobs()}
        assert shown & knobs, "README gives no example of the scenario knobs"
        taken -= knobs
    assert taken - shown == set(), "options missing from the README synopsis"
