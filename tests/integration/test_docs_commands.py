"""Every `tsl-exchange …` command the documentation names exists, with every option it names.

An administrator copies these lines; a renamed subcommand or option must fail here, not at
the firm. Each command is looked up in the real parser and its ``--help`` is printed.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import re
from pathlib import Path

import pytest

from tsl_exchange_plugin.cli import commands as cli

ROOT = Path(__file__).resolve().parents[2]
DOCS = [ROOT / "docs" / "ADMIN.md", ROOT / "docs" / "ARCHITECTURE.md", ROOT / "CHANGELOG.md"]
# Inline code spans and indented/fenced code lines that start a command.
COMMAND = re.compile(r"(?:`|^\s{4,}|^)tsl-exchange((?:[ \t]+[^`\n]*)?)", re.M)


def _subparsers(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    return {}


def _options(parser: argparse.ArgumentParser) -> set[str]:
    return {opt for action in parser._actions for opt in action.option_strings}


def documented_commands() -> list[tuple[str, str]]:
    found = []
    for path in DOCS:
        for match in COMMAND.finditer(path.read_text("utf-8")):
            rest = match.group(1).strip()
            if rest.startswith(("…", "...")) or not rest:
                continue  # "tsl-exchange …" as a name, not a command line
            found.append((path.name, rest))
    return found


COMMANDS = documented_commands()


def test_the_administrators_guide_names_the_commands():
    named = {rest.split()[0] for doc, rest in COMMANDS if doc == "ADMIN.md"}
    assert {"licence", "status", "worker", "cleanup", "rotate-key", "config", "test-connection"} <= named


@pytest.mark.parametrize(("doc", "line"), COMMANDS, ids=[f"{d}:{r}" for d, r in COMMANDS])
def test_documented_command_parses(doc: str, line: str):
    parser = cli.build_parser()
    path: list[str] = []
    tokens = [token.strip("[]") for token in line.split()]
    current = parser
    for token in tokens:
        subs = _subparsers(current)
        if token in subs:
            current = subs[token]
            path.append(token)
            continue
        if token.startswith("-"):
            break
        if not path:
            pytest.fail(f"{doc}: „tsl-exchange {line}“: unbekannter Befehl {token!r}")
        if subs:
            pytest.fail(f"{doc}: „tsl-exchange {line}“: unbekannter Unterbefehl {token!r}")
    known = _options(current) | _options(parser)
    for token in tokens:
        if token.startswith("--"):
            option = token.split("=", 1)[0].rstrip(",.;:)")
            assert option in known, f"{doc}: „tsl-exchange {line}“: Option {option} gibt es nicht"
    out = io.StringIO()
    with contextlib.redirect_stdout(out), pytest.raises(SystemExit) as exit_info:
        parser.parse_args([*path, "--help"])
    assert exit_info.value.code == 0
    assert " ".join(["Aufruf: tsl-exchange", *path]) in out.getvalue()


def _all_options(parser: argparse.ArgumentParser) -> set[str]:
    found = _options(parser)
    for sub in _subparsers(parser).values():
        found |= _all_options(sub)
    return found


def test_every_option_the_guide_names_exists():
    """Options named on their own (`--threads N`) belong to some command too."""
    text = (ROOT / "docs" / "ADMIN.md").read_text("utf-8")
    named = set(re.findall(r"(?<![\w-])(--[a-z][a-z-]*)", text))
    assert {"--key-file", "--threads", "--per-server"} <= named
    assert named - _all_options(cli.build_parser()) == set()
