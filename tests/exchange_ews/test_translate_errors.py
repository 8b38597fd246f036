"""translate_error: every exchangelib failure becomes one backend error class (no server needed)."""

from __future__ import annotations

import pytest
from exchangelib import errors as e

from tsl_exchange_plugin.backends.base import (
    AuthFailed,
    ConfigError,
    Conflict,
    ItemNotFound,
    ItemRejected,
    OutcomeUnknown,
    TransientError,
)
from tsl_exchange_plugin.backends.ews.errors import translate_error


@pytest.mark.parametrize(
    ("exc", "cls"),
    [
        (e.UnauthorizedError("Invalid credentials for http://x"), AuthFailed),
        (e.CASError(cas_error="x", response=None), ConfigError),
        (e.RedirectError(url="https://other/EWS/Exchange.asmx"), ConfigError),
        (e.ErrorFolderNotFound("nope"), ConfigError),
        (e.ErrorNonExistentMailbox("nope"), ConfigError),
        (e.ErrorItemNotFound("gone"), ItemNotFound),
        (e.ErrorIrresolvableConflict("stale"), Conflict),
        (e.ErrorInvalidChangeKey("stale"), Conflict),
        (e.ErrorMailboxStoreUnavailable("x"), TransientError),
        (e.ErrorMailboxMoveInProgress("x"), TransientError),
        (e.ErrorInternalServerTransientError("Caused by HTTP 503 response"), TransientError),
        (e.ErrorInvalidPropertyRequest("bad field"), ItemRejected),
        (e.ErrorItemSave("cannot save"), ItemRejected),
        (e.TransportError("HTTPSConnectionPool: [SSL: CERTIFICATE_VERIFY_FAILED] self-signed"), ConfigError),
        (e.TransportError("Failed to get auth type from service"), ConfigError),
        (ValueError("'surname' value exceeds length 255"), ItemRejected),
    ],
)
def test_classes(exc, cls):
    err = translate_error(exc)
    assert type(err) is cls
    assert str(err)


def test_wrong_password_message_is_plain_german():
    err = translate_error(e.UnauthorizedError("Invalid credentials"))
    assert str(err) == "Anmeldung am Exchange-Server fehlgeschlagen: Benutzername oder Passwort falsch."
    locked = translate_error(e.UnauthorizedError("The referenced account is currently locked out"))
    assert isinstance(locked, AuthFailed) and "gesperrt" in str(locked)


def test_busy_keeps_back_off_and_is_unknown_only_for_creates():
    busy = e.ErrorServerBusy("busy", back_off=1.5)
    read = translate_error(busy)
    assert type(read) is TransientError and read.back_off == 1.5
    created = translate_error(busy, creating=True)
    assert type(created) is OutcomeUnknown and created.back_off == 1.5


def test_quota_is_transient_with_long_back_off():
    err = translate_error(e.ErrorQuotaExceeded("full"))
    assert type(err) is TransientError and err.back_off >= 600


def test_429_is_transient_with_retry_after():
    exc = e.MalformedResponseError(
        "Unknown failure in response. Code: 429 headers: {'Retry-After': '7'} content: "
    )
    err = translate_error(exc)
    assert type(err) is TransientError and err.back_off == 7


def test_timeouts_versus_refused():
    refused = e.ErrorTimeoutExpired(
        'Reraised from ConnectionError(MaxRetryError("... NewConnectionError(... [Errno 111] Connection refused)"))'
    )
    assert type(translate_error(refused, writing=True)) is TransientError
    assert "nicht erreichbar" in str(translate_error(refused))
    timeout = e.ErrorTimeoutExpired("Reraised from ReadTimeout(HTTPConnectionPool: Read timed out.)")
    assert type(translate_error(timeout, writing=True)) is OutcomeUnknown
    assert type(translate_error(timeout)) is TransientError


def test_an_unexpected_error_raised_inside_a_create_is_unknown():
    # Raised from the middle of a CreateItem answer: earlier items of the request were created.
    assert type(translate_error(e.ErrorInternalServerError("x"), creating=True)) is OutcomeUnknown
