"""Engine semantics without HTTP: ChangeKey rules, restrictions, paging, order, canonical values, faults."""

from __future__ import annotations

import threading

import pytest
from lxml import etree

from tsl_exchange_plugin.sandbox.engine import SandboxEngine
from tsl_exchange_plugin.sandbox.faults import Fault, FaultPlan
from tsl_exchange_plugin.sandbox.schema import model, t

ALICE = "alice@example.com"
NS = (
    'xmlns:s="http://schemas.xmlsoap.org/soap/envelope/" '
    'xmlns:m="http://schemas.microsoft.com/exchange/services/2006/messages" '
    'xmlns:t="http://schemas.microsoft.com/exchange/services/2006/types"'
)
EXT = '<t:ExtendedFieldURI DistinguishedPropertySetId="PublicStrings" PropertyName="tslRecordId" PropertyType="String"/>'


def soap(payload: str, tz: bool = True) -> bytes:
    hdr = '<t:RequestServerVersion Version="Exchange2016"/>'
    if tz:
        hdr += '<t:TimeZoneContext><t:TimeZoneDefinition Id="W. Europe Standard Time"/></t:TimeZoneContext>'
    return f'<?xml version="1.0" encoding="utf-8"?><s:Envelope {NS}><s:Header>{hdr}</s:Header><s:Body>{payload}</s:Body></s:Envelope>'.encode()


def call(engine: SandboxEngine, payload: str, status: int = 200) -> etree._Element:
    st, out = engine.handle(ALICE, soap(payload))
    assert st == status, out
    return etree.fromstring(out)


def codes(root) -> list[str]:
    return [e.text for e in root.iter("{*}ResponseCode")]


def create(engine, items: str, folder: str = "contacts") -> list[tuple[str, str]]:
    root = call(
        engine,
        f'<m:CreateItem MessageDisposition="SaveOnly"><m:SavedItemFolderId>'
        f'<t:DistinguishedFolderId Id="{folder}"/></m:SavedItemFolderId><m:Items>{items}</m:Items></m:CreateItem>',
    )
    assert set(codes(root)) == {"NoError"}, etree.tostring(root)
    return [(e.get("Id"), e.get("ChangeKey")) for e in root.iter("{*}ItemId")]


def contact(rid: str, surname: str = "Muster", extra: str = "") -> str:
    return (
        f"<t:Contact><t:Categories><t:String>tsl</t:String></t:Categories>"
        f"<t:ExtendedProperty>{EXT}<t:Value>{rid}</t:Value></t:ExtendedProperty>"
        f"<t:GivenName>Erika</t:GivenName>{extra}<t:Surname>{surname}</t:Surname></t:Contact>"
    )


def update(engine, iid, ck, updates: str, resolution: str = "AutoResolve") -> etree._Element:
    ckattr = f' ChangeKey="{ck}"' if ck is not None else ""
    return call(
        engine,
        f'<m:UpdateItem ConflictResolution="{resolution}" MessageDisposition="SaveOnly">'
        f'<m:ItemChanges><t:ItemChange><t:ItemId Id="{iid}"{ckattr}/><t:Updates>{updates}'
        f"</t:Updates></t:ItemChange></m:ItemChanges></m:UpdateItem>",
    )


def get(engine, iid, props: str = "", base: str = "IdOnly") -> etree._Element:
    add = f"<t:AdditionalProperties>{props}</t:AdditionalProperties>" if props else ""
    return call(
        engine,
        f"<m:GetItem><m:ItemShape><t:BaseShape>{base}</t:BaseShape>{add}</m:ItemShape>"
        f'<m:ItemIds><t:ItemId Id="{iid}"/></m:ItemIds></m:GetItem>',
    )


def find(
    engine,
    restriction: str = "",
    view: str = '<m:IndexedPageItemView MaxEntriesReturned="100" Offset="0" BasePoint="Beginning"/>',
    folder="contacts",
):
    r = f"<m:Restriction>{restriction}</m:Restriction>" if restriction else ""
    return call(
        engine,
        f'<m:FindItem Traversal="Shallow"><m:ItemShape><t:BaseShape>IdOnly</t:BaseShape>'
        f'<t:AdditionalProperties><t:FieldURI FieldURI="contacts:Surname"/></t:AdditionalProperties>'
        f'</m:ItemShape>{view}{r}<m:ParentFolderIds><t:DistinguishedFolderId Id="{folder}"/>'
        f"</m:ParentFolderIds></m:FindItem>",
    )


def surnames(root) -> list[str]:
    return [e.text for e in root.iter("{*}Surname")]


# --- ChangeKey rules ---------------------------------------------------------------------------

SET_SURNAME = (
    '<t:SetItemField><t:FieldURI FieldURI="contacts:Surname"/><t:Contact><t:Surname>Neu</t:Surname>'
    "</t:Contact></t:SetItemField>"
)


def test_changekey_rules(engine):
    ((iid, ck),) = create(engine, contact("r1"))
    assert codes(update(engine, iid, None, SET_SURNAME)) == ["ErrorChangeKeyRequiredForWriteOperations"]
    r = update(engine, iid, ck, SET_SURNAME)
    assert codes(r) == ["NoError"]
    new = r.find(".//{*}ItemId")
    assert new.get("Id") == iid and new.get("ChangeKey") != ck
    # stale change key: NeverOverwrite refuses, AutoResolve and AlwaysOverwrite apply
    assert codes(update(engine, iid, ck, SET_SURNAME, "NeverOverwrite")) == ["ErrorIrresolvableConflict"]
    assert codes(update(engine, iid, ck, SET_SURNAME, "AutoResolve")) == ["NoError"]
    assert codes(update(engine, iid, ck, SET_SURNAME, "AlwaysOverwrite")) == ["NoError"]
    # DeleteItem ignores the change key
    r = call(
        engine,
        f'<m:DeleteItem DeleteType="HardDelete"><m:ItemIds><t:ItemId Id="{iid}" ChangeKey="c3RhbGU="/>'
        f"</m:ItemIds></m:DeleteItem>",
    )
    assert codes(r) == ["NoError"]
    assert codes(get(engine, iid)) == ["ErrorItemNotFound"]


def test_error_message_shape_and_order(engine):
    ((iid, _),) = create(engine, contact("r1"))
    r = call(
        engine,
        f"<m:GetItem><m:ItemShape><t:BaseShape>IdOnly</t:BaseShape></m:ItemShape><m:ItemIds>"
        f'<t:ItemId Id="{iid}"/><t:ItemId Id="Zm9yZWlnbg=="/><t:ItemId Id="{iid[:-4]}AAA="/>'
        f'<t:ItemId Id="{iid}"/></m:ItemIds></m:GetItem>',
    )
    msgs = r.findall(".//{*}GetItemResponseMessage")
    assert [m.find("{*}ResponseCode").text for m in msgs] == [
        "NoError",
        "ErrorInvalidIdMalformed",
        "ErrorItemNotFound",
        "NoError",
    ]
    err = msgs[1]
    assert [etree.QName(c).localname for c in err] == [
        "MessageText",
        "ResponseCode",
        "DescriptiveLinkKey",
        "Items",
    ]
    assert err.get("ResponseClass") == "Error" and err.find("{*}DescriptiveLinkKey").text == "0"


def test_invalid_property_request_and_absent_delete(engine):
    ((iid, ck),) = create(engine, contact("r1"))
    r = update(
        engine,
        iid,
        ck,
        '<t:SetItemField><t:FieldURI FieldURI="calendar:Location"/><t:Contact>'
        "<t:Surname>x</t:Surname></t:Contact></t:SetItemField>",
    )
    assert codes(r) == ["ErrorInvalidPropertyRequest"]
    r = update(
        engine,
        iid,
        ck,
        '<t:DeleteItemField><t:FieldURI FieldURI="contacts:Nickname"/></t:DeleteItemField>'
        '<t:DeleteItemField><t:IndexedFieldURI FieldURI="contacts:PhoneNumber" FieldIndex="Pager"/>'
        "</t:DeleteItemField><t:DeleteItemField>"
        + EXT.replace("tslRecordId", "other")
        + "</t:DeleteItemField>",
    )
    assert codes(r) == ["NoError"]


def test_indexed_updates_per_subfield(engine):
    extra = (
        '<t:PhysicalAddresses><t:Entry Key="Business"><t:Street>A-Str. 1</t:Street><t:City>Berlin</t:City>'
        '</t:Entry></t:PhysicalAddresses><t:PhoneNumbers><t:Entry Key="BusinessPhone">1</t:Entry>'
        '<t:Entry Key="MobilePhone">2</t:Entry></t:PhoneNumbers>'
    )
    ((iid, ck),) = create(engine, contact("r1", extra=extra))
    r = update(
        engine,
        iid,
        ck,
        '<t:SetItemField><t:IndexedFieldURI FieldURI="contacts:PhysicalAddress:PostalCode" FieldIndex="Business"/>'
        '<t:Contact><t:PhysicalAddresses><t:Entry Key="Business"><t:PostalCode>10117</t:PostalCode></t:Entry>'
        "</t:PhysicalAddresses></t:Contact></t:SetItemField>"
        '<t:DeleteItemField><t:IndexedFieldURI FieldURI="contacts:PhysicalAddress:City" FieldIndex="Business"/>'
        "</t:DeleteItemField>"
        '<t:SetItemField><t:IndexedFieldURI FieldURI="contacts:PhoneNumber" FieldIndex="BusinessPhone"/>'
        '<t:Contact><t:PhoneNumbers><t:Entry Key="BusinessPhone">9</t:Entry></t:PhoneNumbers></t:Contact>'
        '</t:SetItemField><t:DeleteItemField><t:IndexedFieldURI FieldURI="contacts:PhoneNumber" '
        'FieldIndex="MobilePhone"/></t:DeleteItemField>',
    )
    assert codes(r) == ["NoError"]
    item = engine.list_items(ALICE)[0]
    assert item["physical_addresses"] == {"Business": {"street": "A-Str. 1", "postal_code": "10117"}}
    assert item["phone_numbers"] == {"BusinessPhone": "9"}
    # GetItem of one sub-field returns only that sub-field
    r = get(
        engine, iid, '<t:IndexedFieldURI FieldURI="contacts:PhysicalAddress:Street" FieldIndex="Business"/>'
    )
    entry = r.find(".//{*}PhysicalAddresses/{*}Entry")
    assert [etree.QName(c).localname for c in entry] == ["Street"]


# --- canonical output and order ----------------------------------------------------------------


def test_booleans_datetimes_and_xsd_order(engine):
    cal = (
        "<t:CalendarItem><t:Subject>Frist</t:Subject><t:ReminderIsSet>1</t:ReminderIsSet>"
        f"<t:ExtendedProperty>{EXT}<t:Value>d-1</t:Value></t:ExtendedProperty>"
        "<t:Start>2026-04-15T00:00:00+02:00</t:Start><t:End>2026-04-16T00:00:00+02:00</t:End>"
        '<t:IsAllDayEvent>1</t:IsAllDayEvent><t:StartTimeZone Id="W. Europe Standard Time"/>'
        '<t:EndTimeZone Id="W. Europe Standard Time"/></t:CalendarItem>'
    )
    ((iid, ck),) = create(engine, cal, "calendar")
    # a field arriving later is placed at its schema position, not appended
    update(
        engine,
        iid,
        ck,
        '<t:SetItemField><t:FieldURI FieldURI="calendar:Location"/><t:CalendarItem>'
        "<t:Location>Saal 1</t:Location></t:CalendarItem></t:SetItemField>"
        '<t:SetItemField><t:FieldURI FieldURI="item:Sensitivity"/><t:CalendarItem>'
        "<t:Sensitivity>Private</t:Sensitivity></t:CalendarItem></t:SetItemField>",
    )
    r = get(engine, iid, EXT, base="AllProperties")
    item = r.find(".//{*}CalendarItem")
    assert item.findtext("{*}ReminderIsSet") == "true"
    assert item.findtext("{*}IsAllDayEvent") == "true"
    assert item.findtext("{*}Start") == "2026-04-14T22:00:00Z"
    assert item.findtext("{*}End") == "2026-04-15T22:00:00Z"
    assert item.find("{*}StartTimeZone").get("Id") == "W. Europe Standard Time"
    names = [etree.QName(c).localname for c in item]
    order = model().type(t("CalendarItemType")).order
    assert names == sorted(names, key=lambda n: order[n])
    assert (
        names.index("Sensitivity")
        < names.index("ExtendedProperty")
        < names.index("Start")
        < names.index("Location")
    )
    # extended properties only when requested
    r = get(engine, iid, base="AllProperties")
    assert r.find(".//{*}ExtendedProperty") is None


def test_task_completion_is_coherent(engine):
    task = (
        "<t:Task><t:Subject>WV</t:Subject><t:DueDate>2026-03-05T00:00:00Z</t:DueDate>"
        "<t:PercentComplete>0</t:PercentComplete><t:Status>NotStarted</t:Status></t:Task>"
    )
    ((iid, ck),) = create(engine, task, "tasks")
    r = update(
        engine,
        iid,
        ck,
        '<t:SetItemField><t:FieldURI FieldURI="task:PercentComplete"/><t:Task>'
        "<t:PercentComplete>100</t:PercentComplete></t:Task></t:SetItemField>",
    )
    ck = r.find(".//{*}ItemId").get("ChangeKey")
    item = engine.list_items(ALICE, "tasks")[0]
    assert item["status"] == "Completed" and item["is_complete"] is True and item["complete_date"]
    update(
        engine,
        iid,
        ck,
        '<t:SetItemField><t:FieldURI FieldURI="task:Status"/><t:Task>'
        "<t:Status>InProgress</t:Status></t:Task></t:SetItemField>",
    )
    item = engine.list_items(ALICE, "tasks")[0]
    assert item["is_complete"] is False and item["percent_complete"] < 100 and "complete_date" not in item


# --- restrictions and paging --------------------------------------------------------------------


def test_restrictions(engine):
    create(engine, "".join(contact(f"r{i}", surname=f"Name{i}") for i in range(6)))
    c = lambda v: f'<t:FieldURIOrConstant><t:Constant Value="{v}"/></t:FieldURIOrConstant>'  # noqa: E731
    sur = '<t:FieldURI FieldURI="contacts:Surname"/>'
    assert surnames(find(engine, f"<t:IsEqualTo>{EXT}{c('r3')}</t:IsEqualTo>")) == ["Name3"]
    assert len(surnames(find(engine, f"<t:IsNotEqualTo>{EXT}{c('r3')}</t:IsNotEqualTo>"))) == 5
    assert surnames(find(engine, f"<t:IsGreaterThan>{sur}{c('Name3')}</t:IsGreaterThan>")) == [
        "Name4",
        "Name5",
    ]
    assert surnames(
        find(engine, f"<t:IsGreaterThanOrEqualTo>{sur}{c('Name4')}</t:IsGreaterThanOrEqualTo>")
    ) == ["Name4", "Name5"]
    assert surnames(find(engine, f"<t:IsLessThan>{sur}{c('Name1')}</t:IsLessThan>")) == ["Name0"]
    assert surnames(find(engine, f"<t:IsLessThanOrEqualTo>{sur}{c('Name1')}</t:IsLessThanOrEqualTo>")) == [
        "Name0",
        "Name1",
    ]
    assert (
        len(
            surnames(
                find(
                    engine,
                    f'<t:Contains ContainmentMode="Substring" ContainmentComparison="IgnoreCase">'
                    f'{sur}<t:Constant Value="AME"/></t:Contains>',
                )
            )
        )
        == 6
    )
    assert (
        surnames(
            find(
                engine,
                f'<t:Contains ContainmentMode="Prefixed" ContainmentComparison="Exact">'
                f'{sur}<t:Constant Value="name"/></t:Contains>',
            )
        )
        == []
    )
    assert len(surnames(find(engine, f"<t:Exists>{EXT}</t:Exists>"))) == 6
    assert surnames(find(engine, '<t:Exists><t:FieldURI FieldURI="contacts:Nickname"/></t:Exists>')) == []
    assert surnames(
        find(
            engine,
            f"<t:And><t:IsEqualTo>{EXT}{c('r1')}</t:IsEqualTo><t:IsEqualTo>{sur}{c('Name1')}"
            f"</t:IsEqualTo></t:And>",
        )
    ) == ["Name1"]
    assert surnames(
        find(
            engine,
            f"<t:Or><t:IsEqualTo>{EXT}{c('r1')}</t:IsEqualTo><t:IsEqualTo>{EXT}{c('r2')}"
            f"</t:IsEqualTo></t:Or>",
        )
    ) == ["Name1", "Name2"]
    assert len(surnames(find(engine, f"<t:Not><t:IsEqualTo>{EXT}{c('r1')}</t:IsEqualTo></t:Not>"))) == 5
    assert (
        len(
            surnames(
                find(
                    engine,
                    '<t:Contains ContainmentMode="FullString" ContainmentComparison="Exact">'
                    '<t:FieldURI FieldURI="item:Categories"/><t:Constant Value="tsl"/></t:Contains>',
                )
            )
        )
        == 6
    )


def test_paging_and_find_count_limit(engine):
    n = 1050
    for start in range(0, n, 350):
        create(
            engine, "".join(contact(f"p{i}", surname=f"S{i:04d}") for i in range(start, min(n, start + 350)))
        )
    r = find(
        engine, view='<m:IndexedPageItemView MaxEntriesReturned="5000" Offset="0" BasePoint="Beginning"/>'
    )
    root = r.find(".//{*}RootFolder")
    assert len(surnames(r)) == 1000  # EWSFindCountLimit
    assert root.get("TotalItemsInView") == str(n) and root.get("IncludesLastItemInRange") == "false"
    assert root.get("IndexedPagingOffset") == "1000"
    r = find(
        engine, view='<m:IndexedPageItemView MaxEntriesReturned="100" Offset="1000" BasePoint="Beginning"/>'
    )
    assert surnames(r) == [f"S{i:04d}" for i in range(1000, 1050)]
    assert r.find(".//{*}RootFolder").get("IncludesLastItemInRange") == "true"


def test_calendar_view_overlap(engine):
    def appt(s, e):
        return f"<t:CalendarItem><t:Subject>{s}</t:Subject><t:Start>{s}</t:Start><t:End>{e}</t:End></t:CalendarItem>"

    create(
        engine,
        appt("2026-03-01T10:00:00Z", "2026-03-01T11:00:00Z")
        + appt("2026-03-02T23:00:00Z", "2026-03-03T01:00:00Z")
        + appt("2026-03-05T10:00:00Z", "2026-03-05T11:00:00Z"),
        "calendar",
    )
    r = call(
        engine,
        '<m:FindItem Traversal="Shallow"><m:ItemShape><t:BaseShape>IdOnly</t:BaseShape>'
        '<t:AdditionalProperties><t:FieldURI FieldURI="item:Subject"/></t:AdditionalProperties></m:ItemShape>'
        '<m:CalendarView StartDate="2026-03-03T00:00:00Z" EndDate="2026-03-05T10:30:00Z"/>'
        '<m:ParentFolderIds><t:DistinguishedFolderId Id="calendar"/></m:ParentFolderIds></m:FindItem>',
    )
    assert [e.text for e in r.iter("{*}Subject")] == ["2026-03-02T23:00:00Z", "2026-03-05T10:00:00Z"]


# --- folders ----------------------------------------------------------------------------------


def test_folders(engine):
    body = (
        '<m:CreateFolder><m:ParentFolderId><t:DistinguishedFolderId Id="contacts"/></m:ParentFolderId>'
        "<m:Folders><t:ContactsFolder><t:DisplayName>timeSensor LEGAL</t:DisplayName></t:ContactsFolder>"
        "</m:Folders></m:CreateFolder>"
    )
    r = call(engine, body)
    assert codes(r) == ["NoError"]
    fid = r.find(".//{*}FolderId").get("Id")
    r = call(engine, body)
    assert codes(r) == ["ErrorFolderExists"] and r.find(".//{*}Folders") is not None
    find_body = (
        '<m:FindFolder Traversal="{t}"><m:FolderShape><t:BaseShape>Default</t:BaseShape></m:FolderShape>'
        '<m:IndexedPageFolderView MaxEntriesReturned="100" Offset="0" BasePoint="Beginning"/>{r}'
        '<m:ParentFolderIds><t:DistinguishedFolderId Id="{p}"/></m:ParentFolderIds></m:FindFolder>'
    )
    restr = (
        '<m:Restriction><t:IsEqualTo><t:FieldURI FieldURI="folder:DisplayName"/><t:FieldURIOrConstant>'
        '<t:Constant Value="timeSensor LEGAL"/></t:FieldURIOrConstant></t:IsEqualTo></m:Restriction>'
    )
    r = call(engine, find_body.format(t="Shallow", r=restr, p="contacts"))
    assert [e.get("Id") for e in r.iter("{*}FolderId")] == [fid]
    assert r.find(".//{*}ContactsFolder") is not None
    r = call(engine, find_body.format(t="Shallow", r="", p="root"))
    assert [e.text for e in r.iter("{*}DisplayName")] == ["Top of Information Store"]
    r = call(engine, find_body.format(t="Deep", r="", p="root"))
    assert "timeSensor LEGAL" in [e.text for e in r.iter("{*}DisplayName")]
    assert {f["name"] for f in engine.list_folders(ALICE)} >= {
        "Contacts",
        "Calendar",
        "Tasks",
        "timeSensor LEGAL",
    }
    r = call(
        engine,
        f'<m:DeleteFolder DeleteType="HardDelete"><m:FolderIds><t:FolderId Id="{fid}"/>'
        '<t:DistinguishedFolderId Id="contacts"/></m:FolderIds></m:DeleteFolder>',
    )
    assert codes(r) == ["NoError", "ErrorDeleteDistinguishedFolder"]


# --- faults and bad input ------------------------------------------------------------------------


def test_fault_server_busy(tmp_path):
    plan = FaultPlan()
    eng = SandboxEngine(tmp_path, faults=plan)
    eng.add_mailbox(ALICE)
    plan.add(Fault("server_busy", operation="CreateItem", back_off_ms=2500))
    st, out = eng.handle(ALICE, soap("<m:CreateItem><m:Items>" + contact("x") + "</m:Items></m:CreateItem>"))
    assert st == 500
    root = etree.fromstring(out)
    assert root.findtext(".//faultcode") == "a:ErrorServerBusy"
    assert root.find(".//{*}Value[@Name='BackOffMilliseconds']").text == "2500"
    assert root.find(".//{*}ServerVersionInfo") is not None
    assert eng.list_items(ALICE) == []
    eng.close()


@pytest.mark.parametrize(
    "kind,code", [("busy_in_message", "ErrorServerBusy"), ("response_code", "ErrorQuotaExceeded")]
)
def test_fault_in_message(tmp_path, kind, code):
    plan = FaultPlan()
    eng = SandboxEngine(tmp_path, faults=plan)
    eng.add_mailbox(ALICE)
    plan.add(Fault(kind, operation="CreateItem", index=1, code=code))
    st, out = eng.handle(
        ALICE,
        soap(
            "<m:CreateItem><m:Items>"
            + contact("a")
            + contact("b")
            + contact("c")
            + "</m:Items></m:CreateItem>"
        ),
    )
    assert st == 200
    assert codes(etree.fromstring(out)) == ["NoError", code, "NoError"]
    assert sorted(i["extended_properties"]["tslRecordId"] for i in eng.list_items(ALICE)) == ["a", "c"]
    assert eng.violations == 0
    eng.close()


def test_fault_response_code_all_messages(tmp_path):
    plan = FaultPlan()
    eng = SandboxEngine(tmp_path, faults=plan)
    eng.add_mailbox(ALICE)
    plan.add(Fault("response_code", code="ErrorMailboxStoreUnavailable"))
    st, out = eng.handle(
        ALICE, soap("<m:CreateItem><m:Items>" + contact("a") + contact("b") + "</m:Items></m:CreateItem>")
    )
    assert codes(etree.fromstring(out)) == ["ErrorMailboxStoreUnavailable"] * 2
    assert eng.list_items(ALICE) == []
    eng.close()


@pytest.mark.parametrize(
    "body,code,status",
    [
        (b"not xml at all", "ErrorSchemaValidation", 500),
        (b"<a><b></a>", "ErrorSchemaValidation", 500),
        (b"<html><body>hi</body></html>", "ErrorSchemaValidation", 500),
        (
            b'<e:Envelope xmlns:e="http://www.w3.org/2003/05/soap-envelope"><e:Body/></e:Envelope>',
            "VersionMismatch",
            500,
        ),
        (soap("<m:SyncFolderItems/>"), "ErrorSchemaValidation", 500),
        (
            soap("<m:CreateItem><m:Items><t:Contact><t:Foo/></t:Contact></m:Items></m:CreateItem>"),
            "ErrorSchemaValidation",
            500,
        ),
        (soap("<m:FooBar/>"), "ErrorSchemaValidation", 500),
        (b"<x>" + b" " * (21 * 1024 * 1024) + b"</x>", "ErrorRequestStreamTooBig", 413),
    ],
)
def test_bad_input_gives_clear_fault(engine, body, code, status):
    before = engine.list_items(ALICE)
    st, out = engine.handle(ALICE, body)
    assert st == status
    root = etree.fromstring(out)
    assert root.find(".//{*}Fault") is not None
    assert (
        root.find(".//{http://schemas.microsoft.com/exchange/services/2006/errors}ResponseCode").text == code
    )
    assert engine.list_items(ALICE) == before


def test_schema_error_names_line_and_position(engine):
    st, out = engine.handle(
        ALICE,
        soap(
            "<m:CreateItem><m:Items><t:Contact><t:Surname>x</t:Surname>"
            "<t:GivenName>y</t:GivenName></t:Contact></m:Items></m:CreateItem>"
        ),
    )
    assert st == 500
    text = etree.fromstring(out).findtext(".//faultstring")
    assert "Line 1, position" in text and "GivenName" in text


def test_unsupported_operation_without_validation(tmp_path):
    eng = SandboxEngine(tmp_path, validate=False)
    eng.add_mailbox(ALICE)
    st, out = eng.handle(ALICE, soap("<m:SyncFolderItems/>"))
    assert st == 500 and b"ErrorInvalidRequest" in out
    eng.close()


def test_internal_error_becomes_fault(engine, monkeypatch):
    from tsl_exchange_plugin.sandbox import engine as engine_mod

    def boom(ctx, req):
        raise RuntimeError("kaputt")

    monkeypatch.setitem(engine_mod.OPERATIONS, "GetItem", boom)
    st, out = engine.handle(
        ALICE,
        soap(
            "<m:GetItem><m:ItemShape><t:BaseShape>IdOnly</t:BaseShape></m:ItemShape>"
            '<m:ItemIds><t:ItemId Id="x"/></m:ItemIds></m:GetItem>'
        ),
    )
    assert st == 500 and b"ErrorInternalServerError" in out and b"kaputt" not in out


# --- persistence, threads, inspection -----------------------------------------------------------


def test_persistence_and_phone_simulation(tmp_path):
    eng = SandboxEngine(tmp_path)
    eng.add_mailbox(ALICE)
    ((iid, ck),) = create(eng, contact("r1"))
    assert eng.operation_of(soap("<m:GetItem/>")) == "GetItem" and eng.operation_of(b"junk") is None
    eng.close()
    eng = SandboxEngine(tmp_path)
    assert eng.has_mailbox(ALICE.upper())
    item = eng.list_items(ALICE)[0]
    assert item["item_id"] == iid and item["surname"] == "Muster" and item["item_class"] == "contact"
    new_ck = eng.phone_edit(ALICE, iid, surname="Handy", body="vom Telefon", categories=["privat"])
    assert new_ck != ck
    assert codes(update(eng, iid, ck, SET_SURNAME, "NeverOverwrite")) == ["ErrorIrresolvableConflict"]
    r = get(eng, iid, '<t:FieldURI FieldURI="contacts:Surname"/><t:FieldURI FieldURI="item:Body"/>')
    assert r.findtext(".//{*}Surname") == "Handy" and r.findtext(".//{*}Contact/{*}Body") == "vom Telefon"
    eng.phone_delete(ALICE, iid)
    assert codes(get(eng, iid)) == ["ErrorItemNotFound"]
    assert "CreateItem" not in eng.request_counts(ALICE)  # counts live per engine instance
    assert eng.request_counts(ALICE)["UpdateItem"] == 1
    eng.close()


def test_concurrent_handle(engine):
    errors = []

    def worker(n):
        try:
            for i in range(10):
                create(engine, contact(f"t{n}-{i}"))
        except Exception as exc:  # collected, asserted below
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(6)]
    for th in threads:
        th.start()
    for th in threads:
        th.join(30)
    assert not errors
    assert len(engine.list_items(ALICE)) == 60
    assert engine.request_counts(ALICE)["CreateItem"] == 60
