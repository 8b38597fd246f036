"""The sandbox plays a server that answers NoError but drops a field (``--ignore-field``)."""

from __future__ import annotations

import argparse
import datetime as dt
import io
import threading
import time
from zoneinfo import ZoneInfo

from exchangelib import EWSDateTime, Task

from tsl_exchange_plugin.cli import sandbox as cli
from tsl_exchange_plugin.sandbox.testing import exchangelib_account


def test_ignored_fields_are_answered_noerror_and_never_stored(sandbox):
    sandbox.engine.ignore_field("ReminderDueBy")
    sandbox.engine.ignore_field("ReminderIsSet", on=("update",))
    acc = exchangelib_account(sandbox, "alice@kanzlei.test")
    when = EWSDateTime.from_datetime(dt.datetime(2026, 3, 2, 8, 0, tzinfo=ZoneInfo("Europe/Berlin")))
    task = Task(account=acc, folder=acc.tasks, subject="WV", reminder_is_set=True, reminder_due_by=when)
    task.save()  # NoError
    (stored,) = sandbox.engine.list_items("alice@kanzlei.test", "tasks")
    assert stored["reminder_is_set"] is True and stored.get("reminder_due_by") is None
    task.reminder_is_set = False
    task.save(update_fields=["reminder_is_set"])  # NoError again
    (stored,) = sandbox.engine.list_items("alice@kanzlei.test", "tasks")
    assert stored["reminder_is_set"] is True
    sandbox.engine.clear_ignored_fields()
    task.save(update_fields=["reminder_is_set"])
    assert sandbox.engine.list_items("alice@kanzlei.test", "tasks")[0]["reminder_is_set"] is False


def test_cli_option_arms_the_mode(tmp_path):
    parser = argparse.ArgumentParser()
    cli.add_arguments(parser)
    args = parser.parse_args(
        ["--port", "0", "--data", str(tmp_path), "--mailbox", "a@kanzlei.test:pw-1", "--no-validate"]
        + ["--ignore-field", "ReminderDueBy", "--ignore-field", "ReminderIsSet:update"]
    )
    out, stop, codes = io.StringIO(), threading.Event(), []
    thread = threading.Thread(target=lambda: codes.append(cli.run(args, out=out, stop=stop)))
    thread.start()
    try:
        deadline = time.monotonic() + 20
        while "Beenden" not in out.getvalue() and time.monotonic() < deadline and thread.is_alive():
            time.sleep(0.02)
        text = out.getvalue()
        assert "Übernimmt nicht (antwortet trotzdem NoError): ReminderDueBy" in text
        assert "ReminderIsSet:update" in text
    finally:
        stop.set()
        thread.join(10)
    assert codes == [0]
