"""Stored items (the EWS sandbox's rows) as Graph JSON, and Graph bodies applied to stored items.

The store keeps EWS's shape (``fields.py``); this module is the only place that knows both.
Ids: Graph's REST ids are URL-safe, EWS ids are standard base64, so the sandbox's REST id of an
item is its EWS id with ``+/`` replaced by ``-_`` (an EWS id pasted into a URL is malformed, as
on a real server).
"""

from __future__ import annotations

import datetime as dt
import json
import re
from typing import Any
from zoneinfo import ZoneInfo

from .. import xmlio
from ..fields import ext_key

PS_PUBLIC_STRINGS = "00020329-0000-0000-c000-000000000046"
LINKS_KEY = "sandbox|n:graphLinkedResources|String"
LINKS_URI = {"PropertySetId": "5c7b0e0f-9d1a-4b59-a9e5-7a3f6d2c1b00", "PropertyName": "graphLinkedResources"}

# Windows ids Graph accepts, to IANA; plus the IANA ids Graph accepts as they are.
WINDOWS_TO_IANA = {k: v[0] for k, v in xmlio.WINDOWS_ZONES.items()} | {
    "Central European Standard Time": "Europe/Warsaw",
    "GTB Standard Time": "Europe/Bucharest",
    "Turkey Standard Time": "Europe/Istanbul",
    "Central Standard Time": "America/Chicago",
    "Mountain Standard Time": "America/Denver",
    "E. South America Standard Time": "America/Sao_Paulo",
    "China Standard Time": "Asia/Shanghai",
    "Arabian Standard Time": "Asia/Dubai",
    "Singapore Standard Time": "Asia/Singapore",
    "New Zealand Standard Time": "Pacific/Auckland",
    "Hawaiian Standard Time": "Pacific/Honolulu",
}
ACCEPTED_IANA = frozenset(
    {"Europe/Berlin", "Europe/Paris", "Europe/London", "Europe/Budapest", "Europe/Warsaw", "Etc/GMT", "UTC"}
)


class GraphError(Exception):
    def __init__(self, status: int, code: str, message: str, headers: dict[str, Any] | None = None):
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.headers = headers or {}


def bad(code: str, message: str, status: int = 400) -> GraphError:
    return GraphError(status, code, message)


# ------------------------------------------------------------------ ids


def rest_id(ews_id: str) -> str:
    return ews_id.replace("+", "-").replace("/", "_")


def ews_id(rest: str) -> str:
    if "+" in rest or "/" in rest or not rest:
        raise bad("ErrorInvalidIdMalformed", "Id is malformed.")
    return rest.replace("-", "+").replace("_", "/")


def etag(change_key: str) -> str:
    return f'W/"{change_key}"'


# ------------------------------------------------------------------ extended properties

_EXT_ID = re.compile(r"^(String|Integer|Boolean|SystemTime) \{([0-9A-Fa-f-]{36})\} Name (\S.*)$")


def parse_ext_id(prop_id: str) -> tuple[str, dict[str, Any]]:
    """Graph's ``"String {guid} Name x"`` -> the store's ext key and ExtendedFieldURI attributes."""
    m = _EXT_ID.match(prop_id or "")
    if not m:
        raise bad(
            "ErrorInvalidProperty",
            "PropertyId values may only be in one of the following formats: "
            "'MapiPropertyType namespaceGuid Name propertyName', 'MapiPropertyType namespaceGuid Id propertyId' "
            "or 'MapiPropertyType propertyTag'.",
        )
    ptype, guid, name = m.groups()
    if guid.lower() == PS_PUBLIC_STRINGS:
        uri = {"DistinguishedPropertySetId": "PublicStrings", "PropertyName": name, "PropertyType": ptype}
    else:
        uri = {"PropertySetId": guid.lower(), "PropertyName": name, "PropertyType": ptype}
    return ext_key(uri), uri


def ext_graph_id(uri: dict[str, Any]) -> str:
    guid = (
        "{" + PS_PUBLIC_STRINGS.upper() + "}"
        if uri.get("DistinguishedPropertySetId") == "PublicStrings"
        else "{" + uri.get("PropertySetId", "") + "}"
    )
    return f"{uri.get('PropertyType', 'String')} {guid} Name {uri.get('PropertyName', '')}"


def apply_ext(ext: dict[str, Any], props: Any) -> None:
    if not isinstance(props, list):
        raise bad("BadRequest", "singleValueExtendedProperties must be an array.")
    for p in props:
        key, uri = parse_ext_id(str((p or {}).get("id", "")))
        value = (p or {}).get("value")
        if not isinstance(value, str):
            raise bad("BadRequest", "An extended property value must be a string.")
        ext[key] = {"uri": uri, "value": value}


def expanded_ext(ext: dict[str, Any], wanted: str | None) -> list[dict[str, Any]]:
    """``$expand=singleValueExtendedProperties($filter=id eq '...')``: only the named one."""
    if wanted is None:
        return []
    key, _ = parse_ext_id(wanted)
    entry = ext.get(key)
    if entry is None or "value" not in entry:
        return []
    return [{"id": ext_graph_id(entry["uri"]), "value": str(entry["value"])}]


# ------------------------------------------------------------------ times


def zone_of(name: str) -> ZoneInfo:
    iana = WINDOWS_TO_IANA.get(name)
    if iana is None and name in ACCEPTED_IANA:
        iana = name
    if iana is None:
        raise bad("TimeZoneNotSupportedException", f"A valid TimeZone value must be specified. ({name})")
    return ZoneInfo(iana)


def parse_dtz(value: Any, what: str) -> tuple[dt.datetime, str]:
    """A dateTimeTimeZone -> (aware datetime, the zone name as sent)."""
    if not isinstance(value, dict) or not value.get("dateTime"):
        raise bad("ErrorInvalidRequest", f"{what}: dateTime is required.")
    name = str(value.get("timeZone") or "UTC")
    zone = zone_of(name)
    text = str(value["dateTime"]).rstrip("Z")
    try:
        naive = xmlio.parse_datetime(text + "Z").replace(tzinfo=None)
    except ValueError:
        raise bad("ErrorInvalidRequest", f"{what}: invalid dateTime {value['dateTime']!r}.") from None
    return naive.replace(tzinfo=zone), name


def render(instant: dt.datetime, zone_name: str) -> dict[str, Any]:
    local = instant.astimezone(zone_of(zone_name))
    return {"dateTime": local.strftime("%Y-%m-%dT%H:%M:%S") + ".0000000", "timeZone": zone_name}


def _utc(text: str) -> dt.datetime:
    return xmlio.parse_datetime(text)


def _fmt(instant: dt.datetime) -> str:
    return xmlio.format_datetime(instant)


# ------------------------------------------------------------------ common parts


def _body_in(value: Any) -> dict[str, Any] | None:
    if value is None:
        return None
    if not isinstance(value, dict):
        raise bad("BadRequest", "body must be an object.")
    content = value.get("content")
    if not content:
        return None
    kind = "HTML" if str(value.get("contentType") or "text").lower() == "html" else "Text"
    return {"@BodyType": kind, "#": str(content)}


def _body_out(data: dict[str, Any]) -> dict[str, Any]:
    b = data.get("Body")
    if not isinstance(b, dict):
        return {"contentType": "text", "content": ""}
    return {"contentType": "html" if b.get("@BodyType") == "HTML" else "text", "content": b.get("#") or ""}


def _set(data: dict[str, Any], name: str, value: Any) -> None:
    if value is None or value == "" or value == [] or value == {}:
        data.pop(name, None)
    else:
        data[name] = value


def _categories_in(data: dict[str, Any], value: Any) -> None:
    if value is not None and not isinstance(value, list):
        raise bad("BadRequest", "categories must be an array.")
    _set(data, "Categories", {"String": [str(c) for c in value]} if value else None)


def _common_out(row: dict[str, Any]) -> dict[str, Any]:
    data = row["data"]
    return {
        "id": rest_id(row["id"]),
        "@odata.etag": etag(row["change_key"]),
        "changeKey": row["change_key"],
        "createdDateTime": row["created"],
        "lastModifiedDateTime": row["modified"],
        "categories": list((data.get("Categories") or {}).get("String", [])),
    }


# ------------------------------------------------------------------ contacts

_CONTACT_TEXT = {
    "displayName": "DisplayName",
    "fileAs": "FileAs",
    "givenName": "GivenName",
    "middleName": "MiddleName",
    "surname": "Surname",
    "nickName": "Nickname",
    "initials": "Initials",
    "generation": "Generation",
    "companyName": "CompanyName",
    "department": "Department",
    "jobTitle": "JobTitle",
    "businessHomePage": "BusinessHomePage",
}
_ADDRESS = {"businessAddress": "Business", "homeAddress": "Home", "otherAddress": "Other"}
_ADDRESS_PARTS = {
    "street": "Street",
    "city": "City",
    "state": "State",
    "countryOrRegion": "CountryOrRegion",
    "postalCode": "PostalCode",
}
_PHONES = {"businessPhones": ("BusinessPhone", "BusinessPhone2"), "homePhones": ("HomePhone", "HomePhone2")}


def _entries(data: dict[str, Any], name: str) -> list[dict[str, Any]]:
    return list((data.get(name) or {}).get("Entry", []))


def _put_entries(
    data: dict[str, Any], name: str, keep: list[dict[str, Any]], new: list[dict[str, Any]]
) -> None:
    entries = keep + new
    _set(data, name, {"Entry": entries} if entries else None)


def contact_apply(row: dict[str, Any], body: dict[str, Any]) -> None:
    data = row["data"]
    for gname, ename in _CONTACT_TEXT.items():
        if gname in body:
            _set(data, ename, body[gname])
    if "personalNotes" in body:
        notes = body["personalNotes"]
        _set(data, "Body", {"@BodyType": "Text", "#": notes} if notes else None)
    if "categories" in body:
        _categories_in(data, body["categories"])
    if "birthday" in body:
        _set(data, "Birthday", xmlio.canon_datetime(body["birthday"]) if body["birthday"] else None)
    if "emailAddresses" in body:
        emails = body["emailAddresses"] or []
        if len(emails) > 3:
            raise bad("ErrorInvalidArgument", "A contact can have at most three e-mail addresses.")
        new = [
            {"@Key": f"EmailAddress{n}", "#": str(e.get("address") or "")}
            for n, e in enumerate(emails, start=1)
            if e.get("address")
        ]
        _put_entries(data, "EmailAddresses", [], new)
    phones = _entries(data, "PhoneNumbers")
    for gname, labels in _PHONES.items():
        if gname in body:
            values = body[gname] or []
            if len(values) > len(labels):
                raise bad("ErrorInvalidArgument", f"{gname} holds at most {len(labels)} numbers.")
            phones = [e for e in phones if e["@Key"] not in labels]
            phones += [{"@Key": label, "#": v} for label, v in zip(labels, values, strict=False) if v]
    if "mobilePhone" in body:
        phones = [e for e in phones if e["@Key"] != "MobilePhone"]
        if body["mobilePhone"]:
            phones.append({"@Key": "MobilePhone", "#": body["mobilePhone"]})
    _put_entries(data, "PhoneNumbers", [], phones)
    addresses = _entries(data, "PhysicalAddresses")
    for gname, label in _ADDRESS.items():
        if gname in body:
            addresses = [e for e in addresses if e["@Key"] != label]
            value = body[gname] or {}
            parts = {_ADDRESS_PARTS[k]: v for k, v in value.items() if k in _ADDRESS_PARTS and v}
            if parts:
                addresses.append({"@Key": label, **parts})
    _put_entries(data, "PhysicalAddresses", [], addresses)
    if "singleValueExtendedProperties" in body:
        apply_ext(row["ext"], body["singleValueExtendedProperties"])


def contact_out(row: dict[str, Any], expand_ext: str | None) -> dict[str, Any]:
    data = row["data"]
    out = _common_out(row)
    for gname, ename in _CONTACT_TEXT.items():
        out[gname] = data.get(ename)
    phones = {e["@Key"]: e.get("#") for e in _entries(data, "PhoneNumbers")}
    out["businessPhones"] = [phones[k] for k in _PHONES["businessPhones"] if phones.get(k)]
    out["homePhones"] = [phones[k] for k in _PHONES["homePhones"] if phones.get(k)]
    out["mobilePhone"] = phones.get("MobilePhone")
    emails = sorted(_entries(data, "EmailAddresses"), key=lambda e: e["@Key"])
    out["emailAddresses"] = [{"name": e.get("#"), "address": e.get("#")} for e in emails]
    addresses = {e["@Key"]: e for e in _entries(data, "PhysicalAddresses")}
    for gname, label in _ADDRESS.items():
        a = addresses.get(label, {})
        out[gname] = {k: a.get(v) for k, v in _ADDRESS_PARTS.items() if a.get(v)}
    out["birthday"] = data.get("Birthday")
    out["personalNotes"] = (data.get("Body") or {}).get("#") or ""
    out["parentFolderId"] = rest_id(row["folder_id"])
    if expand_ext is not None:
        out["singleValueExtendedProperties"] = expanded_ext(row["ext"], expand_ext)
    return out


# ------------------------------------------------------------------ events

SHOW_AS = {
    "free": "Free",
    "busy": "Busy",
    "tentative": "Tentative",
    "oof": "OOF",
    "workingElsewhere": "WorkingElsewhere",
    "unknown": "NoData",
}
SHOW_AS_OUT = {v: k for k, v in SHOW_AS.items()}


def event_apply(row: dict[str, Any], body: dict[str, Any]) -> None:
    data = row["data"]
    if "subject" in body:
        _set(data, "Subject", body["subject"])
    if "body" in body:
        _set(data, "Body", _body_in(body["body"]))
    if "categories" in body:
        _categories_in(data, body["categories"])
    if "location" in body:
        loc = body["location"] or {}
        _set(data, "Location", loc.get("displayName"))
    if "showAs" in body:
        if body["showAs"] not in SHOW_AS:
            raise bad("BadRequest", f"Invalid showAs {body['showAs']!r}.")
        data["LegacyFreeBusyStatus"] = SHOW_AS[body["showAs"]]
    if "isReminderOn" in body:
        data["ReminderIsSet"] = bool(body["isReminderOn"])
    if "reminderMinutesBeforeStart" in body:
        data["ReminderMinutesBeforeStart"] = str(int(body["reminderMinutesBeforeStart"] or 0))
    all_day = bool(body.get("isAllDay", data.get("IsAllDayEvent", False)))
    data["IsAllDayEvent"] = all_day
    if "start" in body or "end" in body or "isAllDay" in body:
        start = parse_dtz(body["start"], "start") if "start" in body else None
        end = parse_dtz(body["end"], "end") if "end" in body else None
        if start is None or end is None:
            if "Start" not in data:
                raise bad("ErrorInvalidRequest", "An event needs start and end.")
            stz = (data.get("StartTimeZone") or {}).get("@Id", "UTC")
            start = start or (_utc(data["Start"]).astimezone(zone_of(stz)), stz)
            end = end or (_utc(data["End"]).astimezone(zone_of(stz)), stz)
        if end[0] < start[0]:
            raise bad("ErrorInvalidRequest", "The end of an event cannot be before its start.")
        if all_day:
            midnight = all(t.time() == dt.time(0) for t, _ in (start, end))
            if not midnight or start[1] != end[1] or end[0] <= start[0]:
                raise bad(
                    "ErrorInvalidRequest",
                    "All-day events must start and end at midnight in the same time zone, end after start.",
                )
        data["Start"] = _fmt(start[0])
        data["End"] = _fmt(end[0])
        data["StartTimeZone"] = {"@Id": start[1]}
        data["EndTimeZone"] = {"@Id": end[1]}
    if "singleValueExtendedProperties" in body:
        apply_ext(row["ext"], body["singleValueExtendedProperties"])


def event_span(row: dict[str, Any]) -> tuple[dt.datetime, dt.datetime]:
    return _utc(row["data"]["Start"]), _utc(row["data"]["End"])


def event_out(
    row: dict[str, Any], zone_name: str, expand_ext: str | None, transaction: str | None
) -> dict[str, Any]:
    data = row["data"]
    out = _common_out(row)
    start, end = event_span(row)
    stz = (data.get("StartTimeZone") or {}).get("@Id", "UTC")
    etz = (data.get("EndTimeZone") or {}).get("@Id", stz)
    all_day = bool(data.get("IsAllDayEvent"))
    if all_day:
        # Midnight to midnight of the calendar dates in the creating zone, labelled with the zone asked for.
        d0 = start.astimezone(zone_of(stz)).date()
        d1 = end.astimezone(zone_of(etz)).date()
        out["start"] = {"dateTime": f"{d0.isoformat()}T00:00:00.0000000", "timeZone": zone_name}
        out["end"] = {"dateTime": f"{d1.isoformat()}T00:00:00.0000000", "timeZone": zone_name}
    else:
        out["start"] = render(start, zone_name)
        out["end"] = render(end, zone_name)
    out.update(
        subject=data.get("Subject") or "",
        body=_body_out(data),
        isAllDay=all_day,
        showAs=SHOW_AS_OUT.get(data.get("LegacyFreeBusyStatus") or "Busy", "busy"),
        location={"displayName": data.get("Location") or ""},
        isReminderOn=bool(data.get("ReminderIsSet")),
        reminderMinutesBeforeStart=int(data.get("ReminderMinutesBeforeStart") or 0),
        originalStartTimeZone=stz,
        originalEndTimeZone=etz,
        type="singleInstance",
        transactionId=transaction,
    )
    if expand_ext is not None:
        out["singleValueExtendedProperties"] = expanded_ext(row["ext"], expand_ext)
    return out


# ------------------------------------------------------------------ To Do tasks

STATUS = {
    "notStarted": "NotStarted",
    "inProgress": "InProgress",
    "completed": "Completed",
    "waitingOnOthers": "WaitingOnOthers",
    "deferred": "Deferred",
}
STATUS_OUT = {v: k for k, v in STATUS.items()}


def _date_only(value: Any, what: str) -> str | None:
    if value is None:
        return None
    when, _ = parse_dtz(value, what)
    # To Do keeps only the date of a due or start date (NOTES §10), stored as UTC midnight like EWS.
    return f"{when.date().isoformat()}T00:00:00Z"


def task_apply(row: dict[str, Any], body: dict[str, Any]) -> None:
    if "singleValueExtendedProperties" in body:
        raise bad(
            "BadRequest",
            "The property 'singleValueExtendedProperties' does not exist on type 'microsoft.graph.todoTask'.",
        )
    data = row["data"]
    if "title" in body:
        _set(data, "Subject", body["title"])
    if "body" in body:
        _set(data, "Body", _body_in(body["body"]))
    if "categories" in body:
        _categories_in(data, body["categories"])
    if "dueDateTime" in body:
        _set(data, "DueDate", _date_only(body["dueDateTime"], "dueDateTime"))
    if "startDateTime" in body:
        _set(data, "StartDate", _date_only(body["startDateTime"], "startDateTime"))
    if "status" in body:
        if body["status"] not in STATUS:
            raise bad("BadRequest", f"Invalid status {body['status']!r}.")
        data["Status"] = STATUS[body["status"]]
        data["PercentComplete"] = 100 if body["status"] == "completed" else 0
    if "isReminderOn" in body:
        data["ReminderIsSet"] = bool(body["isReminderOn"])
    if "reminderDateTime" in body:
        value = body["reminderDateTime"]
        _set(data, "ReminderDueBy", _fmt(parse_dtz(value, "reminderDateTime")[0]) if value else None)
    if "linkedResources" in body:
        links = []
        for link in body["linkedResources"] or []:
            links.append({**link, "id": link.get("id") or _new_link_id()})
        row["ext"][LINKS_KEY] = {"uri": {**LINKS_URI, "PropertyType": "String"}, "value": json.dumps(links)}


def _new_link_id() -> str:
    import uuid

    return str(uuid.uuid4())


def task_links(row: dict[str, Any]) -> list[dict[str, Any]]:
    entry = row["ext"].get(LINKS_KEY)
    return json.loads(entry["value"]) if entry else []


def task_out(row: dict[str, Any], expand_links: bool) -> dict[str, Any]:
    data = row["data"]
    out = _common_out(row)
    out.pop("changeKey")
    for gname, ename in (("dueDateTime", "DueDate"), ("startDateTime", "StartDate")):
        value = data.get(ename)
        out[gname] = (
            {"dateTime": _utc(value).strftime("%Y-%m-%dT00:00:00.0000000"), "timeZone": "UTC"}
            if value
            else None
        )
    reminder = data.get("ReminderDueBy")
    out.update(
        title=data.get("Subject") or "",
        body=_body_out(data),
        status=STATUS_OUT.get(data.get("Status") or "NotStarted", "notStarted"),
        importance="normal",
        isReminderOn=bool(data.get("ReminderIsSet")),
        reminderDateTime=render(_utc(reminder), "UTC") if reminder else None,
    )
    if expand_links:
        out["linkedResources"] = task_links(row)
    return out
