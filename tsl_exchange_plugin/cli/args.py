"""German command-line parsing for ``tsl-exchange``: a parser whose own words are German, and
argument types that check ranges and say in German what is allowed.

argparse's English comes from three places: the usage prefix, the section titles and the
messages of ``error()``. Overriding those keeps the output German without gettext catalogues.
"""

from __future__ import annotations

import argparse
import re
import sys
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, NoReturn

VERBOSE_HELP = "ausführliche Protokollausgabe (überall in der Befehlszeile erlaubt)"

# argparse's messages (Python 3.11-3.13), translated; the captured parts stay as they are.
_MESSAGES: tuple[tuple[re.Pattern[str], str], ...] = tuple(
    (re.compile(pattern), german)
    for pattern, german in (
        (r"^the following arguments are required: (.*)$", r"diese Angaben fehlen: \1"),
        (r"^unrecognized arguments: (.*)$", r"unbekannte Angaben: \1"),
        (
            r"^argument (\S+): invalid choice: (\S+) \(choose from (.*)\)$",
            r"\1: ungültige Auswahl \2 (möglich: \3)",
        ),
        (r"^argument (\S+): invalid (\S+) value: (.*)$", r"\1: ungültiger Wert \3"),
        (r"^argument (\S+): expected one argument$", r"\1: hier fehlt ein Wert"),
        (r"^argument (\S+): expected at least one argument$", r"\1: hier fehlt mindestens ein Wert"),
        (r"^argument (\S+): expected (.*) arguments?$", r"\1: erwartet \2 Werte"),
        (r"^argument (\S+): ignored explicit argument (.*)$", r"\1: nimmt keinen Wert an (\2)"),
        (r"^argument (\S+): not allowed with argument (\S+)$", r"\1 und \2 schließen sich aus"),
        (r"^argument (\S+): (.*)$", r"\1: \2"),
        (r"^one of the arguments (.*) is required$", r"eine dieser Angaben ist nötig: \1"),
        (r"^ambiguous option: (\S+) could match (.*)$", r"mehrdeutige Option \1: passt zu \2"),
        (r"^unexpected option: (.*)$", r"unerwartete Option: \1"),
    )
)


def german_message(message: str) -> str:
    for pattern, german in _MESSAGES:
        if pattern.match(message):
            return pattern.sub(german, message)
    return message


class _GermanFormatter(argparse.HelpFormatter):
    def add_usage(
        self,
        usage: str | None,
        actions: Iterable[argparse.Action],
        groups: Iterable[argparse._MutuallyExclusiveGroup],
        prefix: str | None = None,
    ) -> None:
        super().add_usage(usage, actions, groups, "Aufruf: " if prefix is None else prefix)


class GermanArgumentParser(argparse.ArgumentParser):
    """An ArgumentParser that speaks German in its usage line, its headings and its errors."""

    def __init__(self, *, add_help: bool = True, **kwargs: Any) -> None:
        kwargs.setdefault("formatter_class", _GermanFormatter)
        super().__init__(add_help=False, **kwargs)
        self._positionals.title = "Argumente"
        self._optionals.title = "Optionen"
        if add_help:
            self.add_argument("-h", "--help", action="help", help="diese Hilfe zeigen und beenden")

    def error(self, message: str) -> NoReturn:
        self.print_usage(sys.stderr)
        self.exit(2, f"{self.prog}: Fehler: {german_message(message)}\n")


def int_range(lo: int, hi: int | None = None) -> Callable[[str], int]:
    """An argument type for a whole number from ``lo`` to ``hi`` (no upper bound when None)."""

    def parse(text: str) -> int:
        try:
            value = int(text.strip())
        except ValueError:
            raise argparse.ArgumentTypeError(f"„{text}“ ist keine ganze Zahl") from None
        if value < lo or (hi is not None and value > hi):
            raise argparse.ArgumentTypeError(f"{value} ist nicht erlaubt ({_allowed(lo, hi)})")
        return value

    parse.__name__ = "Zahl"
    return parse


def float_range(lo: float, hi: float | None = None) -> Callable[[str], float]:
    """An argument type for a number (decimal point or comma) from ``lo`` to ``hi``."""

    def parse(text: str) -> float:
        try:
            value = float(text.strip().replace(",", "."))
        except ValueError:
            raise argparse.ArgumentTypeError(f"„{text}“ ist keine Zahl") from None
        if value != value or value in (float("inf"), float("-inf")):
            raise argparse.ArgumentTypeError(f"„{text}“ ist keine Zahl")
        if value < lo or (hi is not None and value > hi):
            raise argparse.ArgumentTypeError(f"{text} ist nicht erlaubt ({_allowed(lo, hi)})")
        return value

    parse.__name__ = "Zahl"
    return parse


def _allowed(lo: float, hi: float | None) -> str:
    if hi is None:
        return f"mindestens {lo:g}"
    return f"erlaubt: {lo:g} bis {hi:g}"


port = int_range(0, 65535)


def existing_file(text: str) -> Path:
    path = Path(text)
    if not path.is_file():
        raise argparse.ArgumentTypeError(f"Datei nicht gefunden: {text}")
    return path


def add_verbose_everywhere(parser: argparse.ArgumentParser) -> None:
    """``-v`` before or after the subcommand: each subparser knows it too, without overwriting
    the value the main parser already set."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub in dict.fromkeys(action.choices.values()):
                if not any("-v" in a.option_strings for a in sub._actions):
                    sub.add_argument(
                        "-v", "--verbose", action="store_true", default=argparse.SUPPRESS, help=VERBOSE_HELP
                    )
                add_verbose_everywhere(sub)


def options_without_help(parser: argparse.ArgumentParser, prefix: str = "") -> list[str]:
    """Every option or argument (in every subcommand) that has no help text: for a test."""
    missing = []
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                missing += options_without_help(sub, f"{prefix}{name} ")
            continue
        if not action.help or action.help == argparse.SUPPRESS:
            missing.append(prefix + "/".join(action.option_strings or [action.dest]))
    return missing
