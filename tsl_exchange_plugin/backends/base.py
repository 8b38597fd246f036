"""The backend boundary: what the worker asks of Exchange, and the errors it can get back.

``ews/`` (the only package that imports exchangelib) and ``graph/`` (the only one that imports
httpx and msal) implement it; ``routing.py`` picks one per mailbox. The worker makes every retry
decision; a backend never sleeps and never retries a write on its own (a retried batch can
duplicate items).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from typing import Literal, Protocol
from urllib.parse import urlsplit

from ..mapping.items import ExchangeItem

ItemClass = Literal["contact", "calendar", "task"]
AuthType = Literal["auto", "ntlm", "basic"]


@dataclass(frozen=True)
class MailboxAccount:
    """How to reach one user's mailbox. ``password`` is decrypted only for the call."""

    mailbox: str  # host user id
    email: str  # primary SMTP address of the mailbox
    ews_url: str  # https://mail.kanzlei.de/EWS/Exchange.asmx
    username: str
    password: str = field(repr=False)
    auth_type: AuthType = "auto"
    timezone: str = "Europe/Berlin"
    verify_tls: bool = True  # False only where an administrator allowed a self-signed certificate
    timeout: float = 30.0
    # Microsoft 365 through Graph (``backend="graph"``): app-only credentials of the firm's app
    # registration; ``ews_url``, ``username`` and ``password`` are unused then.
    backend: Literal["ews", "graph"] = "ews"
    tenant_id: str = ""
    client_id: str = ""
    client_secret: str = field(default="", repr=False)
    client_certificate: str = field(default="", repr=False)  # PEM: private key and certificate
    graph_url: str = "https://graph.microsoft.com/v1.0"
    authority_host: str = "https://login.microsoftonline.com"

    @property
    def server(self) -> str:
        """host:port of the endpoint: the unit for the in-flight request limit."""
        parts = urlsplit(self.graph_url if self.backend == "graph" else self.ews_url)
        return parts.netloc.lower()


@dataclass(frozen=True)
class ItemRef:
    item_id: str
    change_key: str


@dataclass(frozen=True)
class Written:
    """A successful create or update."""

    item_id: str
    change_key: str


# ----------------------------------------------------------------------------- errors


class ExchangeError(Exception):
    """Base of every backend error. ``str(err)`` is plain German for the status view;
    it never contains a password."""


PauseScope = Literal["", "mailbox", "server"]


class TransientError(ExchangeError):
    """Try again later; ``back_off`` seconds if the server said so (BackOffMilliseconds, Retry-After).

    ``pause`` says what the failure concerns, and so what waits: "mailbox" (the server asked
    this mailbox to back off: ErrorServerBusy, HTTP 429/503 with Retry-After), "server" (it
    could not be reached or failed without a hint: connection refused, timeout, 5xx), or ""
    (this item only)."""

    def __init__(self, message: str, back_off: float | None = None, *, pause: PauseScope = ""):
        super().__init__(message)
        self.back_off = back_off
        self.pause = pause


class Resting(TransientError):
    """Nothing was sent: the mailbox or its server is paused (``pause`` says which) for
    ``back_off`` more seconds. Not a failure of anything; the work waits for the pause."""


class OutcomeUnknown(TransientError):
    """A write may or may not have happened (timeout, dropped connection, busy inside a batch).
    Look the record keys up before creating again."""


class AuthFailed(ExchangeError):
    """Wrong credentials or locked account: park the mailbox until its credentials change."""


class ConfigError(ExchangeError):
    """Wrong URL, redirect, TLS problem, mailbox or folder not found: the administrator must act."""


class ItemNotFound(ExchangeError):
    """The item is gone from the mailbox (deleted on the phone)."""


class Conflict(ExchangeError):
    """Stale ChangeKey (ErrorIrresolvableConflict): refresh and retry."""


class ItemRejected(ExchangeError):
    """The server refused this item (invalid value, quota): permanent for this snapshot."""


class RequestRejected(ExchangeError):
    """The server refused a whole request for its content (ErrorSchemaValidation): nothing of it
    was processed, so nothing was written. Not a transport error and never "outcome unknown":
    sending the same items again fails the same way. The caller splits the batch to find the
    item that caused it (one item alone refused so is that item's permanent rejection)."""


PerItem = Written | ExchangeError


class MailboxSession(Protocol):
    """Operations on one mailbox. Batch methods return one result per input, in order;
    an error that concerns the whole request (auth, transport) is raised instead."""

    def create(self, items: Sequence[ExchangeItem]) -> list[PerItem]:
        """Create items, stamping each with its record key (extended property)."""

    def update(self, changes: Sequence[tuple[ItemRef, ExchangeItem]]) -> list[PerItem]:
        """Overwrite every field the plugin owns (clearing the empty ones)."""

    def delete(self, refs: Sequence[ItemRef]) -> list[ExchangeError | None]:
        """Hard-delete; ItemNotFound for one already gone is reported, not raised."""

    def find_by_keys(self, item_class: ItemClass, record_keys: Sequence[str]) -> dict[str, list[ItemRef]]:
        """Items carrying our property with one of these keys, in the target folder."""

    def find_all_ours(self, item_class: ItemClass) -> dict[str, list[ItemRef]]:
        """Every item in the target folder that carries our property, by key."""

    def folder_count(self, item_class: ItemClass) -> int:
        """How many items the target folder holds, ours or not (opens the folder; the cleanup
        guard compares this with what it would delete)."""

    def close(self) -> None: ...


class ExchangeBackend(Protocol):
    def session(self, account: MailboxAccount) -> MailboxSession: ...


class ServerSlots(Protocol):
    """Request slots per Exchange server shared by every process on one queue (the outbox
    stores implement it): the per-server limit across worker processes."""

    def acquire_server_slot(
        self, server: str, limit: int, holder: str, *, lease_seconds: float = 120.0, now: float | None = None
    ) -> int | None: ...

    def release_server_slot(self, server: str, slot: int, holder: str) -> None: ...


class RequestSlot(Protocol):
    """One request's turn at a mailbox (see ``RequestGuard``)."""

    def check(self) -> None:
        """Raise ``Resting`` if the mailbox or its server is paused: the request is not sent."""

    def answered(self) -> None:
        """The server answered (the request went through)."""

    def failed(self, error: ExchangeError) -> None:
        """The request failed with ``error``; a pausing error takes effect before the next request."""


class RequestGuard(Protocol):
    """Given to a session by the worker: every request to the mailbox runs inside ``request()``.

    The guard lets one request at a time go to a mailbox, so an answer that pauses the
    mailbox (or its server) is known before the next request starts."""

    def request(self) -> AbstractContextManager[RequestSlot]: ...


# ----------------------------------------------------------------------------- reconcile sweep and fidelity


@dataclass(frozen=True)
class OwnedRef:
    """One item of ours as a paged FindItem lists it: the record key, its ids and (calendar
    only) the local all-day date the deadline parity report compares with the host's."""

    record_key: str
    item_id: str
    change_key: str
    start_date: str = ""  # ISO date of an all-day calendar item in its own zone, else ""


OwnedValues = dict[str, object]
"""Field name -> a plain, comparable value of a field the plugin owns (see ``MailboxSession.owned_values``)."""


class SweepSession(Protocol):
    """What the reconcile sweep and the server fidelity probe need besides ``MailboxSession``."""

    def iter_ours(self, item_class: ItemClass, *, page_size: int = 1000) -> Iterator[list[OwnedRef]]:
        """Every item of ours in the target folder, one page (one FindItem) at a time, reading
        only the record key and ChangeKey (calendar: also start/end/all-day)."""

    def read_owned(self, item_class: ItemClass, refs: Sequence[ItemRef]) -> list[OwnedValues | ExchangeError]:
        """The fields the plugin owns of these items as they are in the mailbox now (GetItem)."""

    def owned_values(self, item: ExchangeItem) -> OwnedValues:
        """The same plain values for what the plugin would write, so both can be compared."""

    def read_bodies(self, item_class: ItemClass, refs: Sequence[ItemRef]) -> list[str | ExchangeError]:
        """The current bodies as plain text (the fidelity workaround keeps the user's notes)."""
