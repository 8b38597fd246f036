"""User Editor › Exchange › "Testen": a real check; red with the cause in plain German, green only if all works."""

from __future__ import annotations

import socket
import time

from tsl_exchange_plugin import PLUGIN_ID
from tsl_exchange_plugin.sandbox.testing import SANDBOX_PASSWORDS
from tsl_exchange_plugin.ui import connection_test
from tsl_hostapi.types import SettingsContext

USER_TAB = f"{PLUGIN_ID}.user"
TEST = f"{PLUGIN_ID}.test_connection"


def _tab(k, actor, user):
    return k.host.open_tab(actor, "user", USER_TAB, SettingsContext("user", user.id)).values


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_testen_is_green_only_when_everything_works_and_the_icon_is_stored(kanzlei):
    k = kanzlei
    alice = k.lawyers[0]
    assert _tab(k, alice, alice).values["status_icon"] == ""
    before = {f: len(k.items(alice, f)) for f in ("contacts", "calendar", "tasks")}
    result = k.host.press(alice, TEST, (), {"user_id": alice.id})  # the user themself
    assert result.ok and result.status_icon == "green", result.message
    assert "Anmeldung, Ordner (Kontakte, Kalender, Aufgaben), Schreiben und Löschen" in result.message
    assert "Uhrzeit stimmt" in result.message
    # The probe was created and deleted again: nothing left behind.
    assert {f: len(k.items(alice, f)) for f in before} == before
    assert k.server.engine.request_counts().get("CreateItem", 0) >= 1
    tab = _tab(k, k.admin, alice)
    assert tab.values["status_icon"] == "green" and "erfolgreich" in tab.status


def test_testen_names_each_cause_in_plain_german(kanzlei, monkeypatch):
    k = kanzlei
    alice, bob, _ = k.lawyers
    url = k.server.url
    dead = f"http://127.0.0.1:{_free_port()}/EWS/Exchange.asmx"
    cases = [
        ({"password": "Xy-wrong-77"}, "Benutzername oder Passwort ist falsch"),
        ({"host": "http://mail.nonexistent.invalid/EWS/Exchange.asmx"}, "wurde nicht gefunden"),
        ({"host": dead}, "nicht möglich"),
        (
            {"host": url.replace("/EWS/Exchange.asmx", "/EWS/Nope.asmx")},
            "keinen Exchange-Webdienst (EWS), HTTP 404",
        ),
        ({"email": "niemand@kanzlei.test"}, "Postfach wurde nicht gefunden"),
    ]
    for values, words in cases:
        result = k.host.press(k.admin, TEST, (), {"user_id": alice.id, **values})
        assert not result.ok and result.status_icon == "red", values
        assert words in result.message, (values, result.message)
        assert result.message.startswith("Verbindungstest fehlgeschlagen: ")
        assert "Xy-wrong-77" not in result.message
    # Unsaved form values were tested but not stored as the account's outcome.
    assert _tab(k, k.admin, alice).values["status_icon"] == ""

    # 503 from the server.
    k.server.inject("http_status", status=503, mailbox=k.mailbox_of[alice.id], count=None)
    result = k.host.press(k.admin, TEST, (), {"user_id": alice.id})
    k.server.faults.clear()
    assert not result.ok and "vorübergehend nicht verfügbar" in result.message
    assert _tab(k, alice, alice).values["status_icon"] == "red"

    # Clock off by ten minutes (this machine's clock moved; the server's Date header is real).
    monkeypatch.setattr(connection_test, "_local_now", lambda: time.time() - 600)
    result = k.host.press(k.admin, TEST, (), {"user_id": alice.id})
    assert (
        not result.ok
        and "Uhr des Exchange-Servers geht" in result.message
        and "10 Minuten vor" in result.message
    )
    monkeypatch.undo()

    # Plain HTTP without an administrator's permission.
    result = k.host.press(k.admin, TEST, (), {"user_id": alice.id, "allow_insecure": False})
    assert not result.ok and "Unverschlüsselte Verbindung (http://) ist nicht erlaubt" in result.message

    # Another user is refused, and learns nothing.
    result = k.host.press(bob, TEST, (), {"user_id": alice.id})
    assert not result.ok and "Keine Berechtigung" in result.message

    # Stored wrong password: red, stored, shown on the tab; the right one again: green.
    k.configure(alice, password="Xy-wrong-77")
    result = k.host.press(k.admin, TEST, (), {"user_id": alice.id})
    assert not result.ok and "Passwort ist falsch" in result.message
    tab = _tab(k, alice, alice)
    assert tab.values["status_icon"] == "red"
    assert "Xy-wrong-77" not in repr(tab)


def test_testen_refuses_an_untrusted_certificate_unless_the_admin_allows_it(kanzlei, sandbox_tls):
    k = kanzlei
    alice = k.lawyers[0]
    email = k.mailbox_of[alice.id]
    values = {
        "user_id": alice.id,
        "host": sandbox_tls.url,
        "username": email,
        "password": SANDBOX_PASSWORDS[email],
    }
    refused = k.host.press(k.admin, TEST, (), {**values, "allow_insecure": False})
    assert not refused.ok and "Zertifikat" in refused.message and "nicht vertrauenswürdig" in refused.message
    # Saved as an https account without permission; the user cannot grant it from the button.
    saved = k.host.save_tab(
        k.admin,
        "user",
        USER_TAB,
        SettingsContext("user", alice.id),
        {"host": sandbox_tls.url, "allow_insecure": False, "password": SANDBOX_PASSWORDS[email]},
    )
    assert saved.ok, saved
    still = k.host.press(alice, TEST, (), {"user_id": alice.id, "allow_insecure": True})
    assert not still.ok and "nicht vertrauenswürdig" in still.message
    assert _tab(k, alice, alice).values["status_icon"] == "red"
    # The administrator allows the self-signed certificate for this server: green.
    allowed = k.host.press(k.admin, TEST, (), {**values, "allow_insecure": True})
    assert allowed.ok, allowed.message
    assert "Zertifikat nicht geprüft (vom Administrator zugelassen)" in allowed.message
