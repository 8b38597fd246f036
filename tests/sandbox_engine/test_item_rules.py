"""Exchange's normalisations of what a client writes: all-day items span whole local days, a
subject longer than 255 characters is cut (sources in sandbox/item_rules.py)."""

from __future__ import annotations

from exchangelib import CalendarItem, EWSDate, EWSDateTime, EWSTimeZone
from lxml import etree

from tsl_exchange_plugin.sandbox.testing import SANDBOX_PASSWORDS, exchangelib_account

BERLIN = EWSTimeZone("Europe/Berlin")
ALICE = "alice@example.com"
NS = (
    'xmlns:s="http://schemas.xmlsoap.org/soap/envelope/" '
    'xmlns:m="http://schemas.microsoft.com/exchange/services/2006/messages" '
    'xmlns:t="http://schemas.microsoft.com/exchange/services/2006/types"'
)


def soap(payload: str) -> bytes:
    hdr = (
        '<t:RequestServerVersion Version="Exchange2016"/>'
        '<t:TimeZoneContext><t:TimeZoneDefinition Id="W. Europe Standard Time"/></t:TimeZoneContext>'
    )
    return f'<?xml version="1.0" encoding="utf-8"?><s:Envelope {NS}><s:Header>{hdr}</s:Header><s:Body>{payload}</s:Body></s:Envelope>'.encode()


def test_an_all_day_item_with_times_spans_the_whole_local_days(sandbox):
    acc = exchangelib_account(sandbox, sorted(SANDBOX_PASSWORDS)[0])
    start = EWSDateTime(2026, 3, 28, 14, 30, tzinfo=BERLIN)
    end = EWSDateTime(2026, 3, 30, 9, 15, tzinfo=BERLIN)  # across the spring switch
    item = CalendarItem(
        account=acc, folder=acc.calendar, subject="Klausur", start=start, end=end, is_all_day=True
    )
    item.save()
    raw = acc.calendar.all().only("start", "end").get(id=item.id, changekey=item.changekey)
    assert raw.start == EWSDateTime(2026, 3, 28, 0, 0, tzinfo=BERLIN)
    assert raw.end == EWSDateTime(2026, 3, 31, 0, 0, tzinfo=BERLIN)
    back = acc.calendar.all().only("start", "end", "is_all_day").get(id=item.id, changekey=item.changekey)
    assert (back.start, back.end) == (EWSDate(2026, 3, 28), EWSDate(2026, 3, 30))
    # An update that sets times on an all-day item is widened the same way.
    item.refresh()
    item.start, item.end = (
        EWSDateTime(2026, 4, 2, 23, 0, tzinfo=BERLIN),
        EWSDateTime(2026, 4, 3, 1, tzinfo=BERLIN),
    )
    item.save(update_fields=["start", "end"])
    raw = acc.calendar.all().only("start", "end").get(id=item.id)
    assert (raw.start, raw.end) == (
        EWSDateTime(2026, 4, 2, tzinfo=BERLIN),
        EWSDateTime(2026, 4, 4, tzinfo=BERLIN),
    )
    # A timed item keeps its times.
    timed = CalendarItem(account=acc, folder=acc.calendar, subject="Termin", start=start, end=end)
    timed.save()
    timed.refresh()
    assert (timed.start, timed.end) == (start, end)


def test_a_subject_over_255_characters_is_cut_with_an_ellipsis(engine):
    long = "Mündliche Verhandlung " * 20  # 440 characters; exchangelib itself refuses this
    _, out = engine.handle(
        ALICE,
        soap(
            '<m:CreateItem MessageDisposition="SaveOnly" SendMeetingInvitations="SendToNone">'
            '<m:SavedItemFolderId><t:DistinguishedFolderId Id="calendar"/></m:SavedItemFolderId><m:Items>'
            f"<t:CalendarItem><t:Subject>{long}</t:Subject><t:Start>2026-05-04T08:00:00Z</t:Start>"
            "<t:End>2026-05-04T09:00:00Z</t:End></t:CalendarItem></m:Items></m:CreateItem>"
        ),
    )
    (item_id,) = [e.get("Id") for e in etree.fromstring(out).iter("{*}ItemId")]
    _, out = engine.handle(
        ALICE,
        soap(
            "<m:GetItem><m:ItemShape><t:BaseShape>IdOnly</t:BaseShape><t:AdditionalProperties>"
            '<t:FieldURI FieldURI="item:Subject"/></t:AdditionalProperties></m:ItemShape>'
            f'<m:ItemIds><t:ItemId Id="{item_id}"/></m:ItemIds></m:GetItem>'
        ),
    )
    subject = next(etree.fromstring(out).iter("{*}Subject")).text
    assert len(subject) == 255 and subject == long[:252] + "..."
