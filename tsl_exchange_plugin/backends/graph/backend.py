"""The Graph backend: ``ExchangeBackend`` for Microsoft 365 mailboxes (httpx + msal).

Why httpx and msal rather than Microsoft's Graph SDK: the SDK is asynchronous, large, and retries
on its own (its middleware repeats throttled and failed requests), while the worker must own every
retry decision (a repeated create can duplicate items) and the pipeline is synchronous. httpx is
small, synchronous, pools connections, and lets the backend build ``$batch`` requests and read
``Retry-After`` itself; msal is Microsoft's own token library and the only piece of auth we need.
Both run against the local Graph sandbox in tests.

How it behaves (facts in ``shared/graph-reference/NOTES.md``):

- **Batches.** Every operation goes out as JSON ``$batch`` requests of up to 20 inner requests,
  correlated by id (answers come back in any order). A batch answers 200 even when items failed;
  each inner answer is translated on its own.
- **Politeness.** At most 4 requests per mailbox in flight, counted across all sessions of the
  backend; a batch holds one slot per inner request, at most 4, because Graph runs a batch's
  Outlook requests 4 at a time. With several worker processes on one queue (``shared_slots``)
  each request also holds the mailbox's slot in the queue's store, one request per mailbox at a
  time across processes, so the sweep of the host and the pushes of worker processes never add
  up to more than Exchange Online's 4. A budget of 10,000 requests per 10 minutes per mailbox
  is kept before sending: when it is used up, the mailbox rests for the wait. In the worker,
  every request goes through the worker's ``RequestGuard`` (as over EWS): one at a time per
  mailbox, and none while the mailbox or the server rests.
- **Back-off** (the same error classes as EWS, so the worker decides alike): 429, and 503 with
  ``Retry-After``, outer or inner, pause that mailbox for the time asked (``pause="mailbox"``);
  a connection that fails, a timeout and a 5xx answer to the whole request pause the server
  (``pause="server"``: every Graph mailbox waits, one probe reopens it). The backend never
  waits or retries a write itself.
- **Unknown outcomes.** A create whose answer is lost (timeout, dropped connection, 500/504)
  raises or reports ``OutcomeUnknown``: the worker looks the keys up before creating again. Events
  also carry a ``transactionId``, so Graph itself drops a repeated create.
- **Identity.** See ``wire``: the same extended property as over EWS; To Do tasks carry the key as
  the linked resource's ``externalId``. Stored ids from the EWS backend are not valid Graph ids;
  Graph answers ``ErrorInvalidIdMalformed`` for them, reported as ``ItemNotFound`` so the worker
  finds the item by key and adopts it.
- **Errors.** 401 asks msal for a fresh token once, then parks (``AuthFailed``; a wrong or
  expired credential or missing consent is found at the token and parks every mailbox of that
  app, each on its first request); 403 ``ErrorAccessDenied`` (RBAC for Applications, access
  policy) or a mailbox without Exchange Online is a ``ConfigError`` for that mailbox only. A
  request Graph refuses for its content (400) is ``RequestRejected``. All messages are German
  and never contain a secret.
"""

from __future__ import annotations

import os
import ssl
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

import httpx

from ... import logredact
from ...mapping.common import merge_body
from ...mapping.context import is_known_zone
from ...mapping.items import CalendarEntry, ExchangeItem, TaskEntry
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
    PerItem,
    RequestGuard,
    RequestRejected,
    ServerSlots,
    TransientError,
    Written,
)
from ..slots import ServerLimit
from . import owned, sweep, wire
from . import series as gseries
from .auth import TokenSource

BATCH_LIMIT = 20
MAILBOX_CONCURRENCY = 4
BUDGET = (10_000, 600.0)  # requests per seconds, per (app, mailbox)
QUOTA_BACK_OFF = 3600.0
DEFAULT_BACK_OFF = 30.0
PAGE = 100
CA_FILE_ENV = "TSL_GRAPH_CA_FILE"
PREFER = 'IdType="ImmutableId", outlook.timezone="UTC", outlook.body-content-type="text"'


@dataclass
class Answer:
    status: int
    headers: dict[str, str]
    body: Any


class _Slots:
    """A counting semaphore whose holders take several slots at once (a batch takes up to 4)."""

    def __init__(self, size: int):
        self.size = size
        self._free = size
        self._cv = threading.Condition()

    def acquire(self, n: int) -> None:
        n = min(n, self.size)
        with self._cv:
            self._cv.wait_for(lambda: self._free >= n)
            self._free -= n

    def release(self, n: int) -> None:
        n = min(n, self.size)
        with self._cv:
            self._free += n
            self._cv.notify_all()

    @contextmanager
    def taking(self, n: int) -> Iterator[None]:
        self.acquire(n)
        try:
            yield
        finally:
            self.release(n)


class _Budget:
    """Requests sent to one mailbox in the sliding window."""

    def __init__(self, limit: int, window: float, clock: Callable[[], float]) -> None:
        self.limit, self.window, self.clock = limit, window, clock
        self._sent: deque[float] = deque()
        self._lock = threading.Lock()

    def take(self, n: int) -> None:
        now = self.clock()
        with self._lock:
            while self._sent and self._sent[0] <= now - self.window:
                self._sent.popleft()
            if len(self._sent) + n > self.limit:
                wait = (self._sent[0] + self.window - now) if self._sent else self.window
                raise TransientError(
                    "Das Anfragekontingent von Microsoft 365 für dieses Postfach (10.000 Anfragen in "
                    "10 Minuten) ist ausgeschöpft; es geht danach automatisch weiter.",
                    max(1.0, wait),
                    pause="mailbox",
                )
            self._sent.extend([now] * n)


class GraphBackend:
    """Sessions on Microsoft 365 mailboxes. One per process; sessions share its limits and tokens."""

    def __init__(
        self,
        *,
        verify: bool | str | None = None,
        batch_size: int = BATCH_LIMIT,
        concurrency: int = MAILBOX_CONCURRENCY,
        budget: tuple[int, float] = BUDGET,
        clock: Callable[[], float] = time.monotonic,
        todo_list: str = wire.TODO_LIST_NAME,
        shared_slots: ServerSlots | None = None,
    ) -> None:
        """``shared_slots``: the queue's store, when several processes push (see the module doc)."""
        if verify is None:
            # A firm behind a TLS-inspecting proxy (and the test sandbox) names its CA bundle here.
            verify = os.environ.get(CA_FILE_ENV) or True
        self.verify = verify
        self.batch_size = max(1, min(BATCH_LIMIT, batch_size))
        self.concurrency = concurrency
        self.budget = budget
        self.clock = clock
        self.todo_list = todo_list
        self.tokens = TokenSource(verify=verify)
        # Item class -> named subfolder (the firm's "Eigener Unterordner"), as over EWS: contacts in
        # a child folder of the default contacts folder, appointments and deadlines in a calendar
        # of that name (a subfolder of the Calendar folder), Wiedervorlagen in the To Do list of
        # that name instead of ours. Empty: the default folders and our To Do list.
        self.target_folders: dict[str, str] = {}
        self._lock = threading.Lock()
        self._folders_lock = threading.Lock()
        self._slots: dict[str, _Slots] = {}
        self._budgets: dict[str, _Budget] = {}
        self.shared_slots = shared_slots
        self._shared: dict[str, ServerLimit] = {}
        self._lists_lock = threading.Lock()
        self._lists: dict[str, tuple[str, str]] = {}  # app|mailbox|name -> (our To Do list, the default list)
        self._client = httpx.Client(
            verify=ssl.create_default_context(cafile=verify) if isinstance(verify, str) else verify,
            limits=httpx.Limits(max_connections=64, max_keepalive_connections=32),
        )

    def slots(self, account: MailboxAccount) -> _Slots:
        key = f"{account.client_id}|{account.email.lower()}"
        with self._lock:
            return self._slots.setdefault(key, _Slots(self.concurrency))

    def shared_limit(self, account: MailboxAccount) -> ServerLimit | None:
        """The mailbox's slot in the queue's store (None in a single process): one request per
        mailbox at a time across processes; a $batch may count as 4 at Exchange Online."""
        shared = self.shared_slots
        if shared is None:
            return None
        key = f"graph:{account.client_id}|{account.email.lower()}"
        with self._lock:
            limit = self._shared.get(key)
            if limit is None or limit.shared is not shared:
                limit = self._shared[key] = ServerLimit(
                    key, 1, shared, label=f"Das Microsoft-365-Postfach {account.email}"
                )
            return limit

    def budget_of(self, account: MailboxAccount) -> _Budget:
        key = f"{account.client_id}|{account.email.lower()}"
        with self._lock:
            if key not in self._budgets:
                self._budgets[key] = _Budget(*self.budget, self.clock)
            return self._budgets[key]

    def session(self, account: MailboxAccount) -> GraphSession:
        if account.backend != "graph":
            raise ConfigError("Dieses Postfach ist nicht für Microsoft Graph eingerichtet.")
        if account.timezone and not is_known_zone(account.timezone):
            # The mailbox waits for a corrected zone (as over EWS, whose session needs the zone):
            # failing each record instead would drop them until they are saved again.
            raise ConfigError(
                f"Unbekannte Zeitzone {account.timezone!r} für {account.email}. Bitte im Benutzer-Editor "
                "(Exchange) eine gültige Zeitzone eintragen, z. B. Europe/Berlin."
            )
        return GraphSession(self, account)

    def close(self) -> None:
        self._client.close()


def _error_of(body: Any) -> tuple[str, str]:
    err = (body or {}).get("error") if isinstance(body, dict) else None
    if not isinstance(err, dict):
        return "", ""
    return str(err.get("code") or ""), str(err.get("message") or "")


def _retry_after(headers: dict[str, str]) -> float | None:
    for k, v in (headers or {}).items():
        if k.lower() == "retry-after":
            try:
                return max(0.0, float(v))
            except ValueError:
                return None
    return None


class GraphSession:
    """Operations on one mailbox; serves one worker lane at a time."""

    def __init__(self, backend: GraphBackend, account: MailboxAccount):
        self._backend = backend
        self._account = account
        self._slots = backend.slots(account)
        self._budget = backend.budget_of(account)
        self._user = "/users/" + quote(account.email, safe="@.")
        self._folders: dict[tuple[str, str], str] = {}  # (item class, subfolder name) -> folder id
        # Set by the worker: paces the requests to this mailbox and holds them while it or its
        # server rests (see worker/runner.py). None: every request goes (tools, "Testen", the sweep).
        self.guard: RequestGuard | None = None
        if account.client_secret:
            # msal and httpx log at DEBUG; the secret is masked wherever it might appear.
            logredact.remember(account.client_id, account.client_secret)

    # ------------------------------------------------------------------ plumbing
    def _headers(self, token: str) -> dict[str, str]:
        return {
            "Authorization": f"Bearer {token}",
            "Content-Type": "application/json",
            "client-request-id": str(uuid.uuid4()),
        }

    def _post_batch(
        self, requests: list[dict[str, Any]], *, writing: bool, creating: bool
    ) -> dict[str, Answer]:
        """One $batch HTTP request, inside the worker's guard; whole-request errors are raised.

        The guard learns the outcome before the next request to this mailbox may start: a
        throttled answer (outer, or an inner 429) pauses the mailbox, a failed connection or a
        5xx the server."""
        self._budget.take(len(requests))
        guard = self.guard
        turns.pause()  # waiting for the mailbox's turn or the server is waiting: another lane may build
        try:
            with guard.request() if guard is not None else nullcontext() as slot:
                if slot is not None:
                    slot.check()  # the mailbox or the server rests: nothing is sent
                try:
                    answers = self._send(requests, writing=writing, creating=creating)
                except ExchangeError as err:
                    if slot is not None:
                        slot.failed(err)
                    raise
                if slot is not None:
                    busy = self._throttled(answers, writing=writing, creating=creating)
                    if busy is not None:
                        slot.failed(busy)  # an inner 429: the next request waits for the pause
                    else:
                        slot.answered()
                return answers
        finally:
            turns.resume()

    def _send(self, requests: list[dict[str, Any]], *, writing: bool, creating: bool) -> dict[str, Answer]:
        n = len(requests)
        refreshed = False
        shared = self._backend.shared_limit(self._account)
        while True:
            token = self._backend.tokens.token(self._account)
            with self._slots.taking(n), shared if shared is not None else nullcontext():
                try:
                    resp = self._backend._client.post(
                        self._account.graph_url.rstrip("/") + "/$batch",
                        json={"requests": requests},
                        headers=self._headers(token),
                        timeout=self._account.timeout,
                    )
                except httpx.TimeoutException:
                    raise self._lost(writing, creating, "Zeitüberschreitung") from None
                except (httpx.ConnectError, httpx.ProxyError) as exc:
                    if "CERTIFICATE_VERIFY_FAILED" in str(exc) or "certificate verify failed" in str(exc):
                        raise ConfigError(
                            "Das TLS-Zertifikat des Microsoft-Graph-Endpunkts ist nicht vertrauenswürdig. "
                            f"Bitte die Graph-Adresse prüfen oder die Zertifizierungsstelle mit {CA_FILE_ENV} "
                            "angeben (TLS-prüfender Proxy)."
                        ) from None
                    raise TransientError(
                        "Microsoft 365 ist nicht erreichbar (Verbindung abgelehnt).", pause="server"
                    ) from None
                except httpx.TransportError as exc:
                    raise self._lost(
                        writing, creating, f"Verbindung abgebrochen: {type(exc).__name__}"
                    ) from None
            if resp.status_code == 401 and not refreshed:
                refreshed = True  # an expired or revoked token: ask msal once more, then give up
                self._backend.tokens.forget(self._account)
                continue
            break
        self._last_date = resp.headers.get("date")
        if resp.status_code == 200:
            try:
                items = resp.json()["responses"]
                return {
                    str(i["id"]): Answer(int(i["status"]), dict(i.get("headers") or {}), i.get("body"))
                    for i in items
                }
            except (ValueError, KeyError, TypeError):
                raise self._lost(writing, creating, "unlesbare Antwort") from None
        body = None
        try:
            body = resp.json()
        except ValueError:
            pass
        raise self._whole(Answer(resp.status_code, dict(resp.headers), body), writing, creating)

    def _throttled(
        self, answers: dict[str, Answer], *, writing: bool, creating: bool
    ) -> TransientError | None:
        """The pause an answer of 200 still asks for: an inner request throttled for this mailbox
        (the longest Retry-After of them), else None."""
        busy: TransientError | None = None
        for ans in answers.values():
            if ans.status not in (429, 503):
                continue
            err = self._item_error(ans, writing=writing, creating=creating)
            if isinstance(err, TransientError) and err.pause == "mailbox":
                if busy is None or (err.back_off or 0.0) > (busy.back_off or 0.0):
                    busy = err
        return busy

    def _lost(self, writing: bool, creating: bool, why: str) -> ExchangeError:
        # Nothing came back from the whole host: it waits as a server (one probe reopens it).
        if creating or writing:
            return OutcomeUnknown(
                f"Antwort von Microsoft 365 verloren ({why}); der Stand wird geprüft.", pause="server"
            )
        return TransientError(f"Microsoft 365 antwortet nicht ({why}).", pause="server")

    def _whole(self, ans: Answer, writing: bool, creating: bool) -> ExchangeError:
        """An error that concerns the whole mailbox or request."""
        code, _ = _error_of(ans.body)
        status = ans.status
        if status == 401:
            return AuthFailed(
                "Microsoft 365 lehnt das Zugriffstoken ab (InvalidAuthenticationToken). Bitte die App-Zugangsdaten "
                "unter Schnittstellen prüfen."
            )
        if status == 403 and code in ("ErrorAccessDenied", "Authorization_RequestDenied", "AccessDenied"):
            return ConfigError(
                f"Die App darf nicht auf das Postfach {self._account.email} zugreifen ({code}). Ein Exchange-"
                "Administrator muss das Postfach in den Bereich der App aufnehmen (RBAC für Anwendungen oder "
                "Application Access Policy)."
            )
        if status == 404 and code in ("MailboxNotEnabledForRESTAPI", "ErrorInvalidUser", "ResourceNotFound"):
            return ConfigError(
                f"Für {self._account.email} gibt es kein Exchange-Online-Postfach ({code}): nicht lizenziert, "
                "gelöscht oder noch lokal (Hybrid). Bitte die Postfachadresse prüfen oder EWS verwenden."
            )
        busy = self._busy(ans, writing=writing, creating=creating, inner=False)
        if busy is not None:
            return busy
        if status in (400, 413):
            # Refused for its content before anything of it was processed: the caller splits it.
            return RequestRejected(f"Microsoft 365 hat die Anfrage als ungültig abgelehnt ({status} {code}).")
        return ConfigError(f"Microsoft 365 lehnt die Anfrage ab ({status} {code}).")

    def _busy(self, ans: Answer, *, writing: bool, creating: bool, inner: bool) -> TransientError | None:
        """429 and 5xx: what waits, and how long.

        429, and 503 with Retry-After, are Exchange Online asking this mailbox to slow down: the
        mailbox rests for the time asked (the worker's busy back-off when none is named). Any
        other 5xx to the whole request is the service failing: the server rests (every Graph
        mailbox, one probe reopens it). Inside a $batch a 5xx concerns that item; 502/503 there
        still mean the mailbox's backend is unavailable, so the mailbox rests."""
        status = ans.status
        if status != 429 and status < 500:
            return None
        back_off = _retry_after(ans.headers)
        if status == 429:
            return TransientError(
                "Microsoft 365 drosselt die Anfragen für dieses Postfach (429)"
                + (f"; weiter in {back_off:g} s." if back_off else "."),
                back_off,
                pause="mailbox",
            )
        text = f"Microsoft 365 ist vorübergehend nicht verfügbar ({status})."
        if status == 503 and back_off is not None:
            return TransientError(text, back_off, pause="mailbox")
        if inner:
            if status in (502, 503):
                return TransientError(text, back_off, pause="mailbox")
            if writing or creating:
                return OutcomeUnknown(text, back_off)
            return TransientError(text, back_off)
        if status in (500, 504) and (writing or creating):
            return OutcomeUnknown(text, back_off, pause="server")
        return TransientError(text, back_off, pause="server")

    def _item_error(self, ans: Answer, *, writing: bool, creating: bool) -> ExchangeError:
        code, message = _error_of(ans.body)
        status = ans.status
        if status == 404 and code in ("ErrorItemNotFound", "ItemNotFound", "ResourceNotFound", ""):
            return ItemNotFound(
                "Das Element ist im Postfach nicht mehr vorhanden (z. B. am Telefon gelöscht)."
            )
        if code in ("ErrorInvalidIdMalformed", "RequestBroker--ParseUri"):
            # An id from the other backend (EWS) or an older format: the item is looked up by key.
            return ItemNotFound(
                "Die gespeicherte Element-ID gilt in Microsoft Graph nicht; das Element wird gesucht."
            )
        if status in (409, 412) or code in ("ErrorIrresolvableConflict", "ErrorDuplicateTransactionId"):
            return Conflict(
                f"Das Element wurde inzwischen geändert ({code or status}); es wird neu abgeglichen."
            )
        if code in ("ErrorQuotaExceeded", "QuotaExceededException") or status == 507:
            return TransientError(
                "Das Postfach ist voll (Speicherkontingent überschritten); neuer Versuch später.",
                QUOTA_BACK_OFF,
            )
        if status in (401, 403) or (
            status == 404 and code in ("MailboxNotEnabledForRESTAPI", "ErrorInvalidUser")
        ):
            return self._whole(ans, writing, creating)
        if status == 424:
            return TransientError("Eine vorausgehende Anfrage im Stapel ist fehlgeschlagen.")
        busy = self._busy(ans, writing=writing, creating=creating, inner=True)
        if busy is not None:
            return busy
        if status >= 400:
            return ItemRejected(f"Microsoft 365 lehnt das Element ab ({code or status}): {message[:200]}")
        return ItemRejected(f"Unerwartete Antwort von Microsoft 365 ({status}).")

    def _run(
        self, requests: list[dict[str, Any]], *, writing: bool = False, creating: bool = False
    ) -> list[Answer | ExchangeError]:
        """Send requests in $batch chunks; one answer or per-item error per request, in order.

        A whole-request error is raised; if an earlier chunk of a create already went through,
        it becomes OutcomeUnknown (its ids die with the exception)."""
        out: list[Answer | ExchangeError] = []
        size = self._backend.batch_size
        for start in range(0, len(requests), size):
            chunk = requests[start : start + size]
            for n, r in enumerate(chunk):
                r["id"] = str(n + 1)
            try:
                answers = self._post_batch(chunk, writing=writing, creating=creating)
            except ExchangeError as err:
                if creating and start > 0 and not isinstance(err, OutcomeUnknown):
                    raise OutcomeUnknown(
                        f"{err} Ein Teil des Stapels wurde bereits geschrieben.",
                        getattr(err, "back_off", None),
                        pause=getattr(err, "pause", ""),
                    ) from None
                raise
            results: list[Answer | ExchangeError] = []
            for r in chunk:
                ans = answers.get(r["id"])
                if ans is None:
                    results.append(
                        OutcomeUnknown("Microsoft 365 lieferte keine Antwort für ein Element.")
                        if (creating or writing)
                        else TransientError("Antwort fehlt.")
                    )
                elif 200 <= ans.status < 300:
                    results.append(ans)
                else:
                    results.append(self._item_error(ans, writing=writing, creating=creating))
            # Every item refused for the same whole-mailbox reason: raise it, so the mailbox is parked.
            whole = [e for e in results if isinstance(e, (AuthFailed, ConfigError))]
            if whole and len(whole) == len(results):
                raise whole[0]
            out += results
        return out

    @staticmethod
    def _req(method: str, url: str, body: Any = None) -> dict[str, Any]:
        r: dict[str, Any] = {"id": "", "method": method, "url": url, "headers": {"Prefer": PREFER}}
        if body is not None:
            r["body"] = body
            r["headers"]["Content-Type"] = "application/json"
        return r

    # ------------------------------------------------------------------ folders
    def _collection(self, item_class: str) -> str:
        """Where items of the class are created and looked for (the named subfolder, if any)."""
        if item_class == "contact":
            folder = self._subfolder("contact")
            if folder:
                return f"{self._user}/contactFolders/{quote(folder, safe='=-_')}/contacts"
            return f"{self._user}/contacts"
        if item_class == "calendar":
            folder = self._subfolder("calendar")
            if folder:
                return f"{self._user}/calendars/{quote(folder, safe='=-_')}/events"
            return f"{self._user}/events"
        return self._tasks_of(self._todo_lists()[0])

    def calendar_view_url(self) -> str:
        """The calendarView of the calendar our appointments go to (occurrences in a window)."""
        folder = self._subfolder("calendar")
        if folder:
            return f"{self._user}/calendars/{quote(folder, safe='=-_')}/calendarView"
        return f"{self._user}/calendarView"

    def _addressed(self, item_class: str) -> str:
        """Where one item is addressed by its id: mailbox-wide, whichever folder holds it."""
        return f"{self._user}/contacts" if item_class == "contact" else f"{self._user}/events"

    def _subfolder(self, item_class: str) -> str:
        """The id of the firm's named subfolder for the class ("" for the default folder), found by
        its name or created, once per session. A folder the EWS backend made is the same folder."""
        name = self._backend.target_folders.get(item_class, "")
        if not name:
            return ""
        found = self._folders.get((item_class, name))
        if found:
            return found
        # One lane resolves (and maybe creates) the folder while the others wait, outside the turns.
        with turns.sitting_out(), self._backend._folders_lock:
            found = self._find_folder(item_class, name)
            if not found:
                found = self._make_folder(item_class, name)
        self._folders[(item_class, name)] = found
        return found

    def _folders_url(self, item_class: str) -> str:
        # Contact folders: the children of the default contacts folder. Calendars: those of the
        # default calendar group, where Exchange Online shows the Calendar folder's subfolders.
        return f"{self._user}/contactFolders" if item_class == "contact" else f"{self._user}/calendars"

    def _find_folder(self, item_class: str, name: str) -> str:
        label = "displayName" if item_class == "contact" else "name"
        (folders,) = self._pages([f"{self._folders_url(item_class)}?$top={PAGE}"])
        # Exchange compares folder names without regard to case (as the EWS backend finds them).
        matches = [
            f
            for f in folders
            if str(f.get(label) or "").casefold() == name.casefold() and not f.get("isDefaultCalendar")
        ]
        matches.sort(key=lambda f: f.get(label) != name)  # the exact spelling first
        return str(matches[0]["id"]) if matches else ""

    def _make_folder(self, item_class: str, name: str) -> str:
        label = "displayName" if item_class == "contact" else "name"
        (ans,) = self._run([self._req("POST", self._folders_url(item_class), {label: name})], writing=True)
        if isinstance(ans, Conflict):
            found = self._find_folder(item_class, name)  # created meanwhile by another process
            if found:
                return found
        if isinstance(ans, ExchangeError):
            raise ans
        return str(ans.body["id"])

    def _tasks_of(self, list_id: str) -> str:
        return f"{self._user}/todo/lists/{quote(list_id, safe='=-_')}/tasks"

    def _todo_lists(self) -> tuple[str, str]:
        """(our To Do list, the mailbox's default list) in this mailbox; ours is created on first use
        and found again by its name."""
        key = self._lists_key()
        with self._backend._lock:
            found = self._backend._lists.get(key)
        if found:
            return found
        # One lane resolves (and maybe creates) the list while the other waits, outside the turns
        # (as EWS resolves folders): two lanes must not create two lists of the same name.
        with turns.sitting_out(), self._backend._lists_lock:
            with self._backend._lock:
                found = self._backend._lists.get(key)
            return found or self._resolve_lists(key)

    def _list_name(self) -> str:
        # The firm's named subfolder, when it has one, is the To Do list the Wiedervorlagen go to:
        # a subfolder of Tasks that the EWS backend made shows in To Do as a list of that name.
        return self._backend.target_folders.get("task") or self._backend.todo_list

    def _lists_key(self) -> str:
        return f"{self._account.client_id}|{self._account.email.lower()}|{self._list_name()}"

    def forget_lists(self) -> None:
        """Our To Do list is gone (deleted on a phone): look it up or create it again next time."""
        with self._backend._lock:
            self._backend._lists.pop(self._lists_key(), None)

    def _resolve_lists(self, key: str) -> tuple[str, str]:
        name = self._list_name()
        (ans,) = self._run([self._req("GET", f"{self._user}/todo/lists?$top={PAGE}")])
        if isinstance(ans, ExchangeError):
            raise ans
        values = (ans.body or {}).get("value", [])
        default = next((str(v["id"]) for v in values if v.get("wellknownListName") == "defaultList"), "")
        lists = [
            v for v in values if v.get("displayName") == name and v.get("wellknownListName") != "defaultList"
        ]
        if lists:
            list_id = str(lists[0]["id"])
        else:
            (ans,) = self._run(
                [self._req("POST", f"{self._user}/todo/lists", {"displayName": name})], writing=True
            )
            if isinstance(ans, ExchangeError):
                raise ans
            list_id = str(ans.body["id"])
        with self._backend._lock:
            self._backend._lists[key] = (list_id, default)
        return list_id, default

    # ------------------------------------------------------------------ MailboxSession
    # The ids this backend hands out name their collection ("contact:<rest id>"), because a Graph
    # item is addressed through it (/contacts/{id}, /events/{id}, /todo/lists/{l}/tasks/{id}) and
    # a delete gets only the id. A task's id also names its list ("task:<list id>:<task id>"). An id
    # without such a prefix came from the EWS backend.
    def _id(self, item_class: str, data: dict[str, Any], list_id: str = "") -> str:
        if item_class == "task":
            return f"task:{list_id or self._todo_lists()[0]}:{data['id']}"
        return f"{item_class}:{data['id']}"

    def _written(self, item_class: str, body: dict[str, Any], list_id: str = "") -> Written:
        return Written(
            self._id(item_class, body, list_id), str(body.get("changeKey") or body.get("@odata.etag") or "")
        )

    def _ref(self, item_class: str, data: dict[str, Any], list_id: str = "") -> ItemRef:
        return ItemRef(
            self._id(item_class, data, list_id), str(data.get("changeKey") or data.get("@odata.etag") or "")
        )

    def create(self, items: Sequence[ExchangeItem]) -> list[PerItem]:
        results: list[PerItem | None] = [None] * len(items)
        reqs, owners = [], []
        for pos, item in enumerate(items):
            try:
                body = wire.create_body(item)
                url = self._collection(item.item_class)
            except ExchangeError:
                raise
            except Exception as exc:
                results[pos] = ItemRejected(f"Element kann nicht erzeugt werden: {exc}")
                continue
            reqs.append(self._req("POST", url, body))
            owners.append(pos)
        for pos, ans in zip(owners, self._run(reqs, writing=True, creating=True), strict=True):
            if isinstance(ans, ItemNotFound) and items[pos].item_class == "task":
                # The list itself is gone: found or created again on the next try.
                self.forget_lists()
                ans = TransientError("Die To-Do-Liste im Postfach fehlt; sie wird neu angelegt.")
            elif isinstance(ans, ItemNotFound) and self._folders:
                # The named subfolder was deleted (in Outlook, on a phone): found or made again.
                self._folders.clear()
                ans = TransientError("Der Unterordner im Postfach fehlt; er wird neu angelegt.")
            results[pos] = (
                ans if isinstance(ans, ExchangeError) else self._written(items[pos].item_class, ans.body)
            )
        # A new series has no exceptions yet: only those with the host's are read back.
        self._series_instances(
            [
                (pos, item)
                for pos, item in enumerate(items)
                if isinstance(item, CalendarEntry) and item.recurrence is not None and item.recurrence.edits
            ],
            results,
        )
        return [r if r is not None else ItemRejected("Element wurde nicht verarbeitet.") for r in results]

    def _own_url(self, item_id: str) -> str:
        """The URL of an item this session has just written (its id is always a Graph id)."""
        url = self._item_url(item_id)
        if url is None:
            raise wire.foreign_id()
        return url

    def _item_url(self, item_id: str) -> str | None:
        """The URL of one of our items, or None for an id that is not one of this backend's."""
        item_class, sep, rest = item_id.partition(":")
        if not sep or item_class not in ("contact", "calendar", "task") or not rest:
            return None
        if item_class == "task":
            list_id, sep, task_id = rest.partition(":")
            if not sep or not list_id or not task_id:
                return None
            return f"{self._tasks_of(list_id)}/{quote(task_id, safe='=-_')}"
        return f"{self._addressed(item_class)}/{quote(rest, safe='=-_')}"

    def update(self, changes: Sequence[tuple[ItemRef, ExchangeItem]]) -> list[PerItem]:
        if not changes:
            return []
        results: list[PerItem | None] = [None] * len(changes)
        # 1. Current bodies, so that what the user wrote below the marker is kept.
        select = {"contact": "personalNotes", "calendar": "body", "task": "body"}
        urls = [self._item_url(ref.item_id) for ref, _ in changes]
        gets = [
            self._req("GET", f"{url}?$select={select[item.item_class]}")
            for url, (_, item) in zip(urls, changes, strict=True)
            if url is not None
        ]
        current_bodies = iter(self._run(gets))
        patches, owners = [], []
        written: dict[int, ExchangeItem] = {}
        for pos, ((_, item), url) in enumerate(zip(changes, urls, strict=True)):
            if url is None:
                results[pos] = wire.foreign_id()
                continue
            cur = next(current_bodies)
            if isinstance(cur, ExchangeError):
                results[pos] = cur
                continue
            try:
                current = wire.body_text(item.item_class, cur.body or {})
                merged = _with_body(item, merge_body(item.body, current))
                patch = wire.fields(merged)
            except Exception as exc:
                results[pos] = ItemRejected(f"Element kann nicht geschrieben werden: {exc}")
                continue
            if isinstance(item, TaskEntry) and item.reminder_at is None:
                patch["reminderDateTime"] = None
            patches.append(self._req("PATCH", url, patch))
            owners.append(pos)
            written[pos] = merged
        # 2. Every owned field, empty ones cleared.
        for pos, ans in zip(owners, self._run(patches, writing=True), strict=True):
            cls = changes[pos][1].item_class
            results[pos] = ans if isinstance(ans, ExchangeError) else self._written(cls, ans.body)
        # 3. A series: its instances made equal to the host's (exceptions of an earlier state or
        #    from a phone may still be there).
        self._series_instances(
            [
                (pos, item)
                for pos, item in written.items()
                if isinstance(item, CalendarEntry) and item.recurrence is not None
            ],
            results,
        )
        return [r if r is not None else ItemRejected("Element wurde nicht verarbeitet.") for r in results]

    # ------------------------------------------------------------------ series
    def _series_instances(
        self, todo: list[tuple[int, CalendarEntry]], results: list[Any], *, rewrite: bool = True
    ) -> None:
        """After series masters were written: read their instances back and make them equal to
        the host's series (``series.py``), for all masters of the batch together. A failure fails
        the item; its master exists, so the next attempt finds it and does this again."""
        todo = [(pos, item) for pos, item in todo if isinstance(results[pos], Written)]
        if not todo:
            return
        try:
            self._make_instances(todo, results, rewrite=rewrite)
        except TransientError as err:
            # A request of the whole batch failed (busy, lost answer): these series are not done,
            # the masters written before are (their ids are known to the results).
            for pos, _ in todo:
                if isinstance(results[pos], Written):
                    results[pos] = err

    def _make_instances(
        self, todo: list[tuple[int, CalendarEntry]], results: list[Any], *, rewrite: bool
    ) -> None:
        wants = {pos: gseries.wanted(item) for pos, item in todo}
        urls = []
        for pos, item in todo:
            lo, hi = gseries.window(item, wants[pos])
            rest = results[pos].item_id.partition(":")[2]
            urls.append(
                f"{self._user}/events/{quote(rest, safe='=-_')}/instances?startDateTime={lo}"
                f"&endDateTime={hi}&$select={gseries.SELECT}&$top={PAGE}"
            )
        pages = self._pages_each(urls)
        plans: dict[int, gseries.Plan] = {}
        again: list[tuple[int, CalendarEntry]] = []
        for (pos, item), page in zip(todo, pages, strict=True):
            if isinstance(page, ExchangeError):
                results[pos] = page
                continue
            plan = gseries.plan(item, wants[pos], page)
            if plan.rewrite and rewrite:
                again.append((pos, item))
            elif plan.rewrite:
                results[pos] = ItemRejected(
                    "Die Serie steht in Microsoft 365 anders im Kalender als in timeSensor LEGAL, auch nachdem "
                    "sie neu geschrieben wurde; bitte die Serie prüfen."
                )
            else:
                plans[pos] = plan
        if again:
            # An occurrence the host wants is cancelled in the mailbox: Graph cannot bring one
            # back, so the series is written anew (and its exceptions with it).
            self._rewrite(again, results)
            self._series_instances(again, results, rewrite=False)
        self._send_plans(plans, results)

    def _rewrite(self, todo: list[tuple[int, CalendarEntry]], results: list[Any]) -> None:
        deletes = [self._req("DELETE", self._own_url(results[pos].item_id)) for pos, _ in todo]
        gone = self._run(deletes, writing=True)
        creates, owners = [], []
        for (pos, item), ans in zip(todo, gone, strict=True):
            if isinstance(ans, ExchangeError) and not isinstance(ans, ItemNotFound):
                results[pos] = ans
                continue
            body = wire.create_body(item, salt=uuid.uuid4().hex)
            creates.append(self._req("POST", self._collection("calendar"), body))
            owners.append(pos)
        for pos, ans in zip(owners, self._run(creates, writing=True, creating=True), strict=True):
            results[pos] = ans if isinstance(ans, ExchangeError) else self._written("calendar", ans.body)

    def _send_plans(self, plans: dict[int, gseries.Plan], results: list[Any]) -> None:
        reqs, owners = [], []
        for pos, plan in plans.items():
            for inst in plan.deletes:
                reqs.append(self._req("DELETE", f"{self._user}/events/{quote(inst, safe='=-_')}"))
                owners.append((pos, "DELETE"))
            for inst, body in plan.patches:
                reqs.append(self._req("PATCH", f"{self._user}/events/{quote(inst, safe='=-_')}", body))
                owners.append((pos, "PATCH"))
        if not reqs:
            return
        touched: list[int] = []
        for (pos, method), ans in zip(owners, self._run(reqs, writing=True), strict=True):
            if pos not in touched:
                touched.append(pos)
            if not isinstance(ans, ExchangeError) or not isinstance(results[pos], Written):
                continue
            if isinstance(ans, ItemNotFound):
                if method == "DELETE":
                    continue  # already cancelled: the wanted state
                ans = TransientError(
                    "Ein Termin der Serie wurde inzwischen im Postfach geändert; die Serie wird erneut abgeglichen."
                )
            results[pos] = ans
        # Every exception changed its master's change key; keep the current ones.
        done = [pos for pos in touched if isinstance(results[pos], Written)]
        gets = [
            self._req("GET", f"{self._item_url(results[pos].item_id)}?$select=id,changeKey") for pos in done
        ]
        for pos, ans in zip(done, self._run(gets), strict=True):
            results[pos] = ans if isinstance(ans, ExchangeError) else self._written("calendar", ans.body)

    def _pages_each(self, first: list[str]) -> list[list[dict[str, Any]] | ExchangeError]:
        """GET each url (in batches) and follow @odata.nextLink, verbatim but made relative for
        the batch (NOTES §5), until every collection is read; an error ends only its own."""
        base = self._account.graph_url.rstrip("/")
        out: list[list[dict[str, Any]] | ExchangeError] = [[] for _ in first]
        pending = list(enumerate(first))
        while pending:
            answers = self._run([self._req("GET", url) for _, url in pending])
            nxt = []
            for (idx, _), ans in zip(pending, answers, strict=True):
                if isinstance(ans, ExchangeError):
                    out[idx] = ans
                    continue
                page = out[idx]
                assert isinstance(page, list)
                page += list((ans.body or {}).get("value", []))
                link = (ans.body or {}).get("@odata.nextLink")
                if link:
                    nxt.append((idx, link[len(base) :] if link.startswith(base) else link))
            pending = nxt
        return out

    def delete(self, refs: Sequence[ItemRef]) -> list[ExchangeError | None]:
        if not refs:
            return []
        urls = [self._item_url(ref.item_id) for ref in refs]
        answers = iter(self._run([self._req("DELETE", u) for u in urls if u is not None], writing=True))
        out: list[ExchangeError | None] = []
        for url in urls:
            if url is None:
                out.append(wire.foreign_id())
                continue
            ans = next(answers)
            out.append(ans if isinstance(ans, ExchangeError) else None)
        return out

    def _pages(self, first: list[str]) -> list[list[dict[str, Any]]]:
        """GET each url (in batches) and follow @odata.nextLink until every collection is read."""
        pages: list[list[dict[str, Any]]] = []
        for page in self._pages_each(first):
            if isinstance(page, ExchangeError):
                raise page
            pages.append(page)
        return pages

    def _filter_url(
        self, item_class: str, condition: str, *, select: str = "id,changeKey", top: int = PAGE
    ) -> str:
        prop = wire.odata_quote(wire.RECORD_ID_PROPERTY)
        flt = f"singleValueExtendedProperties/Any(ep: ep/id eq {prop} and {condition})"
        exp = f"singleValueExtendedProperties($filter=id eq {prop})"

        def q(v: str) -> str:
            return quote(v, safe="()'=,$")  # spaces as %20, never '+' (NOTES §6)

        return f"{self._collection(item_class)}?$filter={q(flt)}&$expand={q(exp)}&$select={select}&$top={top}"

    def _page(self, url: str) -> tuple[list[dict[str, Any]], str]:
        """One page of a collection and the (relative) link to the next one, or ""."""
        (ans,) = self._run([self._req("GET", url)])
        if isinstance(ans, ExchangeError):
            raise ans
        link = str((ans.body or {}).get("@odata.nextLink") or "")
        base = self._account.graph_url.rstrip("/")
        return list((ans.body or {}).get("value", [])), link[len(base) :] if link.startswith(base) else link

    def find_by_keys(self, item_class: ItemClass, record_keys: Sequence[str]) -> dict[str, list[ItemRef]]:
        keys = list(dict.fromkeys(k for k in record_keys if k))
        found: dict[str, list[ItemRef]] = {k: [] for k in keys}
        if not keys:
            return found
        if item_class == "task":
            for key, refs in self.find_all_ours("task").items():
                if key in found:
                    found[key] = refs
            return found
        urls = [self._filter_url(item_class, f"ep/value eq {wire.odata_quote(k)}") for k in keys]
        for page in self._pages(urls):
            for data in page:
                key = wire.record_key_of(item_class, data)
                if key in found:  # the filter ignores case; the key does not
                    found[key].append(self._ref(item_class, data))
        return found

    def find_all_ours(self, item_class: ItemClass) -> dict[str, list[ItemRef]]:
        found: dict[str, list[ItemRef]] = {}
        if item_class == "task":
            # Our list, and the default list: Wiedervorlagen the EWS backend wrote into the Tasks
            # folder appear there, without a linked resource but with our record link in the body.
            ours, default = self._todo_lists()
            lists = [ours] + ([default] if default and default != ours else [])
            urls = [f"{self._tasks_of(lst)}?$expand=linkedResources&$top={PAGE}" for lst in lists]
            for list_id, page in zip(lists, self._pages(urls), strict=True):
                for data in page:
                    # A task the EWS backend wrote has only the record link: in the default list,
                    # or in ours when it is the firm's named subfolder (a Tasks subfolder over EWS).
                    key = wire.record_key_of("task", data) or wire.record_key_from_link(data)
                    if key:
                        found.setdefault(key, []).append(self._ref("task", data, list_id))
            return found
        for data in self._pages([self._filter_url(item_class, "ep/value ne ''")])[0]:
            key = wire.record_key_of(item_class, data)
            if key:
                found.setdefault(key, []).append(self._ref(item_class, data))
        return found

    def folder_count(self, item_class: ItemClass) -> int:
        (ans,) = self._run(
            [self._req("GET", f"{self._collection(item_class)}?$count=true&$top=1&$select=id")]
        )
        if isinstance(ans, ExchangeError):
            raise ans
        count = (ans.body or {}).get("@odata.count")
        if isinstance(count, int):
            return count
        return len(self._pages([f"{self._collection(item_class)}?$select=id&$top={PAGE}"])[0])

    # ------------------------------------------------------------------ SweepSession (graph/sweep.py)
    def iter_ours(self, item_class: ItemClass, *, page_size: int = 1000) -> Iterator[list[OwnedRef]]:
        return sweep.iter_ours(self, item_class, page_size=page_size)

    def read_owned(self, item_class: ItemClass, refs: Sequence[ItemRef]) -> list[OwnedValues | ExchangeError]:
        return sweep.read_owned(self, item_class, refs)

    def owned_values(self, item: ExchangeItem) -> OwnedValues:
        return owned.from_item(item)

    def read_bodies(self, item_class: ItemClass, refs: Sequence[ItemRef]) -> list[str | ExchangeError]:
        return sweep.read_bodies(self, item_class, refs)

    def server_time(self) -> float | None:
        """Microsoft's clock from the last answer's Date header (for "Testen"), or None."""
        import email.utils

        raw = getattr(self, "_last_date", None)
        if not raw:
            return None
        try:
            return email.utils.parsedate_to_datetime(raw).timestamp()
        except (TypeError, ValueError):
            return None

    def close(self) -> None:
        # The HTTP client and the tokens belong to the backend and are shared by its sessions.
        pass


def _with_body(item: ExchangeItem, body: str) -> ExchangeItem:
    import dataclasses

    return dataclasses.replace(item, body=body)
