"""The SOAP engine of the EWS sandbox: bytes of a SOAP request in, (HTTP status, bytes) out.

The HTTP layer (server.py) authenticates and hands the body over; this module parses,
validates against Microsoft's schema, runs the operation on the SQLite store and answers
like Exchange Server 2016 (build 15.1.2507.6) would.
"""

from __future__ import annotations

import copy
import logging
import threading
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

from lxml import etree

from . import ids, uris, xmlio
from .engine_ctx import DISTINGUISHED, NSMAP, TP, Ctx, M, MsgError, Unit, new_folder
from .faults import Fault, FaultPlan
from .fields import KINDS, camel, ext_plain_name, from_plain, snake, to_plain
from .ops_folders import create_folder, delete_folder, find_folder, get_folder
from .ops_items import create_item, delete_item, find_item, get_item, item_view, normalize, update_item
from .ops_misc import convert_id, get_server_time_zones
from .schema import (
    M_NS,
    SCHEMA_DIR_ENV,
    T_NS,
    XML_NS,
    ValidationError,
    any_uri_elements,
    model,
    schema_dir,
    validator,
)
from .store import Store
from .xmlio import E_NS, S_NS

log = logging.getLogger(__name__)

MAX_BODY = 20 * 1024 * 1024
_S = f"{{{S_NS}}}"
_SOAP12 = "http://www.w3.org/2003/05/soap-envelope"
_PARSER_OPTS = dict(resolve_entities=False, no_network=True, huge_tree=False, remove_comments=True)

Handler = Callable[[Ctx, etree._Element], tuple[list[Unit], str | None]]

OPERATIONS: dict[str, Handler] = {
    "GetFolder": get_folder,
    "FindFolder": find_folder,
    "CreateFolder": create_folder,
    "DeleteFolder": delete_folder,
    "CreateItem": create_item,
    "GetItem": get_item,
    "UpdateItem": update_item,
    "DeleteItem": delete_item,
    "FindItem": find_item,
    "ConvertId": convert_id,
    "GetServerTimeZones": get_server_time_zones,
}


class _Fault(Exception):
    def __init__(
        self,
        code: str,
        text: str,
        status: int = 500,
        faultcode: str | None = None,
        xml: etree._Element | None = None,
    ) -> None:
        super().__init__(text)
        self.code, self.text, self.status, self.faultcode, self.xml = code, text, status, faultcode, xml


SCHEMA_MISSING_NOTE = (
    "Hinweis: Microsofts EWS-Schema ist nicht vorhanden; die Sandbox arbeitet ohne Schema-Prüfung. "
    f"Für die Prüfung {SCHEMA_DIR_ENV} auf den Ordner mit messages.xsd und types.xsd setzen."
)


class SandboxEngine:
    def __init__(
        self,
        data_dir: str | Path,
        *,
        validate: bool = True,
        faults: FaultPlan | None = None,
        build: tuple[int, int, int, int] = (15, 1, 2507, 6),
    ):
        self.faults = faults if faults is not None else FaultPlan()
        self.build = build
        self.model = model()
        # Without Microsoft's schema files (an installed package) the sandbox still works from the
        # shipped type model, but it cannot validate; ``validation_note`` says so to the caller.
        self.validation_note = ""
        if validate and schema_dir() is None:
            validate = False
            self.validation_note = SCHEMA_MISSING_NOTE
        self.validate = validate
        self._validator = validator() if validate else None
        self._uri_elements = any_uri_elements() if validate else frozenset()
        self.store = Store(data_dir)
        self._stats_lock = threading.Lock()
        self._counts: dict[str, Counter[str]] = {}
        self.violations = 0
        self._violation_details: list[str] = []
        self._parser = threading.local()
        self._ignored: frozenset[tuple[str, str]] = frozenset()

    # ------------------------------------------------------------------------------------------
    # mailboxes

    def add_mailbox(self, email: str) -> None:
        mb = email.strip().lower()
        with self.store.lock:
            self.store.begin()
            try:
                self.store.add_mailbox(mb)
                have = {f["distinguished"]: f for f in self.store.folders(mb) if f["distinguished"]}
                for did, (name, fclass, parent) in DISTINGUISHED.items():
                    if did in have:
                        continue
                    parent_id = have[parent]["id"] if parent else None
                    f = new_folder(mb, parent_id, name, fclass, did)
                    self.store.insert_folder(f)
                    have[did] = f
                self.store.commit()
            except BaseException:
                self.store.rollback()
                raise

    def has_mailbox(self, email: str) -> bool:
        with self.store.lock:
            return self.store.has_mailbox(email.strip().lower())

    # ------------------------------------------------------------------------------------------
    # SOAP

    def _xml_parser(self) -> etree.XMLParser:
        p = getattr(self._parser, "p", None)
        if p is None:
            p = self._parser.p = etree.XMLParser(**_PARSER_OPTS)
        return p

    def operation_of(self, body: bytes) -> str | None:
        try:
            root = etree.fromstring(body, self._xml_parser())
        except (etree.XMLSyntaxError, ValueError):
            return None
        b = root.find(_S + "Body")
        if b is None:
            return None
        first = next((c for c in b if isinstance(c.tag, str)), None)
        return etree.QName(first).localname if first is not None else None

    def handle(self, mailbox: str, body: bytes) -> tuple[int, bytes]:
        mailbox = (mailbox or "").strip().lower()
        op_name = "?"
        try:
            if len(body) > MAX_BODY:
                raise _Fault("ErrorRequestStreamTooBig", "The request is larger than the 20 MB limit.", 413)
            root, payload, headers = self._parse(body)
            op_name = etree.QName(payload).localname
            self._count(mailbox, op_name)
            if payload.tag != M + op_name:
                raise _Fault(
                    "ErrorInvalidRequest", f"The request is invalid: {payload.tag} is not an EWS operation."
                )
            fault = self.faults.take(mailbox, op_name, "soap") if self.faults else None
            if fault is not None and fault.kind == "server_busy":
                mx = etree.Element(f"{{{T_NS}}}MessageXml", nsmap={"t": T_NS})
                etree.SubElement(mx, TP + "Value", Name="BackOffMilliseconds").text = str(fault.back_off_ms)
                raise _Fault(
                    "ErrorServerBusy",
                    "The server cannot service this request right now. Try again later.",
                    xml=mx,
                )
            if self._validator is not None:
                for el in [*headers, payload]:
                    err = self._validator.check(el)
                    if err is not None:
                        text = f"The request failed schema validation: {err.message} Line {err.line}, position {err.column}."
                        raise _Fault("ErrorSchemaValidation", text, xml=_schema_xml(err))
                self._check_uris(payload)
            handler = OPERATIONS.get(op_name)
            if handler is None:
                raise _Fault(
                    "ErrorInvalidRequest",
                    f"The request is invalid. The operation {op_name} is not supported by this server.",
                )
            effective = self._effective_mailbox(mailbox, headers)
            response = self._run(effective, op_name, handler, payload, headers, fault)
            return 200, self._envelope(response)
        except _Fault as f:
            return f.status, self._fault(f)
        except Exception:
            log.exception("sandbox engine failed on %s", op_name)
            with self.store.lock:
                self.store.rollback()
            return 500, self._fault(
                _Fault("ErrorInternalServerError", "An internal server error occurred. The operation failed.")
            )

    def _check_uris(self, payload: etree._Element) -> None:
        """xs:anyURI as .NET validates it (see ``uris.py``): a refused value fails the request."""
        for name in self._uri_elements:
            for el in payload.iter(f"{{{T_NS}}}{name}"):
                value = el.text or ""
                if not uris.is_valid_any_uri(value):
                    text = uris.dotnet_message(f"{T_NS}:{name}", value)
                    err = ValidationError(text, el.sourceline or 0, 0)
                    raise _Fault("ErrorSchemaValidation", text, xml=_schema_xml(err))

    def _parse(self, body: bytes) -> tuple[etree._Element, etree._Element, list[etree._Element]]:
        try:
            root = etree.fromstring(body, self._xml_parser())
        except etree.XMLSyntaxError as exc:
            line, col = exc.position if exc.position else (0, 0)
            raise _Fault(
                "ErrorSchemaValidation",
                f"The request failed schema validation: {exc.msg} Line {line}, position {col}.",
            ) from exc
        except ValueError as exc:
            raise _Fault("ErrorSchemaValidation", f"The request failed schema validation: {exc}") from exc
        qn = etree.QName(root)
        if qn.localname == "Envelope" and qn.namespace != S_NS:
            raise _Fault(
                "VersionMismatch", "Only SOAP 1.1 envelopes are accepted.", faultcode="s:VersionMismatch"
            )
        if root.tag != _S + "Envelope":
            raise _Fault(
                "ErrorSchemaValidation",
                "The request failed schema validation: the root element is not "
                f"a SOAP 1.1 Envelope but {root.tag}. Line {root.sourceline or 1}, position 1.",
            )
        hdr = root.find(_S + "Header")
        headers = (
            [h for h in hdr if isinstance(h.tag, str) and h.tag.startswith(f"{{{T_NS}}}")]
            if hdr is not None
            else []
        )
        b = root.find(_S + "Body")
        payload = [c for c in b if isinstance(c.tag, str)] if b is not None else []
        if len(payload) != 1:
            raise _Fault(
                "ErrorInvalidRequest",
                "The request is invalid: the SOAP Body must hold exactly one operation.",
            )
        return root, payload[0], headers

    def _effective_mailbox(self, mailbox: str, headers: list[Any]) -> str:
        for h in headers:
            if h.tag == TP + "ExchangeImpersonation":
                smtp = h.findtext(f"{TP}ConnectingSID/{TP}PrimarySmtpAddress") or h.findtext(
                    f"{TP}ConnectingSID/{TP}SmtpAddress"
                )
                if smtp:
                    mailbox = smtp.strip().lower()
        with self.store.lock:
            known = self.store.has_mailbox(mailbox)
        if not known:
            raise _Fault(
                "ErrorNonExistentMailbox", f"The SMTP address has no mailbox associated with it: {mailbox}"
            )
        return mailbox

    def _run(
        self,
        mailbox: str,
        op_name: str,
        handler: Handler,
        payload: etree._Element,
        headers: list[etree._Element],
        fault: Fault | None,
    ) -> etree._Element:
        tz = None
        for h in headers:
            if h.tag == TP + "TimeZoneContext":
                d = h.find(TP + "TimeZoneDefinition")
                tz = d.get("Id") if d is not None else None
        resp = etree.Element(f"{M}{op_name}Response", nsmap=NSMAP)
        box = etree.SubElement(resp, M + "ResponseMessages")
        with self.store.lock:
            ctx = Ctx(self.store, self.model, mailbox, op_name, tz, payload, ignored=self._ignored)
            self.store.begin()
            try:
                units, container = handler(ctx, payload)
                for i, unit in enumerate(units):
                    hit = (
                        fault is not None
                        and fault.kind in ("busy_in_message", "response_code")
                        and (fault.index is None and fault.kind == "response_code" or fault.index == i)
                    )
                    if hit and fault is not None:
                        code = "ErrorServerBusy" if fault.kind == "busy_in_message" else fault.code
                        mx = None
                        if code == "ErrorServerBusy":
                            mx = etree.Element(M + "MessageXml", nsmap=NSMAP)
                            etree.SubElement(mx, TP + "Value", Name="BackOffMilliseconds").text = str(
                                fault.back_off_ms
                            )
                        box.append(ctx.error(MsgError(code, xml=mx), container))
                    else:
                        box.append(unit())
                self.store.commit()
            except BaseException:
                self.store.rollback()
                raise
        etree.cleanup_namespaces(resp)
        return resp

    # ------------------------------------------------------------------------------------------
    # envelopes

    def _header(self, env: etree._Element) -> etree._Element:
        hdr = etree.SubElement(env, _S + "Header")
        svi = etree.SubElement(hdr, f"{{{T_NS}}}ServerVersionInfo", nsmap={"h": T_NS})
        for k, v in zip(
            ("MajorVersion", "MinorVersion", "MajorBuildNumber", "MinorBuildNumber"), self.build, strict=True
        ):
            svi.set(k, str(v))
        svi.set("Version", "V2017_07_11")
        return svi

    def _envelope(self, payload: etree._Element) -> bytes:
        env = etree.Element(_S + "Envelope", nsmap={"s": S_NS})
        svi = self._header(env)
        etree.SubElement(env, _S + "Body").append(payload)
        if self._validator is not None:
            for el in (svi, payload):
                err = self._validator.check(el)
                if err is not None:
                    self._violation(
                        f"{etree.QName(payload).localname}: {err.message} (line {err.line})",
                        etree.tostring(payload, encoding="unicode")[:4000],
                    )
        out: bytes = etree.tostring(env, xml_declaration=True, encoding="utf-8")
        return out

    def _violation(self, summary: str, body: str) -> None:
        log.error("sandbox response failed schema validation: %s", summary)
        with self._stats_lock:
            self.violations += 1
            if len(self._violation_details) < 200:
                self._violation_details.append(f"{summary}\n{body}")

    def _fault(self, f: _Fault) -> bytes:
        env = etree.Element(_S + "Envelope", nsmap={"s": S_NS})
        self._header(env)
        fault = etree.SubElement(etree.SubElement(env, _S + "Body"), _S + "Fault")
        fc = etree.SubElement(fault, "faultcode", nsmap={"a": T_NS})
        fc.text = f.faultcode or f"a:{f.code}"
        fs = etree.SubElement(fault, "faultstring")
        fs.set(f"{{{XML_NS}}}lang", "en-US")
        fs.text = f.text
        detail = etree.SubElement(fault, "detail")
        etree.SubElement(detail, f"{{{E_NS}}}ResponseCode", nsmap={"e": E_NS}).text = f.code
        etree.SubElement(detail, f"{{{E_NS}}}Message", nsmap={"e": E_NS}).text = f.text
        if f.xml is not None:
            detail.append(f.xml)
        out: bytes = etree.tostring(env, xml_declaration=True, encoding="utf-8")
        return out

    # ------------------------------------------------------------------------------------------
    # statistics

    def _count(self, mailbox: str, op: str) -> None:
        with self._stats_lock:
            self._counts.setdefault(mailbox, Counter())[op] += 1

    def request_counts(self, mailbox: str | None = None) -> dict[str, int]:
        with self._stats_lock:
            if mailbox is not None:
                return dict(self._counts.get(mailbox.strip().lower(), Counter()))
            total: Counter[str] = Counter()
            for c in self._counts.values():
                total.update(c)
            return dict(total)

    def violation_details(self) -> list[str]:
        with self._stats_lock:
            return list(self._violation_details)

    # ------------------------------------------------------------------------------------------
    # inspection and phone simulation

    def _ctx(self, mailbox: str) -> Ctx:
        return Ctx(self.store, self.model, mailbox.strip().lower(), "Inspect")

    def list_folders(self, mailbox: str) -> list[dict[str, Any]]:
        with self.store.lock:
            ctx = self._ctx(mailbox)
            counts = self.store.item_counts(ctx.mailbox)
            return [
                {
                    "id": f["id"],
                    "name": f["display_name"],
                    "folder_class": f["folder_class"],
                    "distinguished_id": f["distinguished"],
                    "parent_id": f["parent_id"],
                    "total_count": counts.get(f["id"], 0),
                }
                for f in ctx.folders().values()
            ]

    def _folder(self, ctx: Ctx, folder: str) -> dict[str, Any]:
        f = ctx.folders().get(folder)
        if f is None:
            try:
                f = ctx.dist(folder)
            except MsgError:
                raise KeyError(f"no folder {folder!r} in mailbox {ctx.mailbox}") from None
        return f

    def list_items(self, mailbox: str, folder: str = "contacts") -> list[dict[str, Any]]:
        with self.store.lock:
            ctx = self._ctx(mailbox)
            f = self._folder(ctx, folder)
            out = []
            for row in self.store.items(ctx.mailbox, f["id"]):
                view = item_view(ctx, row)
                plain = {}
                for k, v in view.items():
                    if k in ("ItemId", "ParentFolderId", "EffectiveRights") or k.startswith("$"):
                        continue
                    plain[snake(k)] = to_plain(k, v)
                if isinstance(row["data"].get("Body"), dict):
                    plain["body_type"] = row["data"]["Body"].get("@BodyType")
                plain["item_id"] = row["id"]
                plain["change_key"] = row["change_key"]
                plain["item_class"] = KINDS[row["kind"]].plain
                plain["extended_properties"] = {
                    ext_plain_name(e): e.get("value", e.get("values")) for e in row["ext"].values()
                }
                out.append(plain)
            return out

    def phone_edit(self, mailbox: str, item_id: str, **fields: Any) -> str:
        with self.store.lock:
            ctx = self._ctx(mailbox)
            row = self.store.item(ctx.mailbox, item_id)
            if row is None:
                raise KeyError(f"no item {item_id!r} in mailbox {ctx.mailbox}")
            row = copy.deepcopy(row)
            kind = KINDS[row["kind"]]
            changed = set()
            for key, value in fields.items():
                name = camel(key)
                v = from_plain(self.model, kind, name, value)
                if v is None:
                    row["data"].pop(name, None)
                else:
                    row["data"][name] = v
                changed.add(name)
            try:
                normalize(kind, row["data"], changed)
            except MsgError as exc:
                raise ValueError(exc.text) from None
            change_key = row["change_key"] = ids.new_change_key()
            row["modified"] = xmlio.utc_now()
            self.store.begin()
            try:
                self.store.update_item(row)
                self.store.commit()
            except BaseException:
                self.store.rollback()
                raise
            return change_key

    def phone_delete(self, mailbox: str, item_id: str) -> None:
        with self.store.lock:
            ctx = self._ctx(mailbox)
            if self.store.item(ctx.mailbox, item_id) is None:
                raise KeyError(f"no item {item_id!r} in mailbox {ctx.mailbox}")
            self.store.begin()
            self.store.delete_item(item_id)
            self.store.commit()

    def close(self) -> None:
        self.store.close()

    # ------------------------------------------------------------------------------------------
    # playing a server that drops fields

    def ignore_field(self, name: str, *, on: tuple[str, ...] = ("create", "update")) -> None:
        """From now on, answer NoError but do not store the EWS field ``name`` (e.g. "ReminderDueBy",
        "ReminderIsSet") in CreateItem and/or UpdateItem, as some non-Microsoft servers do."""
        with self.store.lock:
            self._ignored = self._ignored | {(name, op) for op in on}

    def clear_ignored_fields(self) -> None:
        with self.store.lock:
            self._ignored = frozenset()


def _schema_xml(err: ValidationError) -> etree._Element:
    mx = etree.Element(f"{{{T_NS}}}MessageXml", nsmap={"t": T_NS})
    etree.SubElement(mx, TP + "LineNumber").text = str(err.line)
    etree.SubElement(mx, TP + "LinePosition").text = str(err.column)
    etree.SubElement(mx, TP + "Violation").text = err.message
    return mx


__all__ = ["SandboxEngine", "MAX_BODY", "OPERATIONS", "M_NS"]
