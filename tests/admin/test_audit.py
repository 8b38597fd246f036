"""The audit log: what went to which mailbox, when, with what outcome; retention; status views and CLI."""

from __future__ import annotations

import json
import time

from tsl_exchange_plugin import PLUGIN_ID
from tsl_exchange_plugin.audit import AuditLog
from tsl_exchange_plugin.cli import commands as cli
from tsl_hostapi.types import SettingsContext

INTERFACES_TAB = f"{PLUGIN_ID}.interfaces"
SET_SYNC = f"{PLUGIN_ID}.set_sync"
IFACE = SettingsContext("interfaces")


def test_audit_records_pushes_and_failures_of_its_own_runtime_only(kanzlei, tmp_path, wait_for):
    k = kanzlei
    alice, bob, _ = k.lawyers
    # A log of another runtime in the same process (its own worker objects) must not see these pushes.
    (tmp_path / "other").mkdir()
    stranger = AuditLog(tmp_path / "other", senders=lambda: (object(),))
    stranger.listen()
    contact = k.firm.contacts[2]
    k.host.press(k.admin, SET_SYNC, [contact.ref], {"users": [alice.id]})
    k.drain()
    k.server.inject("http_status", status=503, mailbox=k.mailbox_of[bob.id], count=None)
    k.host.press(k.admin, SET_SYNC, [contact.ref], {"users": [bob.id]})
    wait_for(
        lambda: any(e.outcome == "retry" for e in k.runtime.admin.audit.entries(mailbox=bob.id)),
        what="retry logged",
    )
    k.server.faults.clear()

    ok = [e for e in k.runtime.admin.audit.entries(mailbox=alice.id) if e.record_key == contact.ref.key]
    assert [(e.op, e.outcome) for e in ok] == [("upsert", "ok")]
    assert abs(ok[0].at - time.time()) < 60
    (retry,) = [e for e in k.runtime.admin.audit.entries(mailbox=bob.id) if e.record_key == contact.ref.key][
        :1
    ]
    assert retry.outcome == "retry" and "vorübergehend nicht verfügbar" in retry.detail
    assert stranger.entries() == []

    # Readable on the Interfaces tab (newest first) ...
    audit = k.host.open_tab(k.admin, "interfaces", INTERFACES_TAB, IFACE).values.values["audit"]
    assert audit[0]["mailbox"] == bob.id and audit[0]["outcome_label"] == "fehlgeschlagen, wird wiederholt"
    assert any(a["record_key"] == contact.ref.key and a["mailbox"] == alice.id for a in audit)


def test_status_audit_cli_prints_the_log(kanzlei, capsys):
    k = kanzlei
    alice = k.lawyers[0]
    contact = k.firm.contacts[6]
    k.host.press(k.admin, SET_SYNC, [contact.ref], {"users": [alice.id]})
    k.drain()
    capsys.readouterr()
    assert cli.main(["status", "--audit", "--data", str(k.host.root)]) == 0
    out = capsys.readouterr().out
    assert "Protokoll (neueste zuerst):" in out and contact.ref.key in out and "übertragen" in out
    assert cli.main(["status", "--audit", "--json", "--data", str(k.host.root)]) == 0
    data = json.loads(capsys.readouterr().out)
    assert {"summary", "mailboxes", "audit"} <= set(data)
    assert any(e["record_key"] == contact.ref.key and e["outcome"] == "ok" for e in data["audit"])
    # Plain `status` keeps its old JSON shape for scripts.
    assert cli.main(["status", "--json", "--data", str(k.host.root)]) == 0
    assert isinstance(json.loads(capsys.readouterr().out), list)


def test_audit_retention_setting_purges_old_entries(kanzlei):
    k = kanzlei
    assert k.host.save_tab(k.admin, "interfaces", INTERFACES_TAB, IFACE, {"audit_retention_days": 30}).ok
    log = k.runtime.admin.audit
    log.record("u1", "contact:1", "upsert", "ok")
    count = len(log.entries(limit=10_000))
    assert log.purge(now=time.time() + 29 * 86400) == 0
    assert log.purge(now=time.time() + 31 * 86400) == count
    assert log.entries() == []
