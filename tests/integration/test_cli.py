"""The operators' commands on a live firm's data directory."""

from __future__ import annotations

import json
from collections import Counter

from tsl_exchange_plugin import PLUGIN_ID
from tsl_exchange_plugin.cli import commands as cli
from tsl_exchange_plugin.sandbox.testing import SANDBOX_PASSWORDS


def test_status_json_lists_each_exchange_user(kanzlei, capsys):
    k = kanzlei
    assert cli.main(["status", "--json", "--data", str(k.host.root)]) == 0
    rows = {r["user_id"]: r for r in json.loads(capsys.readouterr().out)}
    assert {u.id for u in k.lawyers} <= set(rows)
    assert all(rows[u.id]["pending"] == 0 for u in k.lawyers)


def test_test_connection_is_green_with_good_and_red_with_bad_credentials(kanzlei, capsys):
    k = kanzlei
    alice = k.lawyers[0]
    assert cli.main(["test-connection", alice.email, "--data", str(k.host.root)]) == 0
    assert capsys.readouterr().out.startswith("OK:")
    k.configure(alice, password="Geheim-Falsch-77")
    assert cli.main(["test-connection", alice.email, "--data", str(k.host.root)]) == 1
    out = capsys.readouterr().out
    assert out.startswith("FEHLER:") and "Passwort" in out and "Geheim-Falsch-77" not in out


def test_resync_repushes_without_duplicates(kanzlei, capsys):
    k = kanzlei
    alice = k.lawyers[0]
    contacts = k.firm.contacts[:5]
    k.host.press(k.admin, f"{PLUGIN_ID}.set_sync", [c.ref for c in contacts], {"users": [alice.id]})
    k.drain()
    k.server.engine.phone_delete(k.mailbox_of[alice.id], k.ours(alice, contacts[0].ref.key)[0]["item_id"])
    k.runtime.worker.stop()  # the command's own worker does the work
    assert cli.main(["resync", alice.email, "--data", str(k.host.root), "--timeout", "60"]) == 0
    assert "erneut eingereiht" in capsys.readouterr().out
    keys = Counter((i.get("extended_properties") or {}).get("tslRecordId") for i in k.items(alice))
    assert all(keys[c.ref.key] == 1 for c in contacts[1:])


def test_rotate_key_keeps_passwords_usable(kanzlei, capsys):
    k = kanzlei
    alice = k.lawyers[0]
    before = k.runtime.accounts.load(alice.id).password_token
    assert cli.main(["rotate-key", "--data", str(k.host.root)]) == 0
    assert "neu verschlüsselt" in capsys.readouterr().out
    after = k.runtime.accounts.load(alice.id).password_token
    assert after != before
    assert cli.main(["test-connection", alice.email, "--data", str(k.host.root)]) == 0
    assert SANDBOX_PASSWORDS[k.mailbox_of[alice.id]] not in capsys.readouterr().out
