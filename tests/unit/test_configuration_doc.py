"""docs/configuration.md's flag table is `scheduledbot-operator --help`, rendered.

The table is rendered from `config.parser()` itself; when a flag, its variable, its
default or its help changes, this test fails and prints the table to paste.
"""

from __future__ import annotations

import argparse
import os
import re
from pathlib import Path

import pytest

from scheduledbot.runtime import config

DOC = Path(__file__).resolve().parents[2] / "docs" / "configuration.md"
BEGIN, END = "<!-- flags:begin -->", "<!-- flags:end -->"
_VARIABLE = re.compile(r"\s*\[(SCHEDULEDBOT_[A-Z_]+(?:=\w+)?)(?:, (.+))?\]$")


def _cell(action: argparse.Action) -> tuple[str, str, str, str]:
    help_text = action.help or ""
    found = _VARIABLE.search(help_text)
    assert found, f"{action.option_strings[0]}: its help must end with its environment variable in brackets"
    variable = f"`{found[1]}`" + (f" ({found[2]})" if found[2] else "")
    unset = action.default is None or action.default is False or action.default == ""
    default = "(unset)" if unset else f"`{action.default}`"
    return f"`{action.option_strings[0]}`", variable, default, help_text[: found.start()]


def render_table() -> str:
    rows = [_cell(a) for a in config.parser()._actions if not isinstance(a, argparse._HelpAction)]
    lines = ["| Flag | Environment variable | Default | Meaning |", "| --- | --- | --- | --- |"]
    lines += [f"| {' | '.join(row)} |" for row in rows]
    return "\n".join(lines)


def test_the_flag_table_is_the_parsers(monkeypatch: pytest.MonkeyPatch) -> None:
    # The parser's defaults read the environment; the table shows the built-in ones.
    for name in [n for n in os.environ if n.startswith("SCHEDULEDBOT_")]:
        monkeypatch.delenv(name)
    text = DOC.read_text()
    documented = text[text.index(BEGIN) + len(BEGIN) : text.index(END)].strip()
    expected = render_table()
    assert documented == expected, f"docs/configuration.md is out of date; the table is:\n\n{expected}\n"
