"""No credential in any log line, at any level, from the plugin or its client libraries.

exchangelib logs every request's headers (DEBUG after each answer, ERROR when a request
fails); with Basic those carry ``user:password`` in base64, with NTLM a token from which the
password can be cracked offline. The host chooses the log level, so the test logs everything.
"""

from __future__ import annotations

import base64
import logging
import re

import pytest

from tsl_exchange_plugin import PLUGIN_ID, logredact

SET_SYNC = f"{PLUGIN_ID}.set_sync"
TEST = f"{PLUGIN_ID}.test_connection"
AUTH_TOKEN = re.compile(r"(?i)(basic|ntlm|negotiate)\s+([A-Za-z0-9+/=]{20,})")


def _all_logged(caplog: pytest.LogCaptureFixture) -> str:
    lines = []
    for record in caplog.records:
        lines.append(record.getMessage())
        if record.exc_text:
            lines.append(record.exc_text)
    return "\n".join(lines)


@pytest.mark.parametrize("auth_type", ["basic", "ntlm"])
def test_push_with_debug_logging_writes_no_credential(kanzlei, caplog, auth_type):
    k = kanzlei
    alice = k.lawyers[0]
    email = k.mailbox_of[alice.id]
    password = "Geheim-Log-Passwort-2718"
    k.server.set_password(email, password)
    caplog.set_level(logging.DEBUG)  # the root logger: every library's records reach the capture
    k.configure(alice, password=password, auth_type=auth_type)
    k.host.press(alice, TEST, (), {"user_id": alice.id})
    k.host.press(k.admin, SET_SYNC, [k.firm.contacts[0].ref], {"users": [alice.id]})
    k.drain()
    # A failing request too: exchangelib logs the headers at ERROR then.
    k.server.set_password(email, "ein-anderes-Passwort")
    k.host.press(alice, TEST, (), {"user_id": alice.id})

    text = _all_logged(caplog)
    # The scan means something: exchangelib did log its requests' headers.
    assert "Authorization" in text or "authorization" in text
    basic = base64.b64encode(f"{email}:{password}".encode()).decode()
    for form in (password, basic, base64.b64encode(password.encode()).decode()):
        assert form not in text
    tokens = [m.group(0) for m in AUTH_TOKEN.finditer(text)]
    assert tokens == [], tokens[:3]


def test_scrub_masks_header_shapes_and_known_passwords():
    logredact.remember("bob@kanzlei.test", "Pw-Nur-Fuer-Den-Test")
    basic = base64.b64encode(b"bob@kanzlei.test:Pw-Nur-Fuer-Den-Test").decode()
    lines = [
        f"Authorization: Basic {basic}",
        f"{{'Authorization': 'Basic {basic}', 'Content-Type': 'text/xml'}}",
        "{'Authorization': 'NTLM TlRMTVNTUAADAAAAGAAYAEgAAAAYABgAYAAAAA=='}",
        "WWW-Authenticate: Negotiate YIIGhgYGKwYBBQUCoIIGejCCBnagMDAu",
        "Passwort war Pw-Nur-Fuer-Den-Test",
    ]
    for line in lines:
        clean = logredact.scrub(line)
        assert "Pw-Nur-Fuer-Den-Test" not in clean and basic not in clean
        assert "TlRMTVNT" not in clean and "YIIGhgYG" not in clean
        assert logredact.MASK in clean
    assert logredact.scrub("Content-Type: text/xml") == "Content-Type: text/xml"
