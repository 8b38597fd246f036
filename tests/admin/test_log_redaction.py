"""No credential in any log line, at any level, from the plugin or its client libraries,
neither in what the host's logging receives nor in the plugin's own log file.

exchangelib logs every request's headers (DEBUG after each answer, ERROR when a request
fails); with Basic those carry ``user:password`` in base64, with NTLM a token from which the
password can be cracked offline. The host chooses the log level, so the test logs everything.
"""

from __future__ import annotations

import base64
import logging
import re
from pathlib import Path

import pytest
from spnego._ntlm_raw.crypto import ntowfv1

from tsl_exchange_plugin import PLUGIN_ID, logfile, logredact

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

    logfile.flush(k.runtime.data_dir)
    log_file = Path(k.runtime.data_dir) / logfile.LOG_FILE_NAME
    for text in (_all_logged(caplog), log_file.read_text("utf-8")):
        _assert_no_credential(text, email, password)


def _assert_no_credential(text: str, email: str, password: str) -> None:
    # The scan means something: exchangelib did log its requests' headers.
    assert "Authorization" in text or "authorization" in text
    basic = base64.b64encode(f"{email}:{password}".encode()).decode()
    nt_hash = ntowfv1(password)  # what an NTLM exchange is built from
    forms = (password, basic, base64.b64encode(password.encode()).decode(), nt_hash.hex())
    for form in (*forms, base64.b64encode(nt_hash).decode()):
        assert form.lower() not in text.lower()
    tokens = [m.group(0) for m in AUTH_TOKEN.finditer(text)]
    assert tokens == [], tokens[:3]


def test_the_log_file_lives_in_the_data_directory_and_rotates(kanzlei):
    """exchange-sync.log: in the plugin's data directory, readable by the host's user only,
    rotated at its size limit with a bounded number of old files."""
    k = kanzlei
    path = Path(k.runtime.data_dir) / logfile.LOG_FILE_NAME
    logging.getLogger("tsl_exchange_plugin.test").warning("Prüfeintrag für die Protokolldatei")
    logfile.flush(k.runtime.data_dir)
    assert "Prüfeintrag für die Protokolldatei" in path.read_text("utf-8")
    assert path.stat().st_mode & 0o077 == 0
    handler = next(
        h
        for h in logging.getLogger("tsl_exchange_plugin").handlers
        if getattr(h, "baseFilename", "") == str(path.resolve())
    )
    assert handler.maxBytes == logfile.MAX_BYTES and handler.backupCount == logfile.BACKUP_COUNT
    assert logfile.MAX_BYTES * (logfile.BACKUP_COUNT + 1) <= 50 * 1024 * 1024


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
