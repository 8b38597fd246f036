"""CreateItem, GetItem, UpdateItem, DeleteItem, FindItem for Contact, CalendarItem and Task."""

from __future__ import annotations

import copy
import json
from typing import Any

from lxml import etree

from . import ids, item_rules, series, task_series, xmlio
from .engine_ctx import FULL_RIGHTS, TP, Ctx, E, M, MsgError, Unit
from .fields import (
    KINDS,
    READ_ONLY,
    Kind,
    Path,
    PathError,
    check_path,
    parse_path,
    read_ext,
    write_ext,
)
from .ops_folders import page
from .restrictions import Predicate, SortKey, compile_restriction, sort_key
from .schema import t

_DEFAULT_FOLDER = {"Contact": "contacts", "CalendarItem": "calendar", "Task": "tasks"}
# Not part of AllProperties on real Exchange either (expensive or stream properties).
_NOT_IN_ALL = frozenset({"MimeContent", "TextBody", "UniqueBody", "NormalizedBody"})


# ---------------------------------------------------------------------------------------------
# semantics shared by create, update and phone edits


def normalize(kind: Kind, data: dict[str, Any], changed: set[str]) -> None:
    """Keep dependent fields coherent the way Exchange does (task completion, calendar span)."""
    if kind.element == "Task":
        status = data.get("Status")
        pc = data.get("PercentComplete")
        if "CompleteDate" in changed and data.get("CompleteDate") and "Status" not in changed:
            data["Status"] = status = "Completed"
            data["PercentComplete"] = pc = 100
        if "Status" in changed and status is not None:
            if status == "Completed":
                data["PercentComplete"] = 100
            elif status == "NotStarted":
                data["PercentComplete"] = 0
            elif pc is not None and pc >= 100:
                data["PercentComplete"] = 0
        elif "PercentComplete" in changed and pc is not None:
            if pc >= 100:
                data["Status"] = "Completed"
            elif pc <= 0 and status in (None, "Completed", "InProgress"):
                data["Status"] = "NotStarted"
            elif 0 < pc < 100 and status in (None, "Completed", "NotStarted"):
                data["Status"] = "InProgress"
        if data.get("Status") == "Completed":
            data.setdefault("CompleteDate", xmlio.utc_now())
        else:
            data.pop("CompleteDate", None)
    elif kind.element == "CalendarItem":
        start, end = data.get("Start"), data.get("End")
        if start and end and end < start:
            raise MsgError("ErrorCalendarEndDateIsEarlierThanStartDate")


def defaults(kind: Kind, data: dict[str, Any]) -> None:
    data.setdefault("Sensitivity", "Normal")
    data.setdefault("Importance", "Normal")
    if kind.element == "CalendarItem":
        data.setdefault("IsAllDayEvent", False)
        data.setdefault("LegacyFreeBusyStatus", "Busy")
    elif kind.element == "Task":
        data.setdefault("Status", "NotStarted")
        data.setdefault("PercentComplete", 0)


def item_view(ctx: Ctx, row: dict[str, Any]) -> dict[str, Any]:
    """Stored fields plus the ones the server computes."""
    kind = KINDS[row["kind"]]
    view = dict(row["data"])
    view["ItemId"] = {"@Id": row["id"], "@ChangeKey": row["change_key"]}
    view["ParentFolderId"] = ctx.folder_id_attrs(row["folder_id"])
    view.setdefault("ItemClass", kind.item_class)
    view["DateTimeCreated"] = row["created"]
    view["DateTimeReceived"] = row["created"]
    view["LastModifiedTime"] = row["modified"]
    view["Size"] = len(json.dumps(row["data"])) + 64
    view["HasAttachments"] = False
    view["IsAssociated"] = False
    view["EffectiveRights"] = dict(FULL_RIGHTS)
    if kind.element == "Task":
        view["IsComplete"] = view.get("Status") == "Completed"
        task_series.view(view, row["data"], ctx.tz)
    elif kind.element == "CalendarItem":
        view["CalendarItemType"] = "Single"
        view["IsRecurring"] = False
        if series.is_master(row):
            series.master_view(view, row, ctx.tz)
    return view


# ---------------------------------------------------------------------------------------------
# shapes


class Shape:
    def __init__(self, ctx: Ctx, shape_el: etree._Element | None):
        self.base = (shape_el.findtext(TP + "BaseShape") if shape_el is not None else None) or "Default"
        self.paths: list[Path] = []
        if shape_el is not None:
            for p in shape_el.iterfind(f"{TP}AdditionalProperties/*"):
                try:
                    self.paths.append(parse_path(p))
                except PathError:
                    continue

    def project(self, ctx: Ctx, row: dict[str, Any], view: dict[str, Any]) -> dict[str, Any]:
        kind = KINDS[row["kind"]]
        info = ctx.model.type_of(kind.type)
        if self.base in ("AllProperties", "Default"):
            out = {k: v for k, v in view.items() if k in info.index and k not in _NOT_IN_ALL}
        else:
            out = {"ItemId": view["ItemId"]}
        ext_out = []
        for path in self.paths:
            if path.kind == "ext":
                entry = row["ext"].get(path.key)
                if entry is not None and entry not in ext_out:
                    ext_out.append(entry)
                continue
            prefix = path.uri.split(":", 1)[0]
            if prefix not in ("item", kind.prefix) or path.name not in info.index:
                continue
            value = view.get(path.name)
            if value is None:
                continue
            if path.kind == "field":
                out[path.name] = value
                continue
            entry = next((e for e in value.get("Entry", []) if e.get("@Key") == path.key), None)
            if entry is None or (path.sub and path.sub not in entry):
                continue
            box = out.setdefault(path.name, {"Entry": []})
            if box is value:  # already complete from the base shape
                continue
            mine = next((e for e in box["Entry"] if e.get("@Key") == path.key), None)
            if mine is None:
                mine = {"@Key": path.key} if path.sub else dict(entry)
                box["Entry"].append(mine)
            if path.sub:
                mine[path.sub] = entry[path.sub]
        if ext_out:
            out["ExtendedProperty"] = ext_out
        return out


def write_item(ctx: Ctx, parent: etree._Element, row: dict[str, Any], data: dict[str, Any]) -> None:
    kind = KINDS[row["kind"]]
    ext = data.pop("ExtendedProperty", None)
    if ext:
        # Extended properties are written by hand (their value type comes from PropertyType);
        # a placeholder keeps their schema position.
        data["ExtendedProperty"] = {"$ext": True}
    el = E(TP + kind.element, parent)
    info = ctx.model.type_of(kind.type)
    keys = sorted(data, key=lambda k: info.order.get(k, 10_000))
    for k in keys:
        if k == "ExtendedProperty":
            for entry in ext:
                write_ext(el, entry)
            continue
        c = info.index.get(k)
        if c is None:
            continue
        v = data[k]
        for item in v if (c.repeat and isinstance(v, list)) else [v]:
            xmlio.write(ctx.model, el, k, item, c.type)


# ---------------------------------------------------------------------------------------------
# reading item elements


def read_item(ctx: Ctx, kind: Kind, el: etree._Element) -> tuple[dict[str, Any], dict[str, Any]]:
    info = ctx.model.type_of(kind.type)
    data: dict[str, Any] = {}
    ext: dict[str, Any] = {}
    for child in el:
        if not isinstance(child.tag, str):
            continue
        name = etree.QName(child).localname
        if name == "ExtendedProperty":
            key, entry = read_ext(child, ctx.tz)
            ext[key] = entry
            continue
        c = info.index.get(name)
        if c is None or name in READ_ONLY:
            raise MsgError("ErrorInvalidPropertySet", f"The property {name} cannot be set.")
        value = _read_value(ctx, child, c.type, name)
        if c.repeat:
            data.setdefault(name, []).append(value)
        else:
            data[name] = value
    return data, ext


def _read_value(ctx: Ctx, el: etree._Element, type_name: str, name: str) -> xmlio.JsonValue:
    """One property's stored value; a value the mailbox cannot hold is that item's error."""
    try:
        value = xmlio.read(ctx.model, el, type_name, ctx.tz)
    except OverflowError as exc:  # a valid dateTime that leaves Python's range when moved to UTC
        raise MsgError("ErrorValueOutOfRange", f"The value of {name} is out of range.") from exc
    except (ValueError, TypeError) as exc:
        raise MsgError("ErrorInvalidPropertySet", f"The value of {name} is invalid.") from exc
    if ctx.model.simple_base(type_name) == "dateTime" and not xmlio.in_store_range(value):
        raise MsgError("ErrorValueOutOfRange", f"The value of {name} is out of range.")
    return value


def _item_id(el: etree._Element) -> tuple[str, str | None]:
    return el.get("Id", ""), el.get("ChangeKey")


def load_row(ctx: Ctx, item_id: str) -> dict[str, Any]:
    if not ids.is_well_formed(item_id, ids.ITEM_TAG):
        raise MsgError("ErrorInvalidIdMalformed")
    row = ctx.store.item(ctx.mailbox, item_id)
    if row is None:
        raise MsgError("ErrorItemNotFound")
    return row


# ---------------------------------------------------------------------------------------------
# operations


def create_item(ctx: Ctx, req: etree._Element) -> tuple[list[Unit], str | None]:
    folder_el = req.find(f"{M}SavedItemFolderId/*")

    def one(el: etree._Element) -> etree._Element:
        name = etree.QName(el).localname
        kind = KINDS.get(name)
        if kind is None:
            raise MsgError("ErrorInvalidItemForOperationCreateItem")
        folder = ctx.resolve_folder(folder_el) if folder_el is not None else ctx.dist(_DEFAULT_FOLDER[name])
        data, ext = read_item(ctx, kind, el)
        for field_name, op in ctx.ignored:
            if op == "create":
                data.pop(field_name, None)
        defaults(kind, data)
        normalize(kind, data, set(data))
        item_rules.apply(kind.element, data, ctx.tz)
        if kind.element == "CalendarItem":
            series.normalize_master(data, set(data), ctx.tz)
        elif kind.element == "Task":
            task_series.normalize(data, set(data))
        now = xmlio.utc_now()
        row = {
            "id": ids.new_item_id(),
            "mailbox": ctx.mailbox,
            "folder_id": folder["id"],
            "kind": name,
            "change_key": ids.new_change_key(),
            "data": data,
            "ext": ext,
            "created": now,
            "modified": now,
        }
        ctx.store.insert_item(row)
        msg = ctx.message()
        out = E(TP + name, E(M + "Items", msg))
        E(TP + "ItemId", out, Id=row["id"], ChangeKey=row["change_key"])
        return msg

    return ctx.each(req.iterfind(f"{M}Items/*"), one, "Items")


def get_item(ctx: Ctx, req: etree._Element) -> tuple[list[Unit], str | None]:
    shape = Shape(ctx, req.find(M + "ItemShape"))

    def one(el: etree._Element) -> etree._Element:
        row, view = _resolve_view(ctx, el)
        msg = ctx.message()
        write_item(ctx, E(M + "Items", msg), row, shape.project(ctx, row, view))
        return msg

    return ctx.each(req.iterfind(f"{M}ItemIds/*"), one, "Items")


def _resolve_view(ctx: Ctx, el: etree._Element) -> tuple[dict[str, Any], dict[str, Any]]:
    """The row and view an ItemId, OccurrenceItemId or RecurringMasterItemId names."""
    ref = series.resolve(ctx, el)
    if ref is None:
        row = load_row(ctx, el.get("Id", ""))
        return row, item_view(ctx, row)
    row = series.master_row(ctx, ref[0])
    if ref[1] is None:
        return row, item_view(ctx, row)
    occ = series.occurrence(row, ref[1], ctx.tz)
    return row, series.occurrence_view(item_view(ctx, row), row, occ)


def _touch(ctx: Ctx, row: dict[str, Any]) -> None:
    row["change_key"] = ids.new_change_key()
    row["modified"] = xmlio.utc_now()
    ctx.store.update_item(row)


def delete_item(ctx: Ctx, req: etree._Element) -> tuple[list[Unit], str | None]:
    def one(el: etree._Element) -> etree._Element:
        # Exchange ignores the ChangeKey on DeleteItem.
        ref = series.resolve(ctx, el)
        if ref is not None and ref[1] is not None:
            # One occurrence: it joins the master's DeletedOccurrences.
            row = copy.deepcopy(series.master_row(ctx, ref[0]))
            series.delete_occurrence(ctx, row, ref[1])
            _touch(ctx, row)
            return ctx.message()
        row = series.master_row(ctx, ref[0]) if ref is not None else load_row(ctx, el.get("Id", ""))
        ctx.store.delete_item(row["id"])
        return ctx.message()

    return ctx.each(req.iterfind(f"{M}ItemIds/*"), one, None)


def apply_updates(ctx: Ctx, row: dict[str, Any], updates: etree._Element) -> set[str]:
    """Apply an ItemChange's updates to ``row`` (in place); returns the names of the fields set or
    deleted."""
    kind = KINDS[row["kind"]]
    info = ctx.model.type_of(kind.type)
    data, ext = row["data"], row["ext"]
    before = copy.deepcopy(data)
    changed: set[str] = set()
    for upd in updates:
        if not isinstance(upd.tag, str):
            continue
        op = etree.QName(upd).localname
        parts = [c for c in upd if isinstance(c.tag, str)]
        try:
            path = parse_path(parts[0])
            check_path(ctx.model, kind, path)
        except PathError as exc:
            raise MsgError(exc.code, exc.text) from exc
        if path.kind != "ext" and path.name in READ_ONLY:
            raise MsgError("ErrorInvalidPropertySet")
        if path.kind != "ext" and (path.name, "update") in ctx.ignored:
            continue  # answered NoError, never stored
        if op == "DeleteItemField":
            _delete(data, ext, path)
            changed.add(path.name)
            continue
        item_el = parts[1] if len(parts) > 1 else None
        if item_el is None:
            raise MsgError("ErrorInvalidPropertySet")
        if path.kind == "ext":
            src = item_el.find(TP + "ExtendedProperty")
            if src is None:
                raise MsgError("ErrorInvalidPropertySet")
            key, entry = read_ext(src, ctx.tz)
            if key != path.key:
                raise MsgError("ErrorInvalidPropertySet", "The extended property does not match its path.")
            ext[key] = entry
            continue
        src = item_el.find(TP + path.name)
        if src is None:
            raise MsgError("ErrorInvalidPropertySet", f"The item has no {path.name} for this update.")
        child = info.index[path.name]
        value = _read_value(ctx, src, child.type, path.name)
        changed.add(path.name)
        if path.kind == "field":
            if op == "AppendToItemField" and path.name in data:
                data[path.name] = _append(data[path.name], value)
            else:
                data[path.name] = value
            continue
        # indexed: replace one entry, or one sub-field of it
        new = next((e for e in value.get("Entry", []) if e.get("@Key") == path.key), None)
        if new is None:
            raise MsgError("ErrorInvalidPropertySet", f"No entry {path.key} in {path.name}.")
        box = data.setdefault(path.name, {"Entry": []})
        entries = box.setdefault("Entry", [])
        old = next((e for e in entries if e.get("@Key") == path.key), None)
        if path.sub:
            if path.sub not in new:
                raise MsgError("ErrorInvalidPropertySet", f"No {path.sub} in entry {path.key}.")
            if old is None:
                old = {"@Key": path.key}
                entries.append(old)
            old[path.sub] = new[path.sub]
        elif old is None:
            entries.append(new)
        else:
            entries[entries.index(old)] = new
    normalize(kind, data, changed)
    item_rules.apply(kind.element, data, ctx.tz)
    if kind.element == "CalendarItem":
        series.normalize_master(data, changed, ctx.tz)
    elif kind.element == "Task":
        task_series.normalize(data, changed, before)
    return changed


def _append(old: xmlio.JsonValue, new: xmlio.JsonValue) -> xmlio.JsonValue:
    if isinstance(old, dict) and isinstance(new, dict):
        if "String" in old:
            return {**old, "String": old["String"] + new.get("String", [])}
        if "#" in old:
            return {**old, "#": str(old["#"]) + str(new.get("#", ""))}
    if isinstance(old, str) and isinstance(new, str):
        return old + new
    raise MsgError("ErrorInvalidPropertySet", "This property cannot be appended to.")


def _delete(data: dict[str, Any], ext: dict[str, Any], path: Path) -> None:
    # Deleting an absent field succeeds, as on Exchange.
    if path.kind == "ext":
        ext.pop(path.key, None)
        return
    if path.kind == "field":
        data.pop(path.name, None)
        return
    box = data.get(path.name)
    if not isinstance(box, dict):
        return
    entries = box.get("Entry", [])
    for e in list(entries):
        if e.get("@Key") != path.key:
            continue
        if path.sub:
            e.pop(path.sub, None)
            if not [k for k in e if not k.startswith("@")]:
                entries.remove(e)
        else:
            entries.remove(e)
    if not entries:
        data.pop(path.name, None)


def update_item(ctx: Ctx, req: etree._Element) -> tuple[list[Unit], str | None]:
    resolution = req.get("ConflictResolution", "AutoResolve")

    def one(change: etree._Element) -> etree._Element:
        id_el = next((c for c in change if isinstance(c.tag, str) and c.tag != TP + "Updates"), None)
        ref = series.resolve(ctx, id_el) if id_el is not None else None
        if ref is not None and ref[1] is not None:
            return _update_occurrence(ctx, change, id_el, ref[0], ref[1], resolution)
        item_id, ck = _item_id(id_el) if id_el is not None else ("", None)
        if ref is not None:
            item_id = ref[0]
        row = load_row(ctx, item_id)
        if not ck:
            raise MsgError("ErrorChangeKeyRequiredForWriteOperations")
        if ck != row["change_key"] and resolution == "NeverOverwrite":
            raise MsgError("ErrorIrresolvableConflict")
        row = copy.deepcopy(row)
        before = copy.deepcopy(row["data"])
        changed = apply_updates(ctx, row, change.find(TP + "Updates"))
        answer = row
        if row["kind"] == "Task":
            one_off = task_series.split(before, row["data"], changed, series.zone_of({}, ctx.tz))
            if one_off is not None:
                # UpdateItem operation (task): the answer names the new one-off task; the Id sent
                # stays the recurring task's, now on its next instance (task_series.py).
                answer = _insert_copy(ctx, row, one_off)
        row["change_key"] = ids.new_change_key()
        row["modified"] = xmlio.utc_now()
        ctx.store.update_item(row)
        msg = ctx.message()
        out = E(TP + row["kind"], E(M + "Items", msg))
        E(TP + "ItemId", out, Id=answer["id"], ChangeKey=answer["change_key"])
        E(TP + "Count", E(M + "ConflictResults", msg), "0")
        return msg

    return ctx.each(req.iterfind(f"{M}ItemChanges/{TP}ItemChange"), one, "Items")


def _insert_copy(ctx: Ctx, row: dict[str, Any], data: dict[str, Any]) -> dict[str, Any]:
    """A new item beside ``row`` with ``data`` and a copy of its extended properties."""
    now = xmlio.utc_now()
    new = {
        "id": ids.new_item_id(),
        "mailbox": row["mailbox"],
        "folder_id": row["folder_id"],
        "kind": row["kind"],
        "change_key": ids.new_change_key(),
        "data": data,
        "ext": copy.deepcopy(row["ext"]),
        "created": now,
        "modified": now,
    }
    ctx.store.insert_item(new)
    return new


def _update_occurrence(
    ctx: Ctx, change: etree._Element, id_el: etree._Element, master_id: str, index: int, resolution: str
) -> etree._Element:
    """An update of one occurrence: it becomes (or stays) an exception of its master."""
    row = copy.deepcopy(series.master_row(ctx, master_id))
    if not id_el.get("ChangeKey"):
        raise MsgError("ErrorChangeKeyRequiredForWriteOperations")
    if id_el.get("ChangeKey") != row["change_key"] and resolution == "NeverOverwrite":
        raise MsgError("ErrorIrresolvableConflict")
    occ = series.occurrence(row, index, ctx.tz)
    work = {**row, "data": copy.deepcopy(occ.data), "ext": copy.deepcopy(row["ext"])}
    apply_updates(ctx, work, change.find(TP + "Updates"))
    series.store_exception(ctx, row, index, occ.data, work["data"])
    _touch(ctx, row)
    msg = ctx.message()
    out = E(TP + row["kind"], E(M + "Items", msg))
    E(TP + "ItemId", out, Id=series.occurrence_id(row["id"], index), ChangeKey=row["change_key"])
    E(TP + "Count", E(M + "ConflictResults", msg), "0")
    return msg


def find_item(ctx: Ctx, req: etree._Element) -> tuple[list[Unit], str | None]:
    shape = Shape(ctx, req.find(M + "ItemShape"))
    restriction = req.find(M + "Restriction")
    cal = req.find(M + "CalendarView")
    view_el = None
    for name in ("IndexedPageItemView", "FractionalPageItemView", "ContactsView"):
        if req.find(M + name) is not None:
            view_el = req.find(M + name)
    preds: dict[str, Predicate] = {}

    def pred_for(kind_name: str) -> Predicate:
        if kind_name not in preds:
            preds[kind_name] = compile_restriction(ctx.model, KINDS[kind_name].type, restriction, ctx.tz)
        return preds[kind_name]

    sort_paths = []
    for fo in req.iterfind(f"{M}SortOrder/{TP}FieldOrder"):
        p = next((c for c in fo if isinstance(c.tag, str)), None)
        if p is not None:
            sort_paths.append((parse_path(p), fo.get("Order", "Ascending") == "Descending"))

    def one(pid: etree._Element) -> etree._Element:
        folder = ctx.resolve_folder(pid)
        rows = ctx.store.items(ctx.mailbox, folder["id"])
        matched = []
        for row in rows:
            view = item_view(ctx, row)
            views = [view]
            if cal is not None:
                if row["kind"] != "CalendarItem":
                    continue
                lo = xmlio.canon_datetime(cal.get("StartDate", ""), ctx.tz)
                hi = xmlio.canon_datetime(cal.get("EndDate", ""), ctx.tz)
                if series.is_master(row):
                    # A CalendarView shows a series as its occurrences, never the master.
                    views = [series.occurrence_view(view, row, o) for o in series.expand(row, ctx.tz, lo, hi)]
                else:
                    s = view.get("Start")
                    if not s:
                        continue
                    e = view.get("End") or s
                    if not (s < hi and e > lo or s == e == lo):
                        continue
            for view in views:
                try:
                    ok = pred_for(row["kind"])(view, row["ext"])
                except PathError as exc:
                    raise MsgError(exc.code, exc.text) from exc
                if ok:
                    matched.append((row, view))
        for path, desc in reversed(sort_paths):
            by = sort_key(path, desc)

            def order(rv: tuple[dict[str, Any], dict[str, Any]], by: SortKey = by) -> tuple[bool, Any]:
                return by((rv[1], rv[0]["ext"]))

            matched.sort(key=order, reverse=desc)
        if cal is not None:
            n = min(int(cal.get("MaxEntriesReturned") or 1000), 1000)
            start, end = 0, min(n, len(matched))
            attrs = {
                "TotalItemsInView": str(len(matched)),
                "IncludesLastItemInRange": "true" if end >= len(matched) else "false",
            }
        else:
            start, end, attrs = page(
                view_el if view_el is not None and "Page" in view_el.tag else None, len(matched)
            )
        msg = ctx.message()
        box = E(TP + "Items", E(M + "RootFolder", msg, **attrs))
        for row, view in matched[start:end]:
            write_item(ctx, box, row, shape.project(ctx, row, view))
        return msg

    return ctx.each(req.iterfind(f"{M}ParentFolderIds/*"), one, None)


__all__ = [
    "create_item",
    "get_item",
    "update_item",
    "delete_item",
    "find_item",
    "item_view",
    "normalize",
    "defaults",
    "t",
]
