"""The EWS backend's operations: ``EwsBackend`` opens an ``EwsSession`` per mailbox, which creates,
updates, finds and deletes items through exchangelib.

The package beside it (facts in ../shared/ews-reference/NOTES.md): ``convert.py`` turns plain items
into exchangelib objects and back (the record-key property, the owned fields), ``errors.py`` turns
exchangelib's exceptions into the backend errors, ``transport.py`` holds the per-item services, the
protocol subclasses (lane turns, an allowed self-signed certificate) and the per-server request
limit, ``series.py`` converts recurring masters. These are the only modules of the plugin that
import exchangelib.

- **No autodiscover.** ``Configuration(service_endpoint=account.ews_url)``. The auth type is
  probed when the account says "auto" (exchangelib posts a dummy request without
  credentials and reads WWW-Authenticate), NTLM or Basic otherwise. The server version is
  probed unless the backend was given one, once per EWS endpoint: later mailboxes of that
  server start with the version learned.
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
- **Concurrency.** One limit per server (host:port of the EWS URL), shared by all sessions of a
  backend, caps the requests in flight (Microsoft advises about 10); every exchangelib call runs
  under it (``ServerLimit`` in ``backends/slots.py``, which with several worker processes also
  takes one of the server's slots in the queue's store). exchangelib sends the requests of one
  call one after another.
"""

from __future__ import annotations

import copy
import dataclasses
import datetime as dt
import itertools
import logging
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import nullcontext
from typing import Any, TypeVar

from exchangelib import (
    BASIC,
    DELEGATE,
    NTLM,
    Account,
    Build,
    CalendarItem,
    Configuration,
    Credentials,
    EWSTimeZone,
    Q,
    Version,
)
from exchangelib import errors as exl_errors
from exchangelib.fields import ExtendedPropertyField, FieldPath
from exchangelib.folders import DEEP, SHALLOW, Calendar, Contacts, Root, Tasks
from exchangelib.folders.queryset import SingleFolderQuerySet
from exchangelib.items import AUTO_RESOLVE, ID_ONLY, NEVER_OVERWRITE, SAVE_ONLY, SEND_TO_NONE
from exchangelib.properties import DistinguishedFolderId, Mailbox, OccurrenceItemId

from ... import logredact
from ...mapping.common import merge_body
from ...mapping.items import CalendarEntry, ExchangeItem, OccurrenceEdit
from ...mapping.reminder import TODO_LIST_NAME, linked_record_key
from .. import turns
from ..base import (
    ConfigError,
    Conflict,
    ExchangeError,
    ItemClass,
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
from . import series as series_ews
from .convert import (
    RECORD_ID_FIELD,
    body_text,
    plain_owned,
    read_only_fields,
    register_record_id_property,
    to_exchangelib,
    update_fields,
)
from .errors import FailFastWithHint, short_message, translate_error
from .transport import CreateItems, NoVerifyProtocol, TurnTakingProtocol, UpdateItems

T = TypeVar("T")
log = logging.getLogger(__name__)

FIND_KEYS_PER_REQUEST = 50  # keys per Or-restriction; keeps each FindItem small


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
        # The version each EWS endpoint answered with. exchangelib probes it per protocol, i.e. per
        # endpoint and credentials, so every mailbox's first session would probe again (one round
        # trip, ConvertId); the version belongs to the server, not to the mailbox.
        self._versions: dict[str, Version] = {}
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

    def known_version(self, ews_url: str) -> Version | None:
        """The configured version, else the one a session of this endpoint learned, else None (probe)."""
        if self.version:
            return Version(build=Build(*self.version))
        with self._lock:
            return self._versions.get(ews_url)

    def learn_version(self, ews_url: str, version: Version) -> None:
        with self._lock:
            self._versions.setdefault(ews_url, version)


class EwsSession:
    """Operations on one mailbox (``MailboxSession``). Not thread-safe: one per worker thread."""

    def __init__(self, backend: EwsBackend, account: MailboxAccount):
        self._backend = backend
        self._mailbox = account
        self._limit = backend.limiter(account.server)
        # Set by the worker: paces the requests to this mailbox and holds them while it or its
        # server is paused (see worker/runner.py). None: every request goes (tools, the connection test).
        self.guard: RequestGuard | None = None
        self._folders: dict[str, Any] = {}
        self._server_version: Any = None
        auth_type = {"auto": None, "ntlm": NTLM, "basic": BASIC}.get(account.auth_type)
        if account.auth_type not in ("auto", "ntlm", "basic"):
            raise ConfigError(f"Unbekannte Anmeldeart: {account.auth_type!r}")
        version = backend.known_version(account.ews_url)
        self._version_shared = version is not None
        # exchangelib logs request headers (Basic credentials, NTLM tokens) at DEBUG and ERROR.
        logredact.remember(account.username, account.password)
        try:
            config = Configuration(
                service_endpoint=account.ews_url,
                credentials=Credentials(account.username, account.password),
                auth_type=auth_type,
                version=version,
                retry_policy=FailFastWithHint(),
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
            raise ConfigError(
                self._scrub(f"Ungültige Exchange-Einstellungen: {short_message(exc)}")
            ) from None
        protocol = self._account.protocol
        wanted = TurnTakingProtocol if account.verify_tls else NoVerifyProtocol
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
            if not self._version_shared:
                self._adopt_version()
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
            if not self._version_shared:
                self._share_version()
            return result

    def _adopt_version(self) -> None:
        """Before a request: a version another session of this endpoint learned meanwhile spares
        this one the probe (sessions of a worker's first claims are opened side by side)."""
        config = self._account.protocol.config
        if config.version is not None and config.version.build is not None:
            return
        version = self._backend.known_version(self._mailbox.ews_url)
        if version is not None:
            config.version = version
            self._version_shared = True

    def _share_version(self) -> None:
        """After the first answer: the version exchangelib probed serves the endpoint's later sessions."""
        version = self._account.protocol.config.version
        if version is not None and version.build is not None:
            self._backend.learn_version(self._mailbox.ews_url, version)
            self._version_shared = True

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
        if found is None and item_class == "task":
            # Over Microsoft Graph the Wiedervorlagen go to the To Do list of this name, which To
            # Do keeps as a task folder beside Tasks: a mailbox that was on Graph has it there.
            found = self._find_subfolder(self._account.msg_folder_root, name, Tasks)
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
        ``Account.contacts`` (calendar, tasks) would give them, without their lock and
        without fetching the root (one GetFolder per mailbox, not two).

        exchangelib caches these per account, but under a lock per property that every
        Account of the process shares: while one thread waits for the server's answer about
        its mailbox's folders, every other thread setting up another
        mailbox waits, so a process starting on many mailboxes set them up one at a time.
        This session's Account serves one thread, so the folders are fetched here and kept
        where exchangelib looks first (the instance's ``__dict__``)."""
        cache = vars(self._account)
        root = cache.get("root")
        if root is None:
            # Not fetched: the default folder is asked for by its distinguished id, and the root
            # only passes the account on to it. Fetching it cost one round trip per mailbox.
            unresolved = Root(
                _distinguished_id=DistinguishedFolderId(
                    id=Root.DISTINGUISHED_FOLDER_ID,
                    mailbox=Mailbox(email_address=self._account.primary_smtp_address),
                ),
                account=self._account,
            )
            root = cache.setdefault("root", unresolved)
        attribute, folder_cls = {
            "contact": ("contacts", Contacts),
            "calendar": ("calendar", Calendar),
            "task": ("tasks", Tasks),
        }[item_class]
        folder = cache.get(attribute)
        if folder is None:
            folder = cache.setdefault(attribute, root.get_default_folder(folder_cls))
        return folder

    def _find_subfolder(self, parent: Any, name: str, kind: type | None = None) -> Any | None:
        matches = list(
            SingleFolderQuerySet(account=self._account, folder=parent).depth(SHALLOW).filter(name=name)
        )
        matches = [
            f for f in matches if not isinstance(f, BaseException) and (kind is None or isinstance(f, kind))
        ]
        return matches[0] if matches else None

    # ----------------------------------------------------------------- MailboxSession

    def create(self, items: Sequence[ExchangeItem]) -> list[PerItem]:
        results: list[PerItem | None] = [None] * len(items)
        groups: dict[ItemClass, list[tuple[int, Any]]] = {}
        for pos, item in enumerate(items):
            try:
                obj = to_exchangelib(item, account=self._account)
                setattr(obj, RECORD_ID_FIELD, item.record_key)
            except Exception as exc:
                results[pos] = ItemRejected(
                    self._scrub(f"Element kann nicht erzeugt werden: {short_message(exc)}")
                )
                continue
            groups.setdefault(item.item_class, []).append((pos, obj))

        written_any = False
        for item_class, members in groups.items():
            folder = self.folder(item_class)
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
                    problem = self._per_item(res)
                    results[pos] = problem if problem is not None else Written(res.id, res.changekey)
        self._series_exceptions(items, results)
        return [r if r is not None else ItemRejected("Element wurde nicht verarbeitet.") for r in results]

    def _create_chunk(
        self, folder: Any, chunk: Sequence[tuple[int, Any]], version: Any, results: list[Any]
    ) -> tuple[Sequence[tuple[int, Any]], list[Any]]:
        """bulk_create one chunk; returns the members actually sent and exchangelib's answers.

        exchangelib validates each item while it builds the request (before anything goes on
        the wire) and one bad item fails the whole chunk with a ValueError or TypeError.
        Validating every item up front would double that work for the common, valid case, so
        only a failed build is followed by item-by-item validation: the bad items are
        rejected and the rest sent again.
        """

        def send(members: Sequence[tuple[int, Any]]) -> list[Any]:
            return list(
                CreateItems(account=self._account, chunk_size=len(members)).call(
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

            def fetch_bodies(ids: list[tuple[str, None]] = ids, folder: Any = folder) -> list[Any]:
                return list(self._account.fetch(ids, folder=folder, only_fields=["body"]))

            current = self._call(fetch_bodies)
            todo: list[tuple[int, Any, list[str]]] = []
            for (pos, (ref, item)), cur in zip(chunk, current, strict=True):
                if isinstance(cur, BaseException):
                    results[pos] = self._fail(cur)
                    continue
                try:
                    body = merge_body(item.body, body_text(cur.body))
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

                def send_updates(pairs: list[tuple[Any, list[str]]] = pairs) -> list[Any]:
                    return list(
                        UpdateItems(account=self._account, chunk_size=len(pairs)).call(
                            items=pairs,
                            conflict_resolution=NEVER_OVERWRITE,
                            message_disposition=SAVE_ONLY,
                            send_meeting_invitations_or_cancellations=SEND_TO_NONE,
                            suppress_read_receipts=True,
                        )
                    )

                answers = self._call(send_updates, writing=True)
            except (Conflict, RequestRejected) as err:
                for pos, _, _ in todo:
                    results[pos] = err
                continue
            for (pos, _, _), res in zip(todo, answers, strict=True):
                problem = self._per_item(res)
                results[pos] = problem if problem is not None else Written(res[0], res[1])
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
                    out.append((linked_record_key(body_text(it.body)), ItemRef(it.id, it.changekey)))
                return out

            for key, ref in self._call(run):
                if key:
                    found.setdefault(key, []).append(ref)
        return found

    def _find_todo_lists(self) -> list[Any]:
        root = self._account.msg_folder_root
        # Our list, or the firm's named subfolder, which is the list over Graph (GraphSession).
        names = dict.fromkeys([TODO_LIST_NAME, self._backend.target_folders.get("task") or TODO_LIST_NAME])
        found: dict[str, Any] = {}
        for name in names:
            for f in SingleFolderQuerySet(account=self._account, folder=root).depth(DEEP).filter(name=name):
                if isinstance(f, Tasks):
                    found.setdefault(f.id, f)
        return list(found.values())

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

    def _series_exceptions(self, items: Sequence[ExchangeItem], results: list[Any]) -> None:
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

        gone = [(pos, occ(w, e.index)) for pos, item, w in todo for e in _edits(item) if e.deleted]
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
            for edit in _edits(item):
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
                    out[pos] = ItemRejected(
                        self._scrub(f"Ausnahme der Serie abgelehnt: {short_message(exc)}")
                    )
                    continue
                changes.append((obj, fields))
                owners.append(pos)
        if changes:
            # AutoResolve, not the NeverOverwrite fence of other updates: every exception
            # written changes the master's ChangeKey, so the second occurrence of a series would
            # always carry a stale one. The master itself was fenced a moment ago in this claim.
            answers = self._call(
                lambda: list(
                    UpdateItems(account=acc, chunk_size=chunk).call(
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

            def fetch_bodies(ids: list[tuple[str, None]] = ids) -> list[Any]:
                return list(self._account.fetch(ids, folder=folder, only_fields=["body"]))

            got = self._call(fetch_bodies)
            out += [self._fail(r) if isinstance(r, BaseException) else body_text(r.body) for r in got]
        return out


def _edits(item: CalendarEntry) -> tuple[OccurrenceEdit, ...]:
    return item.recurrence.edits if item.recurrence is not None else ()


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

        def fetch_owned(ids: list[tuple[str, None]] = ids) -> list[Any]:
            return list(self._account.fetch(ids, folder=folder, only_fields=read_only_fields(item_class)))

        got = self._call(fetch_owned)
        for res in got:
            out.append(self._fail(res) if isinstance(res, BaseException) else plain_owned(res, item_class))
    return out


def _sweep_owned_values(self: EwsSession, item: ExchangeItem) -> OwnedValues:
    return plain_owned(to_exchangelib(item, account=self._account), item.item_class)
