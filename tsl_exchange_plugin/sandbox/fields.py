"""Item kinds, FieldURI paths, extended properties, projections and plain-data views."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from lxml import etree

from . import xmlio
from .schema import T_NS, Model, t

TP = f"{{{T_NS}}}"


@dataclass(frozen=True)
class Kind:
    element: str  # "Contact"
    type: str  # "{types}ContactItemType"
    prefix: str  # FieldURI prefix: "contacts"
    item_class: str  # "IPM.Contact"
    plain: str  # "contact"


KINDS: dict[str, Kind] = {
    "Contact": Kind("Contact", t("ContactItemType"), "contacts", "IPM.Contact", "contact"),
    "CalendarItem": Kind("CalendarItem", t("CalendarItemType"), "calendar", "IPM.Appointment", "calendar"),
    "Task": Kind("Task", t("TaskType"), "task", "IPM.Task", "task"),
}
PLAIN_KINDS = {k.plain: k for k in KINDS.values()}

# Properties the store computes; a client cannot set them (ErrorInvalidPropertySet).
READ_ONLY = frozenset(
    {
        "ItemId",
        "ParentFolderId",
        "DateTimeCreated",
        "DateTimeReceived",
        "DateTimeSent",
        "LastModifiedTime",
        "LastModifiedName",
        "Size",
        "HasAttachments",
        "IsAssociated",
        "EffectiveRights",
        "IsComplete",
        "ConversationId",
        "IsSubmitted",
        "IsDraft",
        "IsFromMe",
        "IsResend",
        "IsUnmodified",
        "ResponseObjects",
        "MimeContent",
        "Attachments",
        "CalendarItemType",
        "IsRecurring",
        "FirstOccurrence",
        "LastOccurrence",
        "ModifiedOccurrences",
        "DeletedOccurrences",
        "OriginalStart",
        "InstanceKey",
        "StoreEntryId",
    }
)

INDEXED = {
    "contacts:EmailAddress": "EmailAddresses",
    "contacts:PhoneNumber": "PhoneNumbers",
    "contacts:ImAddress": "ImAddresses",
    "contacts:PhysicalAddress": "PhysicalAddresses",
}
DICT_FIELDS = frozenset(INDEXED.values())
STRING_ARRAYS = frozenset({"Categories", "Companies", "Children", "Hashtags"})


class PathError(Exception):
    """An update or request path the item type does not have."""

    def __init__(self, code: str, text: str):
        super().__init__(text)
        self.code = code
        self.text = text


# ---------------------------------------------------------------------------------------------
# paths


@dataclass(frozen=True)
class Path:
    kind: str  # "field" | "indexed" | "ext"
    name: str = ""  # element name (field, indexed)
    key: str = ""  # FieldIndex (indexed) or extended-property key
    sub: str = ""  # sub-field for physical addresses
    uri: str = ""  # the FieldURI text
    attrs: tuple[Any, ...] = ()  # ExtendedFieldURI attributes


def parse_path(el: etree._Element) -> Path:
    local = etree.QName(el).localname
    if local == "FieldURI":
        uri = el.get("FieldURI", "")
        return Path("field", uri.split(":", 1)[-1], uri=uri)
    if local == "IndexedFieldURI":
        uri = el.get("FieldURI", "")
        base, _, sub = uri.rpartition(":") if uri.count(":") == 2 else (uri, "", "")
        name = INDEXED.get(base, base.split(":", 1)[-1])
        return Path("indexed", name, el.get("FieldIndex", ""), sub, uri)
    if local == "ExtendedFieldURI":
        attrs = tuple(sorted((k, v) for k, v in el.attrib.items() if not k.startswith("{")))
        return Path("ext", key=ext_key(dict(attrs)), attrs=attrs)
    raise PathError("ErrorInvalidPropertyRequest", f"Unsupported property path {local}.")


def check_path(model: Model, kind: Kind, path: Path) -> None:
    """ErrorInvalidPropertyRequest for a FieldURI that does not belong to the item type."""
    if path.kind == "ext":
        return
    prefix = path.uri.split(":", 1)[0]
    info = model.type(kind.type)
    assert info is not None, kind.type  # every item kind has its type in the schema model
    if prefix not in ("item", kind.prefix) or path.name not in info.index:
        raise PathError("ErrorInvalidPropertyRequest", "The property request was invalid.")


def ext_key(attrs: dict[str, Any]) -> str:
    pset = (attrs.get("DistinguishedPropertySetId") or attrs.get("PropertySetId") or "").lower()
    if attrs.get("PropertyName") is not None:
        ident = "n:" + attrs["PropertyName"]
    elif attrs.get("PropertyId") is not None:
        ident = f"i:{int(attrs['PropertyId'])}"
    elif attrs.get("PropertyTag") is not None:
        tag = attrs["PropertyTag"]
        ident = f"t:{int(tag, 16) if tag.lower().startswith('0x') else int(tag)}"
    else:
        ident = ""
    return f"{pset}|{ident}|{attrs.get('PropertyType', '')}"


_EXT_BOOL = {"Boolean"}
_EXT_INT = {"Integer", "Long", "Short", "Currency"}
_EXT_FLOAT = {"Double", "Float", "ApplicationTime"}


def ext_scalar(ptype: str, text: str, tz: str | None = None) -> xmlio.Scalar:
    base = ptype.removesuffix("Array")
    if base in _EXT_BOOL:
        return xmlio.to_scalar(text, "boolean")
    if base in _EXT_INT:
        return int(text.strip())
    if base in _EXT_FLOAT:
        return float(text.strip())
    if base == "SystemTime":
        return xmlio.canon_datetime(text, tz)
    return text or ""


def read_ext(el: etree._Element, tz: str | None = None) -> tuple[str, dict[str, Any]]:
    """An ExtendedProperty element -> (key, stored entry)."""
    uri = el.find(TP + "ExtendedFieldURI")
    attrs = {k: v for k, v in uri.attrib.items() if not k.startswith("{")}
    ptype = attrs.get("PropertyType", "String")
    entry: dict[str, Any] = {"uri": attrs}
    value = el.find(TP + "Value")
    if value is not None:
        entry["value"] = ext_scalar(ptype, value.text or "", tz)
    else:
        entry["values"] = [ext_scalar(ptype, v.text or "", tz) for v in el.iterfind(f"{TP}Values/{TP}Value")]
    return ext_key(attrs), entry


def write_ext(parent: etree._Element, entry: dict[str, Any]) -> None:
    el = etree.SubElement(parent, TP + "ExtendedProperty")
    uri = etree.SubElement(el, TP + "ExtendedFieldURI")
    for k, v in entry["uri"].items():
        uri.set(k, v)
    if "value" in entry:
        etree.SubElement(el, TP + "Value").text = xmlio.from_scalar(entry["value"])
    else:
        vals = etree.SubElement(el, TP + "Values")
        for v in entry.get("values", []):
            etree.SubElement(vals, TP + "Value").text = xmlio.from_scalar(v)


def ext_plain_name(entry: dict[str, Any]) -> str:
    uri = entry["uri"]
    return uri.get("PropertyName") or uri.get("PropertyId") or uri.get("PropertyTag") or ""


# ---------------------------------------------------------------------------------------------
# values for restrictions and sorting


def values_of(view: dict[str, Any], ext: dict[str, Any], path: Path) -> list[Any]:
    if path.kind == "ext":
        entry = ext.get(path.key)
        if entry is None:
            return []
        return list(entry["values"]) if "values" in entry else [entry["value"]]
    v = view.get(path.name)
    if v is None:
        return []
    if path.kind == "indexed":
        out = []
        for entry in v.get("Entry", []) if isinstance(v, dict) else []:
            if entry.get("@Key") != path.key:
                continue
            val = entry.get(path.sub) if path.sub else entry.get("#")
            if val is not None:
                out.append(val)
        return out
    return scalars(v)


def scalars(v: xmlio.JsonValue) -> list[Any]:
    if isinstance(v, dict):
        if "#" in v:
            return [v["#"]]
        if "String" in v:
            return list(v["String"])
        if "@Id" in v:
            return [v["@Id"]]
        return [v] if v else []
    if isinstance(v, list):
        return [x for item in v for x in scalars(item)]
    return [v]


def base_type_of(model: Model, type_name: str, path: Path) -> str:
    """The builtin XSD base of a path's values, to read a restriction's constant the same way."""
    if path.kind == "ext":
        pt = dict(path.attrs).get("PropertyType", "String").removesuffix("Array")
        return {
            "Boolean": "boolean",
            "SystemTime": "dateTime",
            "Integer": "int",
            "Long": "long",
            "Short": "short",
            "Double": "double",
            "Float": "double",
        }.get(pt, "string")
    if path.kind == "indexed":
        return "string"
    info = model.type(type_name)
    child = info.index.get(path.name) if info else None
    if child is None:
        return "string"
    cinfo = model.type(child.type)
    if cinfo is None:
        return "string"
    if cinfo.children:
        sub = cinfo.children[0]
        return model.simple_base(sub.type) if cinfo.name.endswith("ArrayOfStringsType") else "string"
    return cinfo.simple or "string"


# ---------------------------------------------------------------------------------------------
# plain data (inspection API)

_SNAKE = re.compile(r"(?<!^)(?=[A-Z][a-z])|(?<=[a-z0-9])(?=[A-Z])")


def snake(name: str) -> str:
    return _SNAKE.sub("_", name).lower()


def camel(name: str) -> str:
    return "".join(p[:1].upper() + p[1:] for p in name.split("_"))


def to_plain(name: str, v: xmlio.JsonValue) -> xmlio.JsonValue:
    if name in DICT_FIELDS and isinstance(v, dict):
        out: dict[str, Any] = {}
        for e in v.get("Entry", []):
            if "#" in e:
                out[e["@Key"]] = e["#"]
            else:
                out[e["@Key"]] = {snake(k): x for k, x in e.items() if not k.startswith(("@", "$"))}
        return out
    if name in STRING_ARRAYS and isinstance(v, dict):
        return list(v.get("String", []))
    if isinstance(v, dict):
        if set(v) <= {"#"} or (name == "Body" and "#" in v):
            return v.get("#")
        return {
            (snake(k[1:]) if k.startswith("@") else snake(k)): to_plain(k, x)
            for k, x in v.items()
            if k != "$extra"
        }
    if isinstance(v, list):
        return [to_plain(name, x) for x in v]
    return v


def from_plain(model: Model, kind: Kind, name: str, value: xmlio.JsonValue) -> xmlio.JsonValue:
    """Inverse of ``to_plain`` for phone edits; typed by the schema."""
    info = model.type(kind.type)
    assert info is not None, kind.type  # every item kind has its type in the schema model
    child = info.index.get(name)
    if child is None or name in READ_ONLY:
        raise KeyError(f"{kind.element} has no settable field {snake(name)!r}")
    if value is None:
        return None
    if name in DICT_FIELDS:
        entries = []
        for key, val in value.items():
            if isinstance(val, dict):
                entries.append({"@Key": key, **{camel(k): x for k, x in val.items()}})
            else:
                entries.append({"@Key": key, "#": val})
        return {"Entry": entries}
    if name in STRING_ARRAYS:
        return {"String": list(value)}
    if name == "Body":
        if isinstance(value, dict):
            return value
        return {"@BodyType": "Text", "#": value}
    cinfo = model.type(child.type)
    if cinfo is not None and cinfo.attrs and isinstance(value, dict):
        return {"@" + camel(k): x for k, x in value.items()}
    base = cinfo.simple if cinfo is not None else "string"
    if isinstance(value, str) and base in ("boolean", "dateTime", "int", "long", "double"):
        return xmlio.to_scalar(value, base)
    if base == "dateTime" and hasattr(value, "isoformat"):
        return xmlio.canon_datetime(value.isoformat())
    return value
