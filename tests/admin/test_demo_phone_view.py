"""The demo ends with each mailbox as a phone shows it, the same on every run.

The view is read back through the protocols (exchangelib for the EWS lawyers, the Graph client
for the Microsoft 365 lawyer): contacts, the next three weeks' calendar with times, all-day
deadlines and Vorfristen, and the Wiedervorlagen with their due dates.
"""

from __future__ import annotations

import re

import pytest

from tsl_exchange_plugin import licence
from tsl_exchange_plugin.cli.demo import run_demo

PHONE_START = "8. So zeigen die Telefone"
VARYING = re.compile(r"(Daten: \S+|https?://127\.0\.0\.1:\d+)")


@pytest.fixture
def no_dev_keys(monkeypatch):
    for name in (licence.DEV_KEYS_ENV, licence.TRUSTED_KEYS_ENV):
        monkeypatch.delenv(name, raising=False)


def _demo(capsys, root) -> str:
    capsys.readouterr()
    assert run_demo(data=str(root), contacts=60) == 0
    return capsys.readouterr().out


def _phones(out: str) -> dict[str, str]:
    """The phone view, one block per mailbox, by the lawyer's name."""
    view = out[out.index(PHONE_START) : out.index("\nStatus (wie unter")]
    blocks = view.split("\nTelefon von ")[1:]
    return {block.split(" (", 1)[0]: block for block in blocks}


def test_two_demo_runs_print_the_same_phone_view_with_times_deadlines_and_tasks(
    capsys, tmp_path, no_dev_keys
):
    first = _demo(capsys, tmp_path / "eins")
    second = _demo(capsys, tmp_path / "zwei")
    # Everything but the folder and the ports is the same, the phone view above all.
    assert VARYING.sub("", first) == VARYING.sub("", second)
    phones = _phones(first)
    assert len(phones) == 3
    assert _phones(second) == phones

    vias = sorted(re.search(r"gelesen über (.+):", block).group(1) for block in phones.values())
    assert vias == ["EWS (exchangelib)", "EWS (exchangelib)", "Microsoft Graph"]
    for name, block in phones.items():
        contacts = int(re.search(r"Kontakte: (\d+)", block).group(1))
        assert contacts > 0, name
        rows = re.findall(
            r"^    (Mo|Di|Mi|Do|Fr|Sa|So) (\d\d\.\d\d\.\d{4})  +(\S+(?: bis \S+)?)  +(\S+)  +(.+)$",
            block,
            re.M,
        )
        calendar = [r for r in rows if r[3] in ("Termin", "Frist", "Vorfrist")]
        tasks = re.findall(
            r"^    (?:Mo|Di|Mi|Do|Fr|Sa|So) \d\d\.\d\d\.\d{4}  +(?:offen|erledigt)  +WV", block, re.M
        )
        assert any(re.fullmatch(r"\d\d:\d\d–\d\d:\d\d", r[2]) for r in calendar), (name, block)  # times
        assert any(r[2] == "ganztägig" and r[3] == "Frist" for r in calendar), name  # all-day deadline
        assert any(r[3] == "Vorfrist" for r in calendar), name
        assert tasks, name  # Wiedervorlagen with due dates
        # The calendar is the next three weeks from the demo's "today", sorted by local date.
        days = [tuple(reversed(r[1].split("."))) for r in calendar]
        assert days == sorted(days)
        assert all(("2026", "03", "02") <= d <= ("2026", "03", "22") for d in days), name
