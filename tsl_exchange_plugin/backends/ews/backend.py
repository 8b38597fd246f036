"""The EWS backend: with series.py (recurring masters), the only modules of the plugin that import exchangelib.

What it does, and why (facts in ../shared/ews-reference/NOTES.md):

- **No autodiscover.** ``Configuration(service_endpoint=account.ews_url)``. The auth type is
  probed when the account says "auto" (exchangelib posts a dummy request without
  credentials and reads WWW-Authenticate), NTLM or Basic otherwise. The server version is
  probed unless the backend was given one.
- **FailFast.** exchangelib never sleeps or retries here; the worker owns every retry
  decision (NOTES §3: FaultTolerance retries whole bulk requests and duplicates items).
- **Identity.** Every created item carries the extended property PublicStrings/``tslRecordId``
  (String) with the record key. It is stamped at create only, never in an update, so an
  item created by hand never becomes "ours".
- **Unknown outcomes.** A create that meets ErrorServerBusy, a timeout, a dropped
  connection, or any error after a first chunk was written, raises ``OutcomeUnknown``:
  the worker must look the record keys up before creating again.
- **Updates** overwrite every field the plugin owns; empty values become DeleteItemField
  (exchangelib deletes a field whose value is None or an empty list, and deletes every
  other index key of an indexed field such as phone numbers). The body is read first (one
  batched GetItem) so that what the user wrote below ``USER_NOTES_MARKER`` is kept. A body
  a phone turned into HTML is reduced to plain text before the user part is kept.
- **Conflicts.** Updates carry the ChangeKey the sync state holds and use NeverOverwrite:
  the ChangeKey is the server's own fencing token, so an update sent by a worker that
  has since lost its lease, arriving after the next holder wrote, fails instead of
  putting an older version back (the pusher then refreshes the ids and, still holding
  the lease, writes again; a phone edit takes the same path).
  exchangelib raises ErrorIrresolvableConflict for the whole UpdateItem
  request even in ``bulk_update`` (NOTES §3), so every item of that chunk is reported as
  ``Conflict``; some may already be applied, which is harmless because an update is
  idempotent (refresh the ChangeKey, push again).
- **Concurrency.** One limit per server (host:port of the EWS URL) shared by all
  sessions of a backend caps the requests in flight (Microsoft advises about 10). Every
  exchangelib call runs under it; exchangelib sends the requests of one call one after another.
  With several worker processes the backend gets the queue's store (``shared_slots``) and
  each call also takes one of the server's slots there, so the cap holds across processes
  (``ServerLimit``).
- **TLS.** ``verify_tls=False`` (an administrator allowed a self-signed certificate for this
  server) must not switch verification off for every other server. exchangelib's
  ``HTTP_ADAPTER_CLS`` is a class attribute of the protocol, read by class methods, so the
  backend moves only the cached protocol object of that endpoint and credentials to a
  subclass that uses ``NoVerifyHTTPAdapter``. Limitation: exchangelib caches protocols per
  (endpoint, credentials); two accounts with the same URL and credentials but different
  ``verify_tls`` share one protocol, and the last session opened decides.
- **Errors** become the classes of ``base.py`` in one place, ``translate_error``, with plain
  German messages that never contain the password.
- **Refused content.** ErrorSchemaValidation is a SOAP fault for the whole request: Exchange
  validates the XML before it processes anything, so nothing was written
  (``RequestRejected``; the caller splits the batch to find the item). An answer about one
  item's values (ErrorValueOutOfRange, ErrorInvalidPropertySet, ErrorCalendar…) is that item's
  ``ItemRejected``. exchangelib raises such answers out of ``bulk_create``/``bulk_update`` and
  so drops the answers of every other item, written ones included; the create and update
  services here return them per item instead (``_CreateItems``/``_UpdateItems``).
"""

from __future__ import annotations

import copy
import dataclasses
import datetime as dt
import html
import itertools
import logging
import re
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import nullcontext
from decimal import Decimal
from typing import Any, TypeVar

from exchangelib import (
    BASIC,
    DELEGATE,
    NTLM,
    Account,
    Body,
    Build,
    CalendarItem,
    Configuration,
    Contact,
    Credentials,
    EWSDate,
    EWSDateTime,
    EWSTimeZone,
    ExtendedProperty,
    FailFast,
    HTMLBody,
    NoVerifyHTTPAdapter,
    Q,
    Task,
    Version,
)
from exchangelib import errors as exl_errors
from exchangelib.fields import ExtendedPropertyField, FieldPath, InvalidField
from exchangelib.folders import DEEP, SHALLOW, Calendar, Contacts, Root, Tasks
from exchangelib.folders.queryset import SingleFolderQuerySet
from exchangelib.indexed_properties import EmailAddress, PhoneNumber, PhysicalAddress
from exchangelib.items import AUTO_RESOLVE, ID_ONLY, NEVER_OVERWRITE, SAVE_ONLY, SEND_TO_NONE
from exchangelib.properties import OccurrenceItemId
from exchangelib.protocol import Protocol
from exchangelib.services import CreateItem, UpdateItem

from ... import logredact
from ...mapping.common import merge_body, split_body
from ...mapping.items import CalendarEntry, ContactItem, ExchangeItem, TaskEntry
from ...mapping.reminder import TODO_LIST_NAME, linked_record_key
from .. import turns
from ..base import (
    AuthFailed,
    ConfigError,
    Conflict,
    ExchangeError,
    ItemClass,
    ItemNotFound,
    ItemRef,
    ItemRejected,
    MailboxAccount,
    OutcomeUnknown,
    OwnedRef,
    OwnedValues,
    PauseScope,
    PerItem,
    RequestGuard,
    RequestRejected,
    ServerSlots,
    TransientError,
    Written,
)
from ..slots import ServerLimit
from . import series as series_ews

T = TypeVar("T")
log = logging.getLogger(__name__)

RECORD_ID_FIELD = "tsl_record_id"
QUOTA_BACK_OFF = 3600.0  # a full mailbox frees up when the user cleans up, not in seconds
STORE_BACK_OFF = 300.0
DEFAULT_BUSY_BACK_OFF = 30.0
FIND_KEYS_PER_REQUEST = 50  # keys per Or-restriction; keeps each FindItem small

# --------------------------------------------------------------------------- extended property


class TslRecordId(ExtendedProperty):
    """The record key the plugin stamps on every item it creates."""

    distinguished_property_set_id = "PublicStrings"
    property_name = "tslRecordId"
    property_type = "String"


_ITEM_CLASSES: dict[str, type] = {"contact": Contact, "calendar": CalendarItem, "task": Task}
_register_lock = threading.Lock()


def register_record_id_property() -> None:
    """Register ``tsl_record_id`` on Contact, CalendarItem and Task (process-global, idempotent)."""
    with _register_lock:
        for cls in _ITEM_CLASSES.values():
            try:
                cls.get_field_by_fieldname(RECORD_ID_FIELD)
            except InvalidField:
                cls.register(RECORD_ID_FIELD, TslRecordId)


# --------------------------------------------------------------------------- owned fields

CONTACT_FIELDS: tuple[str, ...] = (
    "display_name",
    "file_as",
    "given_name",
    "middle_name",
    "surname",
    "nickname",
    "initials",
    "generation",
    "company_name",
    "department",
    "job_title",
    "email_addresses",
    "phone_numbers",
    "physical_addresses",
    "birthday",
    "business_homepage",
    "body",
    "categories",
)
CALENDAR_FIELDS: tuple[str, ...] = (
    "subject",
    "body",
    "categories",
    "start",
    "end",
    "is_all_day",
    "legacy_free_busy_status",
    "location",
    "reminder_is_set",
    "reminder_minutes_before_start",
    "recurrence",  # None: DeleteItemField, a series turned back into a single appointment
)
TASK_FIELDS: tuple[str, ...] = (
    "subject",
    "body",
    "categories",
    "due_date",
    "start_date",
    "status",
    "percent_complete",
    "reminder_is_set",
    "reminder_due_by",
)
OWNED_FIELDS: dict[str, tuple[str, ...]] = {
    "contact": CONTACT_FIELDS,
    "calendar": CALENDAR_FIELDS,
    "task": TASK_FIELDS,
}


def update_fields(item: ExchangeItem) -> list[str]:
    """The fields an update sends: all owned ones. Exception: a task's ReminderDueBy cannot be
    deleted (exchangelib: required after save), so without a reminder only ReminderIsSet=false goes."""
    fields = list(OWNED_FIELDS[item.item_class])
    if isinstance(item, TaskEntry) and item.reminder_at is None:
        fields.remove("reminder_due_by")
    return fields


def _text(value: str) -> str | None:
    # None makes exchangelib send DeleteItemField (update) or leave the element out (create).
    return value if value else None


def _body(value: str) -> Body | None:
    return Body(value) if value else None


def _contact_fields(item: ContactItem) -> dict[str, Any]:
    return {
        "display_name": item.display_name,
        "file_as": _text(item.file_as),
        "given_name": _text(item.given_name),
        "middle_name": _text(item.middle_name),
        "surname": _text(item.surname),
        "nickname": _text(item.nickname),
        "initials": _text(item.initials),
        "generation": _text(item.generation),
        "company_name": _text(item.company_name),
        "department": _text(item.department),
        "job_title": _text(item.job_title),
        "email_addresses": [EmailAddress(label=e.label, email=e.address) for e in item.email_addresses]
        or None,
        "phone_numbers": [PhoneNumber(label=p.label, phone_number=p.number) for p in item.phone_numbers]
        or None,
        "physical_addresses": [
            PhysicalAddress(
                label=a.label,
                street=_text(a.street),
                city=_text(a.city),
                state=_text(a.state),
                country=_text(a.country),
                zipcode=_text(a.zipcode),
            )
            for a in item.physical_addresses
        ]
        or None,
        "birthday": EWSDate.from_date(item.birthday) if item.birthday else None,
        "business_homepage": _text(item.business_homepage),
        "body": _body(item.body),
        "categories": list(item.categories) or None,
    }


def _localise(value: dt.datetime, tz: EWSTimeZone) -> EWSDateTime:
    if value.tzinfo is not None:
        return EWSDateTime.from_datetime(value).astimezone(tz)
    return EWSDateTime.from_datetime(value.replace(tzinfo=tz))


def _calendar_fields(entry: CalendarEntry) -> dict[str, Any]:
    tz = EWSTimeZone(entry.timezone)
    if entry.all_day:
        start_date = entry.start_date or (entry.start.date() if entry.start else None)
        end_date = entry.end_date or start_date
        if start_date is None:
            raise ValueError("Ganztägiger Eintrag ohne Datum")
        # exchangelib sends an EWSDate start/end as local midnight and adds one day to the end
        # (the inclusive end date becomes the exclusive midnight after it), NOTES §2 all-day.
        start: Any = EWSDate.from_date(start_date)
        end: Any = EWSDate.from_date(end_date)
    else:
        if entry.start is None:
            raise ValueError("Termin ohne Beginn")
        start = _localise(entry.start, tz)
        end = _localise(entry.end or entry.start, tz)
    reminder = entry.reminder_minutes
    return {
        "subject": entry.subject,
        "body": _body(entry.body),
        "categories": list(entry.categories) or None,
        "start": start,
        "end": end,
        "is_all_day": bool(entry.all_day),
        "legacy_free_busy_status": entry.free_busy or "Busy",
        "location": _text(entry.location),
        "reminder_is_set": reminder is not None,
        "reminder_minutes_before_start": reminder if reminder is not None else 0,
        "_start_timezone": tz,
        "_end_timezone": tz,
        "recurrence": series_ews.to_recurrence(entry.recurrence),
    }


def _task_fields(entry: TaskEntry) -> dict[str, Any]:
    tz = EWSTimeZone(entry.timezone)
    return {
        "subject": entry.subject,
        "body": _body(entry.body),
        "categories": list(entry.categories) or None,
        "due_date": EWSDate.from_date(entry.due_date) if entry.due_date else None,
        "start_date": EWSDate.from_date(entry.start_date) if entry.start_date else None,
        "status": Task.COMPLETED if entry.completed else Task.NOT_STARTED,
        "percent_complete": Decimal(100) if entry.completed else Decimal(0),
        "reminder_is_set": entry.reminder_at is not None,
        "reminder_due_by": _localise(entry.reminder_at, tz) if entry.reminder_at else None,
    }


def to_exchangelib(item: ExchangeItem, *, account: Account | None = None, **extra: Any) -> Any:
    """Build the exchangelib item for one plain-data item (``extra``: id, changekey, folder, ...)."""
    if isinstance(item, ContactItem):
        return Contact(account=account, **_contact_fields(item), **extra)
    if isinstance(item, CalendarEntry):
        return CalendarItem(account=account, **_calendar_fields(item), **extra)
    if isinstance(item, TaskEntry):
        return Task(account=account, **_task_fields(item), **extra)
    raise TypeError(f"Unbekannter Elementtyp: {type(item).__name__}")


# --------------------------------------------------------------------------- errors

# Answers about one item's own values: the server refused that item and processed the others.
_ITEM_VALUE_ERRORS: tuple[type[Exception], ...] = (
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


class _CreateItems(CreateItem):
    """CreateItem that returns an item's value error in its place instead of raising it."""

    ERRORS_TO_CATCH_IN_RESPONSE = CreateItem.ERRORS_TO_CATCH_IN_RESPONSE + _ITEM_VALUE_ERRORS


class _UpdateItems(UpdateItem):
    """UpdateItem that returns an item's value error in its place instead of raising it."""

    ERRORS_TO_CATCH_IN_RESPONSE = UpdateItem.ERRORS_TO_CATCH_IN_RESPONSE + _ITEM_VALUE_ERRORS


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


def _short(exc: BaseException, limit: int = 300) -> str:
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
    text = _short(exc)

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
            f"Unerwartete Antwort des Exchange-Servers: {_short(exc, 160)}",
            None,
            pause="server" if server_error else "",
        )
    if isinstance(exc, exl_errors.ErrorSchemaValidation):
        # A SOAP fault before any processing: nothing was written, and the same content is
        # refused again, so it is neither unknown nor worth a retry (NOTES §3).
        return RequestRejected(
            f"Der Exchange-Server hat die Anfrage als ungültig abgelehnt ({name}: {text})."
        )
    if isinstance(exc, _ITEM_VALUE_ERRORS):
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


class _FailFastWithHint(FailFast):
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


# --------------------------------------------------------------------------- protocol and TLS


class _TurnTakingProtocol(Protocol):
    """exchangelib's protocol, telling the worker's lanes when a request waits for the server.

    ``get_session`` is called once the request body is built, just before it is posted;
    ``release_session`` once the answer is read (``retire_session`` ends there too).
    """

    def get_session(self) -> Any:
        turns.pause()
        return super().get_session()

    def release_session(self, session: Any) -> None:
        super().release_session(session)
        turns.resume()


class _NoVerifyProtocol(_TurnTakingProtocol):
    """The cached protocol of an endpoint whose self-signed certificate an administrator allowed."""

    HTTP_ADAPTER_CLS = NoVerifyHTTPAdapter


def _html_to_text(value: str) -> str:
    text = re.sub(r"(?is)<(script|style).*?</\1>", "", value)
    text = re.sub(r"(?i)<br\s*/?>|</p>|</div>", "\n", text)
    text = re.sub(r"<[^>]+>", "", text)
    return html.unescape(text).replace("\r\n", "\n").replace("\xa0", " ")


def _body_text(body: Any) -> str:
    if body is None:
        return ""
    if isinstance(body, HTMLBody):
        return _html_to_text(str(body))
    return str(body)


def _chunks(seq: Sequence[T], size: int) -> list[Sequence[T]]:
    return [seq[i : i + size] for i in range(0, len(seq), size)]


# --------------------------------------------------------------------------- backend


class EwsBackend:
    """Opens ``EwsSession``s; holds what they share (the per-server request limit)."""

    def __init__(
        self,
        *,
        max_in_flight_per_server: int = 10,
        version: tuple[int, int, int, int] | None = None,
        chunk_size: int = 100,
        target_folders: dict[str, str] | None = None,
        shared_slots: ServerSlots | None = None,
    ):
        """``version``: an Exchange build such as (15, 1, 2507, 6) to skip the version probe.
        ``chunk_size``: items per Create/Update/Delete/GetItem request. NOTES §3 advises 10-25 to
        limit the damage of a failed batch; here a failed create batch costs no duplicates (the
        worker looks the keys up before creating again), so exchangelib's own 100 is used: every
        request saved is a round trip saved against a hosted Exchange.
        ``target_folders``: item class -> subfolder name under the distinguished folder
        (e.g. {"contact": "timeSensor LEGAL"}); created if missing. Default: the folder itself.
        ``shared_slots``: the queue's store, when several processes push: then every request
        also takes one of the server's ``max_in_flight_per_server`` slots there, so the limit
        holds for all processes together (see ``ServerLimit``).
        """
        if max_in_flight_per_server < 1:
            raise ValueError("max_in_flight_per_server muss mindestens 1 sein")
        self.max_in_flight_per_server = max_in_flight_per_server
        self.version = version
        self.chunk_size = max(1, chunk_size)
        self.target_folders = dict(target_folders or {})
        self.shared_slots = shared_slots
        self._limits: dict[str, ServerLimit] = {}
        self._lock = threading.Lock()
        register_record_id_property()

    def limiter(self, server: str) -> ServerLimit:
        with self._lock:
            limit = self._limits.get(server)
            if limit is None:
                limit = self._limits[server] = ServerLimit(
                    server, self.max_in_flight_per_server, self.shared_slots
                )
            return limit

    def session(self, account: MailboxAccount) -> EwsSession:
        return EwsSession(self, account)


class EwsSession:
    """Operations on one mailbox (``MailboxSession``). Not thread-safe: one per worker thread."""

    def __init__(self, backend: EwsBackend, account: MailboxAccount):
        self._backend = backend
        self._mailbox = account
        self._limit = backend.limiter(account.server)
        # Set by the worker: paces the requests to this mailbox and holds them while it or its
        # server is paused (see worker.py). None: every request goes (tools, the connection test).
        self.guard: RequestGuard | None = None
        self._folders: dict[str, Any] = {}
        self._server_version: Any = None
        auth_type = {"auto": None, "ntlm": NTLM, "basic": BASIC}.get(account.auth_type)
        if account.auth_type not in ("auto", "ntlm", "basic"):
            raise ConfigError(f"Unbekannte Anmeldeart: {account.auth_type!r}")
        version = Version(build=Build(*backend.version)) if backend.version else None
        # exchangelib logs request headers (Basic credentials, NTLM tokens) at DEBUG and ERROR.
        logredact.remember(account.username, account.password)
        try:
            config = Configuration(
                service_endpoint=account.ews_url,
                credentials=Credentials(account.username, account.password),
                auth_type=auth_type,
                version=version,
                retry_policy=_FailFastWithHint(),
                # exchangelib's default pool is one HTTP session per server and credentials, which
                # would queue a worker's parallel requests for one mailbox behind each other.
                max_connections=backend.max_in_flight_per_server,
            )
            self._account = Account(
                account.email,
                config=config,
                autodiscover=False,
                access_type=DELEGATE,
                default_timezone=EWSTimeZone(account.timezone),
                locale="de_DE",
            )
        except Exception as exc:  # constructing sends nothing; this is bad configuration
            raise ConfigError(self._scrub(f"Ungültige Exchange-Einstellungen: {_short(exc)}")) from None
        protocol = self._account.protocol
        wanted = _TurnTakingProtocol if account.verify_tls else _NoVerifyProtocol
        if type(protocol) is not wanted:
            adapter = protocol.HTTP_ADAPTER_CLS
            protocol.__class__ = wanted
            if wanted.HTTP_ADAPTER_CLS is not adapter:
                protocol.close()  # pooled sessions were built with the other adapter
        # exchangelib reads the timeout from the protocol object; an instance attribute scopes it.
        protocol.TIMEOUT = account.timeout

    # ----------------------------------------------------------------- plumbing

    @property
    def raw_account(self) -> Account:
        """The exchangelib Account (for diagnostics and tests; the worker never needs it)."""
        return self._account

    def _scrub(self, message: str) -> str:
        pw = self._mailbox.password
        return message.replace(pw, "***") if pw and len(pw) >= 3 else message

    def _fail(self, exc: BaseException, *, writing: bool = False, creating: bool = False) -> ExchangeError:
        err = translate_error(exc, writing=writing, creating=creating)
        message = self._scrub(str(err))
        if message != str(err):
            err = (
                type(err)(message, err.back_off, pause=err.pause)
                if isinstance(err, TransientError)
                else type(err)(message)
            )
        return err

    def _call(
        self,
        fn: Callable[[], T],
        *,
        writing: bool = False,
        creating: bool = False,
        passthrough: tuple[type[BaseException], ...] = (),
    ) -> T:
        guard = self.guard
        turns.pause()  # waiting for a free request slot (or the mailbox's turn) is waiting, too
        with guard.request() if guard is not None else nullcontext() as slot, self._limit:
            turns.resume()
            if slot is not None:
                slot.check()  # a paused mailbox or server: nothing is sent
            try:
                result = fn()
            except passthrough:
                raise
            except Exception as exc:
                err = self._fail(exc, writing=writing, creating=creating)
                if slot is not None:
                    slot.failed(err)  # before the next request of this mailbox may start
                raise err from None
            if slot is not None:
                slot.answered()
            return result

    def _version(self) -> Any:
        if self._server_version is None:
            with turns.sitting_out():  # the first call may probe the server under exchangelib's lock
                self._server_version = self._call(lambda: self._account.version)
        return self._server_version

    def _per_item(self, result: Any) -> ExchangeError | None:
        if isinstance(result, BaseException):
            return self._fail(result, writing=True)
        return None

    def folder(self, item_class: ItemClass) -> Any:
        """The folder items of this class go to (resolved once per session)."""
        if item_class not in self._folders:
            with turns.sitting_out():
                self._folders[item_class] = self._call(lambda: self._resolve_folder(item_class))
        return self._folders[item_class]

    def _resolve_folder(self, item_class: str) -> Any:
        parent = self._default_folder(item_class)
        name = self._backend.target_folders.get(item_class)
        if not name:
            return parent
        found = self._find_subfolder(parent, name)
        if found is not None:
            return found
        folder_cls = {"contact": Contacts, "calendar": Calendar, "task": Tasks}[item_class]
        try:
            folder = folder_cls(parent=parent, name=name)
            folder.save()
            return folder
        except exl_errors.ErrorFolderExists:
            found = self._find_subfolder(parent, name)  # created meanwhile by another worker
            if found is None:
                raise
            return found

    def _default_folder(self, item_class: str) -> Any:
        """The mailbox's root and default folder of the class, as ``Account.root`` and
        ``Account.contacts`` (calendar, tasks) would give them, without their lock.

        exchangelib caches these per account, but under a lock per property that every
        Account of the process shares: while one thread waits for the server's answer about
        its mailbox's folders (two round trips), every other thread setting up another
        mailbox waits, so a process starting on many mailboxes set them up one at a time.
        This session's Account serves one thread, so the folders are fetched here and kept
        where exchangelib looks first (the instance's ``__dict__``)."""
        cache = vars(self._account)
        root = cache.get("root")
        if root is None:
            root = cache.setdefault("root", Root.get_distinguished(account=self._account))
        attribute, folder_cls = {
            "contact": ("contacts", Contacts),
            "calendar": ("calendar", Calendar),
            "task": ("tasks", Tasks),
        }[item_class]
        folder = cache.get(attribute)
        if folder is None:
            folder = cache.setdefault(attribute, root.get_default_folder(folder_cls))
        return folder

    def _find_subfolder(self, parent: Any, name: str) -> Any | None:
        matches = list(
            SingleFolderQuerySet(account=self._account, folder=parent).depth(SHALLOW).filter(name=name)
        )
        matches = [f for f in matches if not isinstance(f, BaseException)]
        return matches[0] if matches else None

    # ----------------------------------------------------------------- MailboxSession

    def create(self, items: Sequence[ExchangeItem]) -> list[PerItem]:
        results: list[PerItem | None] = [None] * len(items)
        groups: dict[str, list[tuple[int, Any]]] = {}
        for pos, item in enumerate(items):
            try:
                obj = to_exchangelib(item, account=self._account)
                setattr(obj, RECORD_ID_FIELD, item.record_key)
            except Exception as exc:
                results[pos] = ItemRejected(self._scrub(f"Element kann nicht erzeugt werden: {_short(exc)}"))
                continue
            groups.setdefault(item.item_class, []).append((pos, obj))

        written_any = False
        for item_class, members in groups.items():
            folder = self.folder(item_class)  # type: ignore[arg-type]
            version = self._version()
            for _, obj in members:
                obj.folder = folder
            valid = members
            for chunk in _chunks(valid, self._backend.chunk_size):
                try:
                    chunk, created = self._create_chunk(folder, chunk, version, results)
                except RequestRejected as err:
                    # Refused before processing: nothing of this chunk was written, the others stand.
                    for pos, _ in chunk:
                        if results[pos] is None:
                            results[pos] = err
                    continue
                except ExchangeError as err:
                    if written_any and not isinstance(err, OutcomeUnknown):
                        # Earlier chunks were written; their ids die with this exception.
                        raise OutcomeUnknown(
                            f"{err} Ein Teil des Stapels wurde bereits geschrieben.",
                            getattr(err, "back_off", None),
                        ) from None
                    raise
                objs = [obj for _, obj in chunk]
                if len(created) != len(objs):
                    raise OutcomeUnknown(
                        f"Der Exchange-Server lieferte {len(created)} Antworten für {len(objs)} Elemente."
                    )
                written_any = True
                for (pos, _), res in zip(chunk, created, strict=True):
                    err = self._per_item(res)
                    results[pos] = err if err is not None else Written(res.id, res.changekey)
        self._series_exceptions(items, results)
        return [r if r is not None else ItemRejected("Element wurde nicht verarbeitet.") for r in results]

    def _create_chunk(
        self, folder: Any, chunk: list[tuple[int, Any]], version: Any, results: list
    ) -> tuple[list[tuple[int, Any]], list[Any]]:
        """bulk_create one chunk; returns the members actually sent and exchangelib's answers.

        exchangelib validates each item while it builds the request (before anything goes on
        the wire) and one bad item fails the whole chunk with a ValueError or TypeError.
        Validating every item up front would double that work for the common, valid case, so
        only a failed build is followed by item-by-item validation: the bad items are
        rejected and the rest sent again.
        """
        send = lambda members: list(  # noqa: E731
            _CreateItems(account=self._account, chunk_size=len(members)).call(
                items=[obj for _, obj in members],
                folder=folder,
                message_disposition=SAVE_ONLY,
                send_meeting_invitations=SEND_TO_NONE,
            )
        )
        try:
            return chunk, self._call(lambda: send(chunk), creating=True, passthrough=(ValueError, TypeError))
        except (ValueError, TypeError):
            pass
        good: list[tuple[int, Any]] = []
        for pos, obj in chunk:
            try:
                obj.clean(version=version)
                good.append((pos, obj))
            except Exception as exc:
                results[pos] = self._fail(exc)
        if len(good) == len(chunk):
            # Every item is valid on its own, so the error came from elsewhere: be safe.
            raise OutcomeUnknown("Unerwartete Antwort beim Anlegen; der Stapel wird geprüft und wiederholt.")
        if not good:
            return [], []
        return good, self._call(lambda: send(good), creating=True)

    def update(self, changes: Sequence[tuple[ItemRef, ExchangeItem]]) -> list[PerItem]:
        results: list[PerItem | None] = [None] * len(changes)
        if not changes:
            return []
        version = self._version()
        for chunk_start in range(0, len(changes), self._backend.chunk_size):
            chunk = list(
                enumerate(changes[chunk_start : chunk_start + self._backend.chunk_size], start=chunk_start)
            )
            # 1. Current bodies, to keep the user's notes below the marker (one GetItem per chunk).
            ids = [(ref.item_id, None) for _, (ref, _) in chunk]
            folder = self.folder(chunk[0][1][1].item_class)  # validates the 'body' field path only
            current = self._call(
                lambda ids=ids, folder=folder: list(
                    self._account.fetch(ids, folder=folder, only_fields=["body"])
                )
            )
            todo: list[tuple[int, Any, list[str]]] = []
            for (pos, (ref, item)), cur in zip(chunk, current, strict=True):
                if isinstance(cur, BaseException):
                    results[pos] = self._fail(cur)
                    continue
                try:
                    body = merge_body(item.body, _body_text(cur.body))
                    merged = _replace_body(item, body)
                    obj = to_exchangelib(
                        merged, account=self._account, id=ref.item_id, changekey=ref.change_key
                    )
                    fields = update_fields(merged)
                    obj.clean(version=version)
                    todo.append((pos, obj, fields))
                except Exception as exc:
                    results[pos] = self._fail(exc)
            if not todo:
                continue
            pairs = [(obj, fields) for _, obj, fields in todo]
            try:
                answers = self._call(
                    lambda pairs=pairs: list(
                        _UpdateItems(account=self._account, chunk_size=len(pairs)).call(
                            items=pairs,
                            conflict_resolution=NEVER_OVERWRITE,
                            message_disposition=SAVE_ONLY,
                            send_meeting_invitations_or_cancellations=SEND_TO_NONE,
                            suppress_read_receipts=True,
                        )
                    ),
                    writing=True,
                )
            except (Conflict, RequestRejected) as err:
                for pos, _, _ in todo:
                    results[pos] = err
                continue
            for (pos, _, _), res in zip(todo, answers, strict=True):
                err = self._per_item(res)
                results[pos] = err if err is not None else Written(res[0], res[1])
        self._series_exceptions([item for _, item in changes], results)
        return [r if r is not None else ItemRejected("Element wurde nicht verarbeitet.") for r in results]

    def delete(self, refs: Sequence[ItemRef]) -> list[ExchangeError | None]:
        if not refs:
            return []
        ids = [(r.item_id, r.change_key) for r in refs]
        answers = self._call(
            lambda: self._account.bulk_delete(ids, chunk_size=self._backend.chunk_size), writing=True
        )
        return [self._per_item(res) for res in answers]

    def find_by_keys(self, item_class: ItemClass, record_keys: Sequence[str]) -> dict[str, list[ItemRef]]:
        keys = list(dict.fromkeys(k for k in record_keys if k))
        found: dict[str, list[ItemRef]] = {k: [] for k in keys}
        if not keys:
            return found
        folder = self.folder(item_class)
        for part in _chunks(keys, FIND_KEYS_PER_REQUEST):
            query = (
                Q(**{f"{RECORD_ID_FIELD}__in": list(part)})
                if len(part) > 1
                else Q(**{RECORD_ID_FIELD: part[0]})
            )
            for key, ref in self._find(folder, query):
                if key in found:
                    found[key].append(ref)
        if item_class == "task" and any(not refs for refs in found.values()):
            _merge_refs(found, self.todo_tasks(), only_known=True)
        return found

    def find_all_ours(self, item_class: ItemClass) -> dict[str, list[ItemRef]]:
        folder = self.folder(item_class)
        found: dict[str, list[ItemRef]] = {}
        for key, ref in self._find(folder, Q(**{f"{RECORD_ID_FIELD}__exists": True})):
            if key:
                found.setdefault(key, []).append(ref)
        if item_class == "task":
            _merge_refs(found, self.todo_tasks())
        return found

    def todo_tasks(self) -> dict[str, list[ItemRef]]:
        """Wiedervorlagen the Graph backend wrote, by key: To Do tasks in the list of that name, a
        task folder of the mailbox. A To Do task cannot carry our extended property (NOTES §10),
        so it is recognised by the record link in the plugin's part of its body, as the Graph
        backend recognises ours in the default list. Empty in a mailbox that never was on Graph
        (one FindFolder per session)."""
        if "todo" not in self._folders:
            with turns.sitting_out():
                self._folders["todo"] = self._call(self._find_todo_lists)
        found: dict[str, list[ItemRef]] = {}
        for folder in self._folders["todo"]:

            def run(folder: Any = folder) -> list[tuple[str, ItemRef]]:
                out = []
                for it in folder.all().only("body", "changekey"):
                    if isinstance(it, BaseException):
                        raise it
                    out.append((linked_record_key(_body_text(it.body)), ItemRef(it.id, it.changekey)))
                return out

            for key, ref in self._call(run):
                if key:
                    found.setdefault(key, []).append(ref)
        return found

    def _find_todo_lists(self) -> list[Any]:
        root = self._account.msg_folder_root
        matches = (
            SingleFolderQuerySet(account=self._account, folder=root).depth(DEEP).filter(name=TODO_LIST_NAME)
        )
        return [f for f in matches if isinstance(f, Tasks)]

    def folder_count(self, item_class: ItemClass) -> int:
        folder = self.folder(item_class)

        def run() -> int:
            folder.refresh()  # GetFolder: TotalCount as the server counts it
            return int(folder.total_count or 0)

        return self._call(run)

    def _find(self, folder: Any, query: Q) -> list[tuple[str, ItemRef]]:
        def run() -> list[tuple[str, ItemRef]]:
            out = []
            for it in folder.filter(query).only(RECORD_ID_FIELD, "changekey"):
                if isinstance(it, BaseException):
                    raise it
                out.append((getattr(it, RECORD_ID_FIELD) or "", ItemRef(it.id, it.changekey)))
            return out

        return self._call(run)

    def _series_exceptions(self, items: Sequence[ExchangeItem], results: list) -> None:
        """After recurring masters were written: their deleted and modified occurrences.

        Writing a master sends its whole Recurrence, which drops every exception the series
        had (the sandbox does so as Outlook does when a pattern is saved), so the exceptions
        are made again from the host's data each time: the content hash covers the whole
        series, so this runs exactly when something in the series changed. Occurrences are
        addressed by OccurrenceItemId (RecurringMasterId + InstanceIndex). The exceptions of
        all series of a batch go in one DeleteItem, one UpdateItem and one GetItem (for the
        masters' new ChangeKeys). A failure fails the item: its master exists, so the next
        attempt finds it by key, writes it again and makes its exceptions again.
        """
        todo = []
        for pos, item in enumerate(items):
            written = results[pos]
            if isinstance(written, Written) and isinstance(item, CalendarEntry):
                if item.recurrence is not None and item.recurrence.edits:
                    todo.append((pos, item, written))
        if not todo:
            return
        try:
            failed = self._write_exceptions(todo)
        except ExchangeError as err:  # a whole request failed: none of these is complete
            for pos, _, _ in todo:
                results[pos] = err
            return
        for pos, outcome in failed.items():
            results[pos] = outcome

    def _write_exceptions(self, todo: list[tuple[int, CalendarEntry, Written]]) -> dict[int, PerItem]:
        acc = self._account
        folder = self.folder("calendar")
        chunk = self._backend.chunk_size
        out: dict[int, PerItem] = {}

        def occ(master: Written, index: int) -> OccurrenceItemId:
            return OccurrenceItemId(id=master.item_id, changekey=master.change_key, instance_index=index)

        gone = [(pos, occ(w, e.index)) for pos, item, w in todo for e in item.recurrence.edits if e.deleted]
        if gone:
            answers = self._call(
                lambda: acc.bulk_delete([g for _, g in gone], chunk_size=chunk), writing=True
            )
            for (pos, _), res in zip(gone, answers, strict=True):
                err = None if series_ews.already_deleted(res) else self._per_item(res)
                if err is not None and pos not in out:
                    out[pos] = err
        changes: list[tuple[Any, list[str]]] = []
        owners: list[int] = []
        for pos, item, w in todo:
            for edit in item.recurrence.edits:
                if edit.deleted or pos in out:
                    continue
                values, fields = series_ews.occurrence_fields(item, edit)
                if not fields:
                    continue
                try:
                    # No clean(): it insists on a plain ItemId and on start/end, while an
                    # occurrence is addressed by OccurrenceItemId and may change its subject
                    # only; occurrence_fields sets the time zones clean() would have set.
                    obj = CalendarItem(account=acc, folder=folder, _id=occ(w, edit.index), **values)
                except (ValueError, TypeError) as exc:
                    out[pos] = ItemRejected(self._scrub(f"Ausnahme der Serie abgelehnt: {_short(exc)}"))
                    continue
                changes.append((obj, fields))
                owners.append(pos)
        if changes:
            # AutoResolve, not the NeverOverwrite fence of other updates: every exception
            # written changes the master's ChangeKey, so the second occurrence of a series would
            # always carry a stale one. The master itself was fenced a moment ago in this claim.
            answers = self._call(
                lambda: list(
                    _UpdateItems(account=acc, chunk_size=chunk).call(
                        items=changes,
                        conflict_resolution=AUTO_RESOLVE,
                        message_disposition=SAVE_ONLY,
                        send_meeting_invitations_or_cancellations=SEND_TO_NONE,
                        suppress_read_receipts=True,
                    )
                ),
                writing=True,
            )
            for pos, res in zip(owners, answers, strict=True):
                err = self._per_item(res)
                if err is not None and pos not in out:
                    out[pos] = err
        # Every exception changed its master's ChangeKey; keep the current ones.
        done = [(pos, w) for pos, _, w in todo if pos not in out]
        if done:
            ids = [(w.item_id, None) for _, w in done]
            fresh = self._call(lambda: list(acc.fetch(ids, folder=folder, only_fields=["subject"])))
            for (pos, _), res in zip(done, fresh, strict=True):
                out[pos] = (
                    self._fail(res) if isinstance(res, BaseException) else Written(res.id, res.changekey)
                )
        return out

    def close(self) -> None:
        # exchangelib shares one Protocol (and its session pool) between every Account with the
        # same endpoint and credentials: the worker's session and a "Testen" run use the same one.
        # Protocol.close() decrements the pool size outside its lock, and a concurrent
        # get_session() can then wait forever for a session that will never come back (seen in
        # the demo). So a session only lets go of its references; idle connections stay pooled.
        self._folders.clear()

    # ----------------------------------------------------------------- SweepSession

    def iter_ours(self, item_class: ItemClass, *, page_size: int = 1000) -> Iterator[list[OwnedRef]]:
        return _sweep_iter_ours(self, item_class, page_size=page_size)

    def read_owned(self, item_class: ItemClass, refs: Sequence[ItemRef]) -> list[OwnedValues | ExchangeError]:
        return _sweep_read_owned(self, item_class, refs)

    def owned_values(self, item: ExchangeItem) -> OwnedValues:
        return _sweep_owned_values(self, item)

    def read_bodies(self, item_class: ItemClass, refs: Sequence[ItemRef]) -> list[str | ExchangeError]:
        """The current bodies as plain text (to keep the user's notes when an item is recreated)."""
        folder = self.folder(item_class)
        out: list[str | ExchangeError] = []
        for chunk in _chunks(list(refs), self._backend.chunk_size):
            ids = [(r.item_id, None) for r in chunk]
            got = self._call(
                lambda ids=ids: list(self._account.fetch(ids, folder=folder, only_fields=["body"]))
            )
            out += [self._fail(r) if isinstance(r, BaseException) else _body_text(r.body) for r in got]
        return out


def _merge_refs(
    found: dict[str, list[ItemRef]], more: dict[str, list[ItemRef]], *, only_known: bool = False
) -> None:
    """Add ``more`` to ``found``, each item once (a named task folder may be both the target
    folder and a To Do list of the same name)."""
    seen = {r.item_id for refs in found.values() for r in refs}
    for key, refs in more.items():
        if only_known and key not in found:
            continue
        new = [r for r in refs if r.item_id not in seen]
        if new:
            found.setdefault(key, []).extend(new)
            seen.update(r.item_id for r in new)


def _replace_body(item: ExchangeItem, body: str) -> ExchangeItem:
    return dataclasses.replace(item, body=body)


# --------------------------------------------------------------------------- reconcile sweep and fidelity
# Plain, comparable values of the fields the plugin owns, built the same way for what the plugin
# writes (from the exchangelib object ``to_exchangelib`` makes) and for what the mailbox holds
# (from GetItem), so that a difference means the mailbox really differs and not that one side
# spells a value differently.

_DATE_ONLY = frozenset({"birthday", "due_date", "start_date"})
_UTC = dt.UTC


def _plain_value(name: str, value: Any) -> Any:
    if value is None:
        return None
    if isinstance(value, dt.datetime):
        # Through the timestamp: EWSDateTime refuses a plain datetime.timezone in astimezone().
        stamp = value.timestamp() if value.tzinfo is not None else value.replace(tzinfo=_UTC).timestamp()
        utc = dt.datetime.fromtimestamp(int(stamp), _UTC)
        if name in _DATE_ONLY:
            # exchangelib sends a task's date as UTC midnight and may read it back as a datetime.
            return utc.date().isoformat()
        return utc.isoformat()
    if isinstance(value, dt.date):
        return value.isoformat()
    if isinstance(value, Decimal):
        return int(value)
    if isinstance(value, bool | int):
        return value
    if isinstance(value, str):
        return value.strip() or None
    if isinstance(value, list | tuple):
        out = []
        for v in value:
            if isinstance(v, EmailAddress):
                out.append((v.label, (v.email or "").strip().lower()))
            elif isinstance(v, PhoneNumber):
                out.append((v.label, (v.phone_number or "").strip()))
            elif isinstance(v, PhysicalAddress):
                out.append(
                    (v.label,)
                    + tuple(
                        (getattr(v, f) or "").strip()
                        for f in ("street", "city", "state", "country", "zipcode")
                    )
                )
            else:
                out.append(str(v).strip())
        out = sorted(o for o in out if o)
        return out or None
    return str(value)


def plain_owned(obj: Any, item_class: str) -> dict[str, Any]:
    """The owned fields of an exchangelib item as plain values (see above)."""
    values: dict[str, Any] = {}
    for name in OWNED_FIELDS[item_class]:
        raw = getattr(obj, name, None)
        if name == "body":
            head, _ = split_body(_body_text(raw))
            text = "\n".join(line.rstrip() for line in head.strip().splitlines())
            values[name] = text or None
        else:
            values[name] = _plain_value(name, raw)
    if not values.get("reminder_is_set"):
        # Without a reminder its time means nothing (and a task's ReminderDueBy cannot be cleared).
        values["reminder_is_set"] = False
        values.pop("reminder_minutes_before_start", None)
        values.pop("reminder_due_by", None)
    return values


def _read_only_fields(item_class: str) -> list[str]:
    fields = list(OWNED_FIELDS[item_class])
    if item_class == "calendar":
        # exchangelib turns an all-day start/end into dates in the item's own zone: read the zone too.
        fields += ["_start_timezone", "_end_timezone"]
    return fields


def _sweep_iter_ours(
    self: EwsSession, item_class: ItemClass, *, page_size: int = 1000
) -> Iterator[list[OwnedRef]]:
    folder = self.folder(item_class)
    # An all-day start is read as the UTC instant (is_all_day is not asked for, so exchangelib does
    # not convert it) and turned into the local date of the mailbox's zone here.
    fields = [RECORD_ID_FIELD, "changekey"] + (["start"] if item_class == "calendar" else [])
    query = folder.filter(Q(**{f"{RECORD_ID_FIELD}__exists": True})).only(*fields)
    size = max(1, page_size)
    tz = EWSTimeZone(self._mailbox.timezone)
    # exchangelib's QuerySet fetches an extended property with a GetItem per 100 items after the
    # FindItem ("complex field"), yet EWS returns it in FindItem itself (ExtendedFieldURI in the
    # ItemShape): call FindItem directly, so one request lists a page of keys and ChangeKeys.
    rows = query.folder_collection.find_items(
        query.q,
        shape=ID_ONLY,
        depth=SHALLOW,
        additional_fields={_findable(path) for path in query._additional_fields()},
        page_size=size,
    )

    def page() -> list[OwnedRef]:
        out: list[OwnedRef] = []
        for it in itertools.islice(rows, size):
            if isinstance(it, BaseException):
                raise it
            key = getattr(it, RECORD_ID_FIELD) or ""
            start = getattr(it, "start", None)
            day = ""
            if isinstance(start, dt.datetime):
                day = start.astimezone(tz).date().isoformat()
            if key:
                out.append(OwnedRef(key, it.id, it.changekey, day))
        return out

    seen: set[str] = set()
    while True:
        batch = self._call(page)
        if not batch:
            break
        seen.update(r.item_id for r in batch)
        yield batch
    if item_class == "task":
        # Wiedervorlagen the Graph backend wrote, in its To Do list (see ``todo_tasks``).
        extra = [
            OwnedRef(key, ref.item_id, ref.change_key)
            for key, refs in self.todo_tasks().items()
            for ref in refs
            if ref.item_id not in seen
        ]
        if extra:
            yield extra


def _findable(path: FieldPath) -> FieldPath:
    """exchangelib marks every extended property "complex" (GetItem only); EWS itself accepts an
    ExtendedFieldURI in FindItem's shape, so the record key is asked for there."""
    if not isinstance(path.field, ExtendedPropertyField):
        return path
    field = copy.copy(path.field)
    field.is_complex = False
    return FieldPath(field=field)


def _sweep_read_owned(
    self: EwsSession, item_class: ItemClass, refs: Sequence[ItemRef]
) -> list[OwnedValues | ExchangeError]:
    if not refs:
        return []
    folder = self.folder(item_class)
    out: list[OwnedValues | ExchangeError] = []
    for chunk in _chunks(list(refs), self._backend.chunk_size):
        ids = [(r.item_id, None) for r in chunk]
        got = self._call(
            lambda ids=ids: list(
                self._account.fetch(ids, folder=folder, only_fields=_read_only_fields(item_class))
            )
        )
        for res in got:
            out.append(self._fail(res) if isinstance(res, BaseException) else plain_owned(res, item_class))
    return out


def _sweep_owned_values(self: EwsSession, item: ExchangeItem) -> OwnedValues:
    return plain_owned(to_exchangelib(item, account=self._account), item.item_class)
