"""GetFolder, FindFolder, CreateFolder, DeleteFolder."""

from __future__ import annotations

from typing import Any

from lxml import etree

from . import xmlio
from .engine_ctx import (
    FULL_RIGHTS,
    TP,
    Ctx,
    E,
    M,
    MsgError,
    Unit,
    folder_element_name,
    new_folder,
)
from .fields import PathError, parse_path
from .restrictions import compile_restriction
from .schema import t

_DEFAULT_SHAPE = ("FolderId", "DisplayName", "TotalCount", "ChildFolderCount", "UnreadCount")


def folder_view(ctx: Ctx, f: dict[str, Any], counts: dict[str, int]) -> dict[str, Any]:
    folders = ctx.folders()
    view: dict[str, Any] = {"FolderId": {"@Id": f["id"], "@ChangeKey": f["change_key"]}}
    if f["parent_id"]:
        view["ParentFolderId"] = ctx.folder_id_attrs(f["parent_id"])
    if f["folder_class"]:
        view["FolderClass"] = f["folder_class"]
    view["DisplayName"] = f["display_name"]
    view["TotalCount"] = counts.get(f["id"], 0)
    view["ChildFolderCount"] = sum(1 for x in folders.values() if x["parent_id"] == f["id"])
    view["EffectiveRights"] = dict(FULL_RIGHTS)
    if f["distinguished"]:
        view["DistinguishedFolderId"] = f["distinguished"]
    view["UnreadCount"] = 0
    return view


def _shape(ctx: Ctx, shape_el: etree._Element | None) -> tuple[str, list[str]]:
    if shape_el is None:
        return "Default", []
    base = shape_el.findtext(TP + "BaseShape") or "Default"
    extra = []
    for p in shape_el.iterfind(f"{TP}AdditionalProperties/*"):
        path = parse_path(p)
        if path.kind == "field":
            extra.append(path.name)
    return base, extra


def write_folder(
    ctx: Ctx, parent: etree._Element, f: dict[str, Any], view: dict[str, Any], base: str, extra: list[str]
) -> None:
    name = folder_element_name(f["folder_class"])
    type_name = t(name + "Type")
    info = ctx.model.type_of(type_name)
    if base == "AllProperties":
        wanted = set(view)
    elif base == "Default":
        wanted = set(_DEFAULT_SHAPE) | set(extra)
    else:
        wanted = {"FolderId"} | set(extra)
    out = {k: v for k, v in view.items() if k in wanted and k in info.index}
    xmlio.write(ctx.model, parent, name, out, type_name)


def get_folder(ctx: Ctx, req: etree._Element) -> tuple[list[Unit], str | None]:
    base, extra = _shape(ctx, req.find(M + "FolderShape"))
    counts = ctx.store.item_counts(ctx.mailbox)

    def one(fid: etree._Element) -> etree._Element:
        f = ctx.resolve_folder(fid)
        msg = ctx.message()
        write_folder(ctx, E(M + "Folders", msg), f, folder_view(ctx, f, counts), base, extra)
        return msg

    return ctx.each(req.iterfind(f"{M}FolderIds/*"), one, "Folders")


def _descendants(ctx: Ctx, root_id: str, deep: bool) -> list[dict[str, Any]]:
    children: dict[str, list[dict[str, Any]]] = {}
    for f in ctx.folders().values():
        children.setdefault(f["parent_id"], []).append(f)
    out: list[dict[str, Any]] = []

    def walk(pid: str) -> None:
        for c in children.get(pid, []):
            out.append(c)
            if deep:
                walk(c["id"])

    walk(root_id)
    return out


def page(view_el: etree._Element | None, total: int, cap: int = 1000) -> tuple[int, int, dict[str, Any]]:
    """(start, end, RootFolder attributes) for an Indexed or Fractional page view."""
    if view_el is None:
        n = min(total, cap)
        return (
            0,
            n,
            {
                "IndexedPagingOffset": str(n),
                "TotalItemsInView": str(total),
                "IncludesLastItemInRange": "true" if n >= total else "false",
            },
        )
    local = etree.QName(view_el).localname
    n = int(view_el.get("MaxEntriesReturned") or cap)
    n = max(0, min(n, cap))
    if local.startswith("Fractional"):
        num, den = int(view_el.get("Numerator", "0")), max(1, int(view_el.get("Denominator", "1")))
        start = total * num // den
        end = min(total, start + n)
        return (
            start,
            end,
            {
                "NumeratorOffset": str(end),
                "AbsoluteDenominator": str(total),
                "TotalItemsInView": str(total),
                "IncludesLastItemInRange": "true" if end >= total else "false",
            },
        )
    offset = max(0, int(view_el.get("Offset", "0")))
    if view_el.get("BasePoint") == "End":
        end = max(0, total - offset)
        start = max(0, end - n)
        return (
            start,
            end,
            {
                "IndexedPagingOffset": str(max(0, total - start)),
                "TotalItemsInView": str(total),
                "IncludesLastItemInRange": "true" if start <= 0 else "false",
            },
        )
    start = min(offset, total)
    end = min(total, start + n)
    return (
        start,
        end,
        {
            "IndexedPagingOffset": str(end),
            "TotalItemsInView": str(total),
            "IncludesLastItemInRange": "true" if end >= total else "false",
        },
    )


def find_folder(ctx: Ctx, req: etree._Element) -> tuple[list[Unit], str | None]:
    base, extra = _shape(ctx, req.find(M + "FolderShape"))
    traversal = req.get("Traversal", "Shallow")
    view_el = req.find(M + "IndexedPageFolderView")
    if view_el is None:
        view_el = req.find(M + "FractionalPageFolderView")
    try:
        pred = compile_restriction(ctx.model, t("FolderType"), req.find(M + "Restriction"), ctx.tz)
    except PathError as exc:
        err = MsgError(exc.code, exc.text)
        return [lambda: ctx.error(err) for _ in req.iterfind(f"{M}ParentFolderIds/*")], None
    counts = ctx.store.item_counts(ctx.mailbox)

    def one(pid: etree._Element) -> etree._Element:
        parent = ctx.resolve_folder(pid)
        if traversal == "SoftDeleted":
            found = []
        else:
            found = _descendants(ctx, parent["id"], traversal == "Deep")
        views = [(f, folder_view(ctx, f, counts)) for f in found]
        views = [(f, v) for f, v in views if pred(v, {})]
        start, end, attrs = page(view_el, len(views))
        msg = ctx.message()
        root = E(M + "RootFolder", msg, **attrs)
        box = E(TP + "Folders", root)
        for f, v in views[start:end]:
            write_folder(ctx, box, f, v, base, extra)
        return msg

    return ctx.each(req.iterfind(f"{M}ParentFolderIds/*"), one, None)


def create_folder(ctx: Ctx, req: etree._Element) -> tuple[list[Unit], str | None]:
    parent_el = req.find(f"{M}ParentFolderId/*")

    def one(fel: etree._Element) -> etree._Element:
        parent = ctx.resolve_folder(parent_el)
        name = fel.findtext(TP + "DisplayName") or ""
        element = etree.QName(fel).localname
        fclass = fel.findtext(TP + "FolderClass") or {
            "ContactsFolder": "IPF.Contact",
            "CalendarFolder": "IPF.Appointment",
            "TasksFolder": "IPF.Task",
        }.get(element, "IPF.Note")
        for f in ctx.folders().values():
            if f["parent_id"] == parent["id"] and f["display_name"].casefold() == name.casefold():
                raise MsgError("ErrorFolderExists")
        f = new_folder(ctx.mailbox, parent["id"], name, fclass, None)
        ctx.store.insert_folder(f)
        ctx.invalidate_folders()
        msg = ctx.message()
        out = E(TP + folder_element_name(fclass), E(M + "Folders", msg))
        E(TP + "FolderId", out, Id=f["id"], ChangeKey=f["change_key"])
        return msg

    return ctx.each(req.iterfind(f"{M}Folders/*"), one, "Folders")


def delete_folder(ctx: Ctx, req: etree._Element) -> tuple[list[Unit], str | None]:
    def one(fid: etree._Element) -> etree._Element:
        f = ctx.resolve_folder(fid)
        if f["distinguished"]:
            raise MsgError("ErrorDeleteDistinguishedFolder")
        for sub in reversed(_descendants(ctx, f["id"], True)):
            ctx.store.delete_folder(sub["id"])
        ctx.store.delete_folder(f["id"])
        ctx.invalidate_folders()
        return ctx.message()

    return ctx.each(req.iterfind(f"{M}FolderIds/*"), one, None)
