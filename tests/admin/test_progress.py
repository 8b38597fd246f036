"""Progress of long runs and tables on the console.

On a terminal: a live bar with counts, percentage and rate, and tables that fit the window
(text columns end in "…", numbers and keys stay whole, the last column wraps). Anywhere else
(CI, a pipe, a log): at most one plain line per tenth of the way, never a control character.
"""

from __future__ import annotations

import io
import re

from rich.console import Console

from tsl_exchange_plugin import PLUGIN_ID
from tsl_exchange_plugin.cli import commands as cli
from tsl_exchange_plugin.ui.progress import ProgressBar
from tsl_exchange_plugin.ui.status import Column, format_table
from tsl_exchange_plugin.ui.tables import print_table
from tsl_hostapi.reference.sample_firm import generate_firm

PLAIN_LINE = re.compile(r"^Übertragen: ([\d.]+)/10\.000 Elemente \((\d+) %\), [\d.,]+ Elemente/s$")


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def _terminal(width: int = 100) -> tuple[Console, io.StringIO]:
    out = io.StringIO()
    return Console(file=out, force_terminal=True, width=width, color_system=None), out


def test_off_a_terminal_progress_is_a_few_plain_german_lines():
    out = io.StringIO()
    clock = FakeClock()
    bar = ProgressBar("Übertragen", 10_000, "Elemente", stream=out, clock=clock)
    for done in range(1, 10_001):
        clock.now = done / 100
        bar.update(done)
    bar.close()
    lines = out.getvalue().splitlines()
    assert 2 <= len(lines) <= 11, lines
    assert "\x1b" not in out.getvalue() and "\r" not in out.getvalue()
    matches = [PLAIN_LINE.match(line) for line in lines]
    assert all(matches), lines
    percents = [int(m.group(2)) for m in matches]
    assert percents == sorted(set(percents)) and percents[-1] == 100
    assert matches[-1].group(1) == "10.000"
    assert "100 Elemente/s" in lines[-1]  # 10,000 in 100 s of the fake clock


def test_quiet_progress_prints_nothing_off_a_terminal():
    out = io.StringIO()
    with ProgressBar("Übertragen", 500, "Elemente", stream=out, plain="quiet") as bar:
        for done in range(1, 501):
            bar.update(done)
    assert out.getvalue() == ""


def test_on_a_terminal_progress_is_a_bar_with_counts_and_rate():
    console, out = _terminal()
    clock = FakeClock()
    bar = ProgressBar("Aufräumen", 3, "Postfächer", items_unit="Elemente", console=console, clock=clock)
    for n in (1, 2, 3):
        bar.update(n, items=400 * n)
    bar.close()
    text = out.getvalue()
    assert "━" in text
    assert "3/3 Postfächer" in text and "100 %" in text
    assert "1.200 Elemente" in text and "Elemente/s" in text


def _long_rows():
    columns = [
        Column("Benutzer", 24),
        Column("Datensatz", 12, cut=False),
        Column("Zeit", 19, cut=False),
        Column("letzter Fehler", 0),
    ]
    error = " ".join(f"Wort{i}" for i in range(60))
    rows = [
        [
            "Dr. Maximiliane Müller-Lüdenscheidt-Oberbergische",
            "appointment:12345",
            "30.11.2026 05:47:29",
            error,
        ],
        ["Jörg Hartmann", "contact:7", "", ""],
    ]
    return columns, rows, error


def test_on_a_terminal_tables_fit_the_window_without_losing_keys_or_words():
    columns, rows, error = _long_rows()
    console, out = _terminal(width=100)
    print_table(columns, rows, notes={1: ["fehlgeschlagen: " + error]}, console=console)
    lines = out.getvalue().splitlines()
    assert max(len(line) for line in lines) <= 100
    text = out.getvalue()
    assert "appointment:12345" in text and "30.11.2026 05:47:29" in text  # never cut
    assert "Dr. Maximiliane" in text and "Oberbergische" not in text and "…" in text  # ellipsised
    words = text.split()
    assert all(f"Wort{i}" in words for i in range(60))  # wrapped onto further lines, not cut
    assert len(lines) > len(rows) + 2


def test_off_a_terminal_tables_keep_the_plain_layout():
    columns, rows, _ = _long_rows()
    out = io.StringIO()
    print_table(columns, rows, notes={0: ["fehlgeschlagen: x"]}, stream=out)
    plain = format_table(columns, rows)
    assert out.getvalue().splitlines() == [plain[0], plain[1], "    fehlgeschlagen: x", plain[2]]


def test_resync_and_reconcile_report_progress_in_plain_lines(kanzlei, capsys):
    k = kanzlei
    alice = k.lawyers[0]
    contacts = k.firm.contacts[:30]
    k.host.press(k.admin, f"{PLUGIN_ID}.set_sync", [c.ref for c in contacts], {"users": [alice.id]})
    k.drain()
    k.runtime.worker.stop()  # the command's own worker does the work
    capsys.readouterr()

    assert cli.main(["resync", alice.email, "--data", str(k.host.root), "--timeout", "60"]) == 0
    out, err = capsys.readouterr()
    queued = int(re.search(r"(\d+) Einträge .* erneut eingereiht", out).group(1))
    lines = [line for line in err.splitlines() if line.startswith("Übertragen:")]
    assert 1 <= len(lines) <= 11, err
    assert lines[-1].startswith(f"Übertragen: {queued}/{queued} Elemente (100 %), ")
    assert lines[-1].endswith("Elemente/s")
    assert "\x1b" not in err

    assert cli.main(["reconcile", alice.email, "--data", str(k.host.root), "--timeout", "60"]) == 0
    _, err = capsys.readouterr()
    assert re.search(
        r"^Abgleich: 1/1 Postfächer \(100 %\), [\d.]+ Elemente, [\d.,]+ Elemente/s$", err, re.M
    ), err


def test_a_long_bulk_action_tells_its_user_how_far_it_is(kanzlei):
    """Host API 1.x has no progress channel: the action reports each tenth as a notice."""
    k = kanzlei
    alice = k.lawyers[0]
    n = 3000
    big = generate_firm(seed=12, contacts=n)
    contacts = tuple(c.__class__(**{**c.__dict__, "id": f"p{c.id}"}) for c in big.contacts)
    big = big.__class__(**{**big.__dict__, "users": (), "contacts": contacts, "cases": ()})
    big = big.__class__(**{**big.__dict__, "appointments": (), "deadlines": (), "reminders": ()})
    k.host.load_firm(big)
    k.runtime.worker.stop()  # only the queueing is looked at here
    before = len(k.host.notifications)
    result = k.host.press(k.admin, f"{PLUGIN_ID}.set_sync", [c.ref for c in contacts], {"users": [alice.id]})
    assert result.ok, result.message
    notices = [x for x in k.host.notifications[before:] if x.message.startswith("Exchange-Sync setzen:")]
    assert 1 <= len(notices) <= 9, [x.message for x in notices]
    assert all(x.user_id == k.admin.id and x.level == "info" for x in notices)
    pattern = re.compile(
        r"^Exchange-Sync setzen: ([\d.]+) von 3\.000 Kontakten vorbereitet \((\d+) %, [\d.,]+ Elemente/s\)"
    )
    found = [pattern.match(x.message) for x in notices]
    assert all(found), [x.message for x in notices]
    percents = [int(m.group(2)) for m in found]
    assert percents == sorted(set(percents)) and 0 < percents[0] and percents[-1] < 100

    # A small selection finishes at once: its result is enough, no notices.
    before = len(k.host.notifications)
    k.host.press(
        k.admin, f"{PLUGIN_ID}.set_sync", [c.ref for c in contacts[:50]], {"users": [k.lawyers[1].id]}
    )
    assert not [x for x in k.host.notifications[before:] if x.message.startswith("Exchange-Sync setzen:")]


class _Backlog:
    """A queue whose backlog shrinks by ``step`` each time it is asked."""

    def __init__(self, total: int, step: int) -> None:
        self.left, self.step = total, step

    def pending_count(self, mailbox: str | None = None) -> int:
        left = self.left
        self.left = max(0, self.left - self.step)
        return left


def test_a_starting_worker_shows_its_initial_sync_until_the_queue_is_empty(capsys):
    import threading

    cli._initial_sync(_Backlog(1000, 50), threading.Event(), every=0)
    lines = capsys.readouterr().err.splitlines()
    assert 2 <= len(lines) <= 11, lines
    assert all(line.startswith("Erstübertragung: ") for line in lines)
    assert lines[-1].startswith("Erstübertragung: 1.000/1.000 Elemente (100 %)")
    assert lines[-1].endswith("Warteschlange leer.")

    cli._initial_sync(_Backlog(0, 1), threading.Event(), every=0)  # nothing waiting: nothing said
    assert capsys.readouterr().err == ""
