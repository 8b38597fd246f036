"""Operating the sweep: resuming after a crash, the nightly schedule, the commands, the status view."""

from __future__ import annotations

import datetime as dt
import json

from tsl_exchange_plugin import PLUGIN_ID
from tsl_exchange_plugin.cli import commands as cli
from tsl_exchange_plugin.core.parity import stored
from tsl_exchange_plugin.core.reconcile import PROGRESS_KEY, Sweeper, next_run, parse_time
from tsl_exchange_plugin.ui.status import german_only, mailbox_rows


def _open_deadline(k, user):
    for d in k.host.iter_records("deadline"):
        if user.id in d.responsible_ids and not d.done and d.due_date:
            return d
    raise AssertionError("no open deadline")


def _row(k, user):
    return next(r for r in mailbox_rows(k.host, k.runtime) if r.user_id == user.id)


def test_a_sweep_interrupted_by_the_server_resumes_with_the_folders_it_had_not_finished(kanzlei):
    k = kanzlei
    alice = k.lawyers[0]
    mailbox = k.mailbox_of[alice.id]
    deadline = _open_deadline(k, alice)
    (item,) = k.ours(alice, deadline.ref.key, "calendar")
    k.server.engine.phone_edit(mailbox, item["item_id"], subject="am Telefon")
    # The contacts listing passes (a zero delay uses up the first shot), the calendar's fails.
    k.server.inject("delay", operation="FindItem", seconds=0.0, mailbox=mailbox)
    k.server.inject("http_status", operation="FindItem", status=503, mailbox=mailbox)
    first = k.runtime.reconciler.sweep_mailbox(alice.id)
    assert first.outcome == "failed" and "fortgesetzt" in first.message
    progress = k.host.settings.get(PLUGIN_ID, PROGRESS_KEY.format(alice.id))
    assert progress["done"] == ["contact"] and "finished_at" not in progress
    finds = k.server.engine.request_counts(mailbox).get("FindItem", 0)
    assert _row(k, alice).last_error  # the interruption shows in the status row ...
    second = k.runtime.reconciler.sweep_mailbox(alice.id)
    assert second.outcome == "done"
    assert _row(k, alice).last_error == ""  # ... until the next successful exchange
    assert k.server.engine.request_counts(mailbox)["FindItem"] - finds == 2  # calendar and tasks only
    assert [f.kind for f in second.findings] == ["phone_edit"]
    k.drain()
    assert k.ours(alice, deadline.ref.key, "calendar")[0]["subject"] == item["subject"]
    # A finished run starts afresh next time.
    third = k.runtime.reconciler.sweep_mailbox(alice.id)
    assert third.outcome == "done" and k.server.engine.request_counts(mailbox)["FindItem"] - finds == 5


def test_next_run_is_the_next_quiet_hour():
    at = parse_time("02:30")
    assert next_run(dt.datetime(2026, 3, 1, 1, 0), at) == dt.datetime(2026, 3, 1, 2, 30)
    assert next_run(dt.datetime(2026, 3, 1, 2, 30), at) == dt.datetime(2026, 3, 2, 2, 30)
    assert parse_time("") is None and parse_time("25:00") is None and parse_time("abc") is None


def test_the_schedule_sweeps_every_enabled_mailbox_when_the_time_has_come(kanzlei):
    k = kanzlei
    k.runtime.sweeper.stop()  # this test drives its own sweeper with a clock it sets
    now = [dt.datetime(2026, 3, 1, 1, 0)]
    sweeper = Sweeper(k.runtime, k.runtime.reconciler, clock=lambda: now[0])
    try:
        k.runtime.admin.save_firm_settings({"reconcile_time": "02:30"})
        k.host.settings.set(PLUGIN_ID, "reconcile:next", None)  # planned afresh by this clock
        ready, wait = sweeper._due()
        assert ready is None and 0 < wait <= 300
        assert k.host.settings.get(PLUGIN_ID, "reconcile:next")["next"] == "2026-03-01T02:30:00"
        now[0] = dt.datetime(2026, 3, 1, 2, 31)
        assert sweeper._due() == (None, 0.0)  # the run is due: every enabled mailbox is wanted
        ready, _ = sweeper._due()
        assert ready == {u.id for u in k.lawyers}
        assert k.host.settings.get(PLUGIN_ID, "reconcile:next")["next"] == "2026-03-02T02:30:00"
    finally:
        sweeper.stop()


def test_cli_reconcile_dry_run_then_repair_and_status_parity(kanzlei, capsys):
    k = kanzlei
    alice = k.lawyers[0]
    deadline = _open_deadline(k, alice)
    (item,) = k.ours(alice, deadline.ref.key, "calendar")
    k.server.engine.phone_delete(k.mailbox_of[alice.id], item["item_id"])
    k.runtime.worker.stop()  # the command's own worker does the work
    data = str(k.host.root)
    assert cli.main(["reconcile", alice.email, "--data", data, "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "am Telefon gelöscht" in out and "Probelauf" in out
    assert k.ours(alice, deadline.ref.key, "calendar") == []
    assert cli.main(["reconcile", alice.email, "--data", data, "--timeout", "60"]) == 0
    out = capsys.readouterr().out
    assert "Reparaturen übertragen." in out and "Fristenabgleich" in out
    assert len(k.ours(alice, deadline.ref.key, "calendar")) == 1
    assert cli.main(["reconcile", "--data", data, "--timeout", "60"]) == 0
    capsys.readouterr()
    assert cli.main(["status", "--data", data, "--parity"]) == 0
    out = capsys.readouterr().out
    report = stored(k.runtime)
    assert report.clean and report.checked > 0
    assert f"{report.checked} Fristen und Vorfristen geprüft, alle stimmen" in out
    assert cli.main(["status", "--data", data, "--parity", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["clean"] is True


def test_a_transport_error_shows_in_german_and_leaves_the_row_after_the_next_success(kanzlei):
    k = kanzlei
    alice = k.lawyers[0]
    raw = "Exchange-Server nicht erreichbar: HTTPConnectionPool(host='mail', port=443): Max retries exceeded"
    k.runtime.outbox.record_error(alice.id, raw)
    row = _row(k, alice)
    assert row.state == "unreachable"
    assert row.last_error == german_only(raw) and "HTTPConnectionPool" not in row.last_error
    assert row.last_error.startswith("Exchange-Server nicht erreichbar.") and row.error_details == raw
    k.runtime.outbox.record_success(alice.id)
    row = _row(k, alice)
    assert row.state == "ok" and row.last_error == "" and row.error_details == ""
