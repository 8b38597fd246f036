"""No password in clear text: not in the data directory, not in logs, not in output, never back in a form."""

from __future__ import annotations

import base64
import logging
from pathlib import Path

from tsl_exchange_plugin import PLUGIN_ID
from tsl_exchange_plugin.cli import commands as cli
from tsl_hostapi.types import SettingsContext

USER_TAB = f"{PLUGIN_ID}.user"
INTERFACES_TAB = f"{PLUGIN_ID}.interfaces"
TEST = f"{PLUGIN_ID}.test_connection"
SET_SYNC = f"{PLUGIN_ID}.set_sync"

GOOD = "Sehr-Geheim-Passwort-4711"
WRONG = "Falsch-Geheim-Passwort-0815"


def _forms(k, user) -> str:
    tab = k.host.open_tab(k.admin, "user", USER_TAB, SettingsContext("user", user.id))
    own = k.host.open_tab(user, "user", USER_TAB, SettingsContext("user", user.id))
    iface = k.host.open_tab(k.admin, "interfaces", INTERFACES_TAB, SettingsContext("interfaces"))
    return repr((tab, own, iface))


def test_no_password_in_data_dir_logs_output_forms_or_errors(kanzlei, caplog, capsys):
    k = kanzlei
    alice = k.lawyers[0]
    caplog.set_level(logging.DEBUG, logger="tsl_exchange_plugin")
    caplog.set_level(logging.DEBUG, logger="tsl_hostapi")
    seen: list[str] = []
    k.server.set_password(k.mailbox_of[alice.id], GOOD)
    k.configure(alice, password=GOOD)
    seen.append(_forms(k, alice))
    seen.append(repr(k.host.press(alice, TEST, (), {"user_id": alice.id})))
    k.host.press(k.admin, SET_SYNC, [k.firm.contacts[0].ref], {"users": [alice.id]})
    k.drain()
    # Errors: a wrong password typed and tested, saved, pushed (parks), a broken host, a validation error.
    seen.append(repr(k.host.press(alice, TEST, (), {"user_id": alice.id, "password": WRONG})))
    seen.append(
        repr(
            k.host.save_tab(
                alice, "user", USER_TAB, SettingsContext("user", alice.id), {"password": WRONG, "host": ""}
            )
        )
    )
    k.configure(alice, password=WRONG)
    k.host.press(k.admin, SET_SYNC, [k.firm.contacts[1].ref], {"users": [alice.id]})
    k.runtime.worker.wake()
    seen.append(
        repr(k.host.press(k.admin, TEST, (), {"user_id": alice.id, "host": "mail.nonexistent.invalid"}))
    )
    seen.append(repr(k.host.press(k.admin, TEST, (), {"user_id": alice.id})))
    seen.append(_forms(k, alice))
    seen.append(repr(k.runtime.outbox.mailbox_states()))
    seen.append(repr([e.as_dict() for e in k.runtime.admin.audit.entries(limit=1000)]))
    seen.append(repr(k.host.notifications) + repr(k.host.hook_failures))
    k.runtime.worker.stop()
    assert cli.main(["status", "--audit", "--data", str(k.host.root)]) == 0
    assert cli.main(["test-connection", alice.id, "--data", str(k.host.root)]) == 1
    # The form never gets a password back.
    values = k.host.open_tab(alice, "user", USER_TAB, SettingsContext("user", alice.id)).values.values
    assert "password" not in values and "password_token" not in values and values["password_set"] is True

    out = capsys.readouterr()
    texts = {
        "forms, results, states": "\n".join(seen),
        "captured logs": "\n".join(r.getMessage() + repr(r.args) + str(r.exc_text) for r in caplog.records),
        "stdout": out.out,
        "stderr": out.err,
    }
    files = [p for p in Path(k.host.root).rglob("*") if p.is_file()]
    assert any(p.name == "credentials.key" for p in files) and any(p.name == "audit.sqlite3" for p in files)
    for path in files:
        texts[str(path)] = path.read_bytes().decode("latin-1")
    for secret in (GOOD, WRONG):
        forms = (
            secret,
            base64.b64encode(secret.encode()).decode(),
            secret.encode("utf-16-le").decode("latin-1"),
        )
        for where, text in texts.items():
            for form in forms:
                assert form not in text, f"password found in {where}"
    # The scan is meaningful: the password is stored there, encrypted, and decrypts with the key.
    assert k.runtime.vault.decrypt(k.runtime.accounts.load(alice.id).password_token) == WRONG
    assert len(caplog.records) > 0
