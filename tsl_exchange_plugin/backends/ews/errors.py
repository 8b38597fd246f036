"""exchangelib's exceptions as the backend errors the worker decides on (``backends/base.py``).

- **One place.** ``translate_error`` turns any exception from exchangelib (or requests below it)
  into ``AuthFailed``, ``ConfigError``, ``TransientError``, ``OutcomeUnknown``, ``ItemNotFound``,
  ``Conflict``, ``ItemRejected`` or ``RequestRejected``, with plain German messages that never
  contain the password.
- **FailFast.** exchangelib never sleeps or retries here; the worker owns every retry
  decision (NOTES §3: FaultTolerance retries whole bulk requests and duplicates items).
  ``FailFastWithHint`` keeps a 503's Retry-After, which FailFast would drop.
- **Refused content.** ErrorSchemaValidation is a SOAP fault for the whole request: Exchange
  validates the XML before it processes anything, so nothing was written (``RequestRejected``;
  the caller splits the batch to find the item). An answer about one item's values
  (``ITEM_VALUE_ERRORS``) is that item's ``ItemRejected``.
"""

from __future__ import annotations

import re
from typing import Any

from exchangelib import (
    FailFast,
)
from exchangelib import errors as exl_errors

from ..base import (
    AuthFailed,
    ConfigError,
    Conflict,
    ExchangeError,
    ItemNotFound,
    ItemRejected,
    OutcomeUnknown,
    PauseScope,
    RequestRejected,
    TransientError,
)

QUOTA_BACK_OFF = 3600.0  # a full mailbox frees up when the user cleans up, not in seconds
STORE_BACK_OFF = 300.0
DEFAULT_BUSY_BACK_OFF = 30.0


# Answers about one item's own values: the server refused that item and processed the others.
ITEM_VALUE_ERRORS: tuple[type[Exception], ...] = (
    exl_errors.ErrorInvalidPropertySet,
    exl_errors.ErrorInvalidValueForProperty,
    exl_errors.ErrorValueOutOfRange,
    exl_errors.ErrorPropertyValidationFailure,
    exl_errors.ErrorInvalidExtendedPropertyValue,
    exl_errors.ErrorInvalidCompleteDate,
    exl_errors.ErrorInvalidPercentCompleteValue,
    exl_errors.ErrorDataSizeLimitExceeded,
    exl_errors.ErrorTimeZone,
    exl_errors.ErrorCalendarEndDateIsEarlierThanStartDate,
    exl_errors.ErrorCalendarDurationIsTooLong,
    exl_errors.ErrorCalendarInvalidAttributeValue,
    exl_errors.ErrorCalendarInvalidPropertyValue,
    exl_errors.ErrorCalendarInvalidTimeZone,
    exl_errors.ErrorCalendarOutOfRange,
)


_UNREACHABLE = re.compile(
    r"Connection refused|NewConnectionError|Failed to establish a new connection|Name or service not known"
    r"|NameResolutionError|Temporary failure in name resolution|nodename nor servname|No route to host"
    r"|Network is unreachable|ConnectTimeout",
    re.IGNORECASE,
)
_TLS = re.compile(r"SSL|CERTIFICATE|certificate verify|TLS", re.IGNORECASE)
_RETRY_AFTER = re.compile(r"'retry-after':\s*'(\d+)'", re.IGNORECASE)
_HTTP_5XX = re.compile(r"Code: 5\d\d\b")
# exchangelib's own wording for an ErrorServerBusy that carries no back-off from the server.
_NO_HINT = ("Reraised from", "Caused by closed connection")
_HTTP_503 = "Caused by HTTP 503 response"


def short_message(exc: BaseException, limit: int = 300) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text if len(text) <= limit else text[:limit] + " …"


def translate_error(exc: BaseException, *, writing: bool = False, creating: bool = False) -> ExchangeError:
    """Turn any exception from exchangelib (or requests below it) into a backend error.

    ``writing``: the request changes the mailbox (a lost answer leaves its outcome unknown).
    ``creating``: a create, where an unknown outcome can duplicate items, so everything
    that may have been processed is ``OutcomeUnknown``.
    """
    if isinstance(exc, ExchangeError):
        return exc
    name = type(exc).__name__
    text = short_message(exc)

    if isinstance(exc, exl_errors.UnauthorizedError):
        if "locked out" in str(exc).lower():
            return AuthFailed("Anmeldung am Exchange-Server fehlgeschlagen: Das Konto ist gesperrt.")
        return AuthFailed("Anmeldung am Exchange-Server fehlgeschlagen: Benutzername oder Passwort falsch.")
    if isinstance(exc, exl_errors.RedirectError):
        return ConfigError(
            f"Der Exchange-Server leitet auf eine andere Adresse um ({text}); bitte die EWS-Adresse prüfen."
        )
    if isinstance(exc, exl_errors.CASError):
        return ConfigError(f"Der Exchange-Server lehnt die Anfrage ab (CAS-Fehler: {text}).")
    if isinstance(exc, exl_errors.ErrorItemNotFound):
        return ItemNotFound("Das Element ist im Postfach nicht mehr vorhanden (z. B. am Telefon gelöscht).")
    if isinstance(
        exc,
        (exl_errors.ErrorIrresolvableConflict, exl_errors.ErrorInvalidChangeKey, exl_errors.ErrorStaleObject),
    ):
        return Conflict(f"Das Element wurde inzwischen geändert ({name}); es wird neu abgeglichen.")
    if isinstance(
        exc,
        (
            exl_errors.ErrorFolderNotFound,
            exl_errors.ErrorNonExistentMailbox,
            exl_errors.ErrorAccessDenied,
            exl_errors.ErrorImpersonateUserDenied,
            exl_errors.ErrorImpersonationDenied,
            exl_errors.ErrorInvalidServerVersion,
        ),
    ):
        return ConfigError(f"Postfach oder Ordner nicht erreichbar ({name}): {text}")
    if isinstance(exc, exl_errors.ErrorQuotaExceeded):
        # Not permanent: the item is fine, the mailbox is full. Rejecting it would lose the record.
        return _unknown_if(
            creating,
            "Das Postfach ist voll (Speicherkontingent überschritten); neuer Versuch später.",
            QUOTA_BACK_OFF,
        )
    if isinstance(exc, (exl_errors.ErrorMailboxStoreUnavailable, exl_errors.ErrorMailboxMoveInProgress)):
        return _unknown_if(
            creating, f"Das Postfach ist vorübergehend nicht verfügbar ({name}).", STORE_BACK_OFF
        )
    if isinstance(exc, exl_errors.ErrorServerBusy):
        back_off = exc.back_off if exc.back_off else None
        if str(exc).startswith(_NO_HINT):
            # exchangelib wraps HTTP 503 (and IIS's transient error page), a lost connection or a
            # closed one this way, with its own RETRY_WAIT as back-off, which is no word of the
            # server's: the server is down or overloaded, and nothing was taken.
            return TransientError(
                f"Der Exchange-Server ist vorübergehend nicht verfügbar ({text}).", None, pause="server"
            )
        msg = "Der Exchange-Server ist ausgelastet (ErrorServerBusy)"
        if str(exc).startswith(_HTTP_503):
            msg = "Der Exchange-Server ist vorübergehend nicht verfügbar (HTTP 503)"
        if back_off:
            msg += f"; neuer Versuch in {back_off:g} s"
        # Busy inside a batch: some items of the request may already be written (NOTES §3).
        return _unknown_if(creating, msg + ".", back_off, pause="mailbox")
    if isinstance(exc, exl_errors.RateLimitError):
        return TransientError(
            f"Der Exchange-Server drosselt die Anfragen: {text}", getattr(exc, "wait", None), pause="mailbox"
        )
    if isinstance(exc, exl_errors.ErrorInternalServerTransientError):
        # HTTP 503 and friends: the server did not take the request.
        return TransientError(
            f"Der Exchange-Server ist vorübergehend nicht verfügbar ({text}).", pause="server"
        )
    if isinstance(exc, exl_errors.ErrorTimeoutExpired):
        if _UNREACHABLE.search(str(exc)):
            return TransientError(f"Exchange-Server nicht erreichbar: {text}", pause="server")
        if writing or creating:
            return OutcomeUnknown(
                f"Keine Antwort vom Exchange-Server; ob geschrieben wurde, ist unbekannt ({text}).",
                pause="server",
            )
        return TransientError(
            f"Zeitüberschreitung bei der Anfrage an den Exchange-Server ({text}).", pause="server"
        )
    if isinstance(exc, exl_errors.MalformedResponseError):
        if "Code: 429" in str(exc):
            match = _RETRY_AFTER.search(str(exc))
            return TransientError(
                "Der Exchange-Server drosselt die Anfragen (HTTP 429).",
                float(match.group(1)) if match else None,
                pause="mailbox",
            )
        server_error = _HTTP_5XX.search(str(exc)) is not None  # 5xx without a hint: the server is unwell
        return _unknown_if(
            creating,
            f"Unerwartete Antwort des Exchange-Servers: {short_message(exc, 160)}",
            None,
            pause="server" if server_error else "",
        )
    if isinstance(exc, exl_errors.ErrorSchemaValidation):
        # A SOAP fault before any processing: nothing was written, and the same content is
        # refused again, so it is neither unknown nor worth a retry (NOTES §3).
        return RequestRejected(
            f"Der Exchange-Server hat die Anfrage als ungültig abgelehnt ({name}: {text})."
        )
    if isinstance(exc, ITEM_VALUE_ERRORS):
        return ItemRejected(
            f"Der Exchange-Server hat das Element abgelehnt ({name}: {text}). Bitte die Angaben im "
            "Datensatz prüfen und korrigieren; nach der Änderung wird er erneut übertragen."
        )
    if isinstance(exc, exl_errors.ResponseMessageError):
        if isinstance(exc, exl_errors.ErrorConnectionFailed | exl_errors.ErrorConnectionFailedTransientError):
            return TransientError(f"Exchange-Server nicht erreichbar: {text}", pause="server")
        if creating:
            return OutcomeUnknown(f"Der Exchange-Server hat die Anfrage abgelehnt ({name}: {text}).")
        # ErrorInvalid*, ErrorItemSave, ErrorSchemaValidation, ...: the server's verdict on this item.
        return ItemRejected(f"Der Exchange-Server hat das Element abgelehnt ({name}: {text}).")
    if isinstance(exc, exl_errors.TransportError):
        if _TLS.search(str(exc)):
            return ConfigError(f"Das TLS-Zertifikat des Exchange-Servers ist nicht vertrauenswürdig: {text}")
        if _UNREACHABLE.search(str(exc)):
            return TransientError(f"Exchange-Server nicht erreichbar: {text}", pause="server")
        if "auth type" in str(exc).lower():
            return ConfigError(f"Unter dieser Adresse antwortet kein Exchange-Webdienst (EWS): {text}")
        return _unknown_if(creating, f"Übertragungsfehler zum Exchange-Server: {text}", None, pause="server")
    if isinstance(exc, ValueError | TypeError):
        # exchangelib validates values before sending (e.g. lengths, choices).
        return ItemRejected(f"Ungültiger Wert für Exchange: {text}")
    return _unknown_if(creating or writing, f"Unerwarteter Fehler ({name}): {text}", None)


def _unknown_if(
    unknown: bool, message: str, back_off: float | None, *, pause: PauseScope = ""
) -> TransientError:
    cls = OutcomeUnknown if unknown else TransientError
    return cls(message, back_off, pause=pause)


class FailFastWithHint(FailFast):
    """FailFast that keeps a 503's Retry-After: exchangelib passes it on only in its retrying
    policy, and without it a server that named its own pause would look like one that is down."""

    def raise_response_errors(self, response: Any) -> Any:
        try:
            return super().raise_response_errors(response)
        except exl_errors.ErrorInternalServerTransientError as exc:
            retry_after = _retry_after_header(response)
            if retry_after:
                raise exl_errors.ErrorServerBusy(exc.args[0], back_off=retry_after) from None
            raise


def _retry_after_header(response: Any) -> float | None:
    try:
        value = float(response.headers.get("Retry-After", "0"))
    except (TypeError, ValueError):  # an HTTP date: rare for EWS, treated as no hint
        return None
    return value if value > 0 else None
