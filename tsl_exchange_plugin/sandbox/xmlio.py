"""Typed reading and canonical writing of EWS values, driven by the schema's type model.

A stored value is plain JSON: a scalar for simple elements, or a dict for complex ones with
``"@Attr"`` keys for attributes, ``"#"`` for simple content and child names for children
(a list when the schema lets the child repeat). Booleans are stored as bool and written as
``true``/``false``; dateTimes are stored and written as UTC with ``Z``.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from lxml import etree

from .schema import T_NS, Model, TypeInfo

S_NS = "http://schemas.xmlsoap.org/soap/envelope/"
E_NS = "http://schemas.microsoft.com/exchange/services/2006/errors"
TP = f"{{{T_NS}}}"

_INT_TYPES = {
    "int",
    "integer",
    "long",
    "short",
    "byte",
    "unsignedInt",
    "unsignedShort",
    "unsignedLong",
    "unsignedByte",
    "nonNegativeInteger",
    "positiveInteger",
    "nonPositiveInteger",
    "negativeInteger",
}
_FLOAT_TYPES = {"double", "float", "decimal"}

# Windows zone ids exchangelib sends, mapped to IANA for naive dateTimes and display names.
WINDOWS_ZONES: dict[str, tuple[str, str]] = {
    "W. Europe Standard Time": (
        "Europe/Berlin",
        "(UTC+01:00) Amsterdam, Berlin, Bern, Rome, Stockholm, Vienna",
    ),
    "Romance Standard Time": ("Europe/Paris", "(UTC+01:00) Brussels, Copenhagen, Madrid, Paris"),
    "Central Europe Standard Time": (
        "Europe/Budapest",
        "(UTC+01:00) Belgrade, Bratislava, Budapest, Ljubljana, Prague",
    ),
    "GMT Standard Time": ("Europe/London", "(UTC+00:00) Dublin, Edinburgh, Lisbon, London"),
    "UTC": ("UTC", "(UTC) Coordinated Universal Time"),
    "Eastern Standard Time": ("America/New_York", "(UTC-05:00) Eastern Time (US & Canada)"),
    "Pacific Standard Time": ("America/Los_Angeles", "(UTC-08:00) Pacific Time (US & Canada)"),
    "Tokyo Standard Time": ("Asia/Tokyo", "(UTC+09:00) Osaka, Sapporo, Tokyo"),
    "AUS Eastern Standard Time": ("Australia/Sydney", "(UTC+10:00) Canberra, Melbourne, Sydney"),
    "India Standard Time": ("Asia/Calcutta", "(UTC+05:30) Chennai, Kolkata, Mumbai, New Delhi"),
    "FLE Standard Time": ("Europe/Kiev", "(UTC+02:00) Helsinki, Kyiv, Riga, Sofia, Tallinn, Vilnius"),
    "Russian Standard Time": ("Europe/Moscow", "(UTC+03:00) Moscow, St. Petersburg"),
}


class ValueError_(ValueError):
    """A value the schema accepts lexically but the store cannot interpret."""


def parse_datetime(text: str, default_tz: str | None = None) -> datetime:
    s = text.strip()
    if s.endswith("Z") or s.endswith("z"):
        s = s[:-1] + "+00:00"
    # Python accepts at most 6 fraction digits
    if "." in s:
        head, _, rest = s.partition(".")
        digits = ""
        i = 0
        while i < len(rest) and rest[i].isdigit():
            digits += rest[i]
            i += 1
        s = head + ("." + (digits + "000000")[:6] if digits else "") + rest[i:]
    dt = datetime.fromisoformat(s)
    if dt.tzinfo is None:
        zone = WINDOWS_ZONES.get(default_tz or "", ("UTC", ""))[0]
        dt = dt.replace(tzinfo=ZoneInfo(zone))
    return dt.astimezone(UTC)


def canon_datetime(text: str, default_tz: str | None = None) -> str:
    return format_datetime(parse_datetime(text, default_tz))


def format_datetime(dt: datetime) -> str:
    dt = dt.astimezone(UTC)
    return dt.strftime("%Y-%m-%dT%H:%M:%S") + "Z"


# What a mailbox can hold. Exchange keeps times as FILETIME (PT_SYSTIME), counted from
# 1601-01-01 UTC; Outlook shows 1 January 4501 as "no date", and MS-OXOCAL's recurrence format
# writes 31 August 4500 for "no end". A value outside that is refused per item, as a value the
# store cannot hold (ErrorValueOutOfRange; the schema's ResponseCodeType has no
# ErrorInvalidPropertyValue, so that code cannot be answered).
STORE_EARLIEST = datetime(1601, 1, 1, tzinfo=UTC)
STORE_LATEST = datetime(4500, 8, 31, 23, 59, 59, tzinfo=UTC)


def in_store_range(canon: str) -> bool:
    """True if a canonical dateTime (as ``canon_datetime`` writes it) fits a mailbox."""
    return STORE_EARLIEST <= parse_datetime(canon) <= STORE_LATEST


def utc_now() -> str:
    return format_datetime(datetime.now(UTC))


Scalar = bool | int | float | str
JsonValue = Any  # a stored value: a scalar, or dicts and lists of them as the schema nests them


def to_scalar(text: str | None, base: str, tz: str | None = None) -> Scalar:
    """Lexical form -> Python value for a builtin XSD base."""
    text = text or ""
    if base == "boolean":
        v = text.strip()
        if v in ("true", "1"):
            return True
        if v in ("false", "0"):
            return False
        raise ValueError_(f"invalid boolean {text!r}")
    if base in _INT_TYPES:
        return int(text.strip())
    if base in _FLOAT_TYPES:
        return float(text.strip())
    if base == "dateTime":
        return canon_datetime(text, tz)
    return text


def from_scalar(value: object) -> str:
    if value is True:
        return "true"
    if value is False:
        return "false"
    if isinstance(value, float):
        return repr(value) if value != int(value) else str(int(value))
    return str(value)


def read(model: Model, elem: etree._Element, type_name: str, tz: str | None = None) -> JsonValue:
    """Element -> stored value (typed, canonical)."""
    info = model.type(type_name)
    if info is None:
        return {"$xml": etree.tostring(elem, encoding="unicode")}
    if not info.children and not info.attrs and info.simple is not None:
        return to_scalar(elem.text, info.simple, tz)
    out: dict[str, Any] = {}
    for k, v in elem.attrib.items():
        if k.startswith("{"):
            continue
        base = info.attrs.get(k, "string")
        out["@" + k] = to_scalar(v, base, tz)
    if info.simple is not None:
        out["#"] = to_scalar(elem.text, info.simple, tz)
    for child in elem:
        if not isinstance(child.tag, str):
            continue
        local = etree.QName(child).localname
        c = info.index.get(local)
        if c is None:
            val = {"$xml": etree.tostring(child, encoding="unicode")}
            out.setdefault("$extra", []).append(val)
            continue
        val = read(model, child, c.type, tz)
        if c.repeat:
            out.setdefault(local, []).append(val)
        else:
            out[local] = val
    return out


def write(
    model: Model, parent: etree._Element, name: str, value: JsonValue, type_name: str, ns: str = T_NS
) -> None:
    """Stored value -> child element of ``parent``, children in schema order."""
    if isinstance(value, dict) and "$xml" in value:
        parent.append(etree.fromstring(value["$xml"]))
        return
    el = etree.SubElement(parent, f"{{{ns}}}{name}")
    fill(model, el, value, model.type(type_name))


def fill(model: Model, el: etree._Element, value: JsonValue, info: TypeInfo | None) -> None:
    if not isinstance(value, dict):
        el.text = from_scalar(value)
        return
    for k, v in value.items():
        if k.startswith("@") and v is not None:
            el.set(k[1:], from_scalar(v))
    if "#" in value:
        el.text = from_scalar(value["#"])
    if info is None:
        return
    keys = [k for k in value if not k.startswith(("@", "#", "$"))]
    keys.sort(key=lambda k: info.order.get(k, 10_000))
    for k in keys:
        c = info.index.get(k)
        ctype = c.type if c else ""
        v = value[k]
        for item in v if (c is not None and c.repeat and isinstance(v, list)) else [v]:
            write(model, el, k, item, ctype)


def shift_days(iso_utc: str, days: int) -> str:
    return format_datetime(parse_datetime(iso_utc) + timedelta(days=days))
