"""What every operation handler shares: the request context, message builders, folder lookup."""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from lxml import etree

from . import ids
from .schema import M_NS, T_NS, Model
from .store import Store

M = f"{{{M_NS}}}"
TP = f"{{{T_NS}}}"

# The sandbox has no permissions model: the mailbox owner may do everything, on
# folders and items alike (callers copy it before handing it out).
FULL_RIGHTS = {
    k: True
    for k in (
        "CreateAssociated",
        "CreateContents",
        "CreateHierarchy",
        "Delete",
        "Modify",
        "Read",
        "ViewPrivateItems",
    )
}

NSMAP = {"m": M_NS, "t": T_NS}

# distinguished id -> (display name, folder class, parent distinguished id)
DISTINGUISHED: dict[str, tuple[str, str | None, str | None]] = {
    "root": ("", None, None),
    "msgfolderroot": ("Top of Information Store", "IPF.Note", "root"),
    "inbox": ("Inbox", "IPF.Note", "msgfolderroot"),
    "drafts": ("Drafts", "IPF.Note", "msgfolderroot"),
    "sentitems": ("Sent Items", "IPF.Note", "msgfolderroot"),
    "deleteditems": ("Deleted Items", "IPF.Note", "msgfolderroot"),
    "outbox": ("Outbox", "IPF.Note", "msgfolderroot"),
    "junkemail": ("Junk Email", "IPF.Note", "msgfolderroot"),
    "calendar": ("Calendar", "IPF.Appointment", "msgfolderroot"),
    "contacts": ("Contacts", "IPF.Contact", "msgfolderroot"),
    "tasks": ("Tasks", "IPF.Task", "msgfolderroot"),
}

MESSAGES = {
    "ErrorItemNotFound": "The specified object was not found in the store.",
    "ErrorFolderNotFound": "The specified folder could not be found in the store.",
    "ErrorInvalidIdMalformed": "Id is malformed.",
    "ErrorChangeKeyRequiredForWriteOperations": "When making a write request, you must supply the change key.",
    "ErrorIrresolvableConflict": "The send or update operation could not be performed because the change key "
    "passed in the request does not match the current change key for the item.",
    "ErrorInvalidPropertyRequest": "The property request was invalid.",
    "ErrorInvalidPropertySet": "The property cannot be set.",
    "ErrorFolderExists": "A folder with the specified name already exists.",
    "ErrorServerBusy": "The server cannot service this request right now. Try again later.",
    "ErrorQuotaExceeded": "The mailbox quota has been exceeded.",
    "ErrorMailboxStoreUnavailable": "The mailbox database is temporarily unavailable.",
    "ErrorAccessDenied": "Access is denied. Check credentials and try again.",
    "ErrorDeleteDistinguishedFolder": "Distinguished folders cannot be deleted.",
    "ErrorCalendarEndDateIsEarlierThanStartDate": "EndDate is earlier than StartDate",
    "ErrorInvalidItemForOperationCreateItem": "This item type is not supported by the sandbox for CreateItem.",
    "ErrorInternalServerError": "An internal server error occurred. The operation failed.",
}


class MsgError(Exception):
    """Turns into one error ResponseMessage."""

    def __init__(self, code: str, text: str | None = None, xml: etree._Element | None = None):
        super().__init__(code)
        self.code = code
        self.text = text or MESSAGES.get(code, code)
        self.xml = xml


def E(
    tag: str, parent: etree._Element | None = None, text: str | None = None, **attrs: str
) -> etree._Element:
    el = etree.Element(tag, nsmap=NSMAP) if parent is None else etree.SubElement(parent, tag)
    for k, v in attrs.items():
        el.set(k, v)
    if text is not None:
        el.text = text
    return el


Unit = Callable[[], etree._Element]


@dataclass
class Ctx:
    store: Store
    model: Model
    mailbox: str
    op: str
    tz: str | None = None
    request: etree._Element | None = None
    _folders: dict[str, dict[str, Any]] | None = field(default=None, repr=False)
    # Fields this server silently drops, as (EWS element name, "create" | "update") pairs: plays a
    # server that answers NoError but never stores them (SandboxEngine.ignore_field).
    ignored: frozenset[tuple[str, str]] = frozenset()

    # -- messages --------------------------------------------------------------------------------
    def message(self) -> etree._Element:
        msg = E(f"{M}{self.op}ResponseMessage")
        msg.set("ResponseClass", "Success")
        E(M + "ResponseCode", msg, "NoError")
        return msg

    def error(self, exc: MsgError, container: str | None = None, warning: bool = False) -> etree._Element:
        msg = E(f"{M}{self.op}ResponseMessage")
        msg.set("ResponseClass", "Warning" if warning else "Error")
        E(M + "MessageText", msg, exc.text)
        E(M + "ResponseCode", msg, exc.code)
        E(M + "DescriptiveLinkKey", msg, "0")
        if exc.xml is not None:
            msg.append(exc.xml)
        if container:
            E(M + container, msg)
        return msg

    def guarded(self, fn: Callable[[], etree._Element], container: str | None) -> Unit:
        def run() -> etree._Element:
            try:
                return fn()
            except MsgError as exc:
                return self.error(exc, container)

        return run

    def each(
        self,
        elements: Iterable[etree._Element],
        handle: Callable[[etree._Element], etree._Element],
        container: str | None,
    ) -> tuple[list[Unit], str | None]:
        """One guarded unit per request element (an Id, a folder, an item change), so a
        bad element answers with its own error message and the others still run."""
        return [self.guarded(functools.partial(handle, el), container) for el in elements], container

    # -- folders ---------------------------------------------------------------------------------
    def folders(self) -> dict[str, dict[str, Any]]:
        if self._folders is None:
            self._folders = {f["id"]: f for f in self.store.folders(self.mailbox)}
        return self._folders

    def invalidate_folders(self) -> None:
        self._folders = None

    def dist(self, name: str) -> dict[str, Any]:
        for f in self.folders().values():
            if f["distinguished"] == name:
                return f
        raise MsgError("ErrorFolderNotFound")

    def resolve_folder(self, el: etree._Element) -> dict[str, Any]:
        local = etree.QName(el).localname
        if local == "DistinguishedFolderId":
            mb = el.findtext(f"{TP}Mailbox/{TP}EmailAddress")
            if mb and mb.strip().lower() != self.mailbox:
                raise MsgError("ErrorAccessDenied")
            return self.dist(el.get("Id", ""))
        fid = el.get("Id", "")
        if not ids.is_well_formed(fid, ids.FOLDER_TAG):
            raise MsgError("ErrorInvalidIdMalformed")
        f = self.folders().get(fid)
        if f is None:
            raise MsgError("ErrorFolderNotFound")
        return f

    def folder_id_attrs(self, folder_id: str) -> dict[str, Any]:
        f = self.folders().get(folder_id)
        return {"@Id": folder_id, "@ChangeKey": f["change_key"] if f else ""}


def folder_element_name(folder_class: str | None) -> str:
    fc = folder_class or ""
    if fc.startswith("IPF.Contact"):
        return "ContactsFolder"
    if fc.startswith("IPF.Appointment"):
        return "CalendarFolder"
    if fc.startswith("IPF.Task"):
        return "TasksFolder"
    return "Folder"


def new_folder(
    mailbox: str, parent_id: str | None, name: str, folder_class: str | None, dist: str | None
) -> dict[str, Any]:
    return {
        "id": ids.new_folder_id(),
        "mailbox": mailbox,
        "parent_id": parent_id,
        "distinguished": dist,
        "display_name": name,
        "folder_class": folder_class,
        "change_key": ids.new_change_key(),
    }
