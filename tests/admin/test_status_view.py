"""The status view an administrator reads: mailbox addresses, the reason of a change that failed
for good, the licence hold said once, tables that shorten text visibly and never cut numbers."""

from __future__ import annotations

import datetime as dt

from tsl_exchange_plugin import PLUGIN_ID
from tsl_exchange_plugin.cli import commands as cli
from tsl_exchange_plugin.ui.actions import SET_SYNC
from tsl_exchange_plugin.ui.status import Column, format_table, mailbox_rows
from tsl_hostapi.types import Deadline


def test_table_ends_long_text_in_an_ellipsis_and_widens_for_numbers():
    lines = format_table(
        [
            Column("Name", 8),
            Column("Az.", 4, cut=False),
            Column("offen", 3, ">", cut=False),
            Column("Fehler", 0),
        ],
        [["Rechtsanwältin Dr. Weiß", "12345/26", 1234567, "ein langer Fehlertext bleibt ganz"]],
    )
    assert lines[1].startswith("Rechtsa… ")
    assert "12345/26" in lines[1] and "1234567" in lines[1]
    assert lines[1].endswith("ein langer Fehlertext bleibt ganz")
    assert len({line.index("Az.") if "Az." in line else line.index("12345/26") for line in lines}) == 1


def test_failed_change_shows_its_reason_and_the_audit_names_the_mailbox(kanzlei, capsys):
    k = kanzlei
    alice = k.lawyers[0]
    due = dt.date(2026, 6, 15)
    bad = Deadline(
        id="status-bad",
        due_date=due,
        pre_deadline_dates=(due + dt.timedelta(days=3),),
        responsible_ids=(alice.id,),
        kind="Berufungsfrist",
    )
    k.host.save(bad)
    k.host.press(k.admin, SET_SYNC, [k.firm.contacts[0].ref], {"users": [alice.id]})
    k.drain()
    row = next(r for r in mailbox_rows(k.host, k.runtime) if r.user_id == alice.id)
    assert row.failed >= 1
    assert "liegt nach dem Fristende" in row.last_error
    assert row.mailbox == k.mailbox_of[alice.id]

    capsys.readouterr()
    assert cli.main(["status", "--audit", "--data", str(k.host.root)]) == 0
    out = capsys.readouterr().out
    audit = out.split("Protokoll (neueste zuerst):", 1)[1]
    assert k.mailbox_of[alice.id] in audit
    assert f"  {alice.id}  " not in audit  # the user id alone tells an administrator nothing
    assert "liegt nach dem Fristende" in out.split("Protokoll", 1)[0]


def test_licence_hold_is_said_once(kanzlei, capsys, licence_key):
    k = kanzlei
    k.host.install_licence(PLUGIN_ID, licence_key(expires=dt.date.today() - dt.timedelta(days=1)))
    capsys.readouterr()
    cli.main(["status", "--data", str(k.host.root)])
    out = capsys.readouterr().out
    assert out.count("abgelaufen") == 1, out
    assert out.splitlines()[0].count("abgelaufen") == 1
