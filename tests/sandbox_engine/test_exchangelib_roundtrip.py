"""Round trips through unmodified exchangelib over the real sandbox HTTP server."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal

import pytest
from exchangelib import CalendarItem, Contact, EWSDate, EWSDateTime, EWSTimeZone, Task
from exchangelib.errors import ErrorItemNotFound
from exchangelib.indexed_properties import EmailAddress, PhoneNumber, PhysicalAddress
from exchangelib.properties import Body

ALICE = "alice@example.com"
BERLIN = EWSTimeZone("Europe/Berlin")


def _contact(account, rid: str, **kw) -> Contact:
    base = dict(
        folder=account.contacts,
        given_name="Erika",
        middle_name="M.",
        surname="Mustermann",
        display_name="Erika Mustermann",
        file_as="Mustermann, Erika",
        company_name="Kanzlei Muster",
        department="Recht",
        job_title="Rechtsanwältin",
        email_addresses=[
            EmailAddress(email="erika@example.com", label="EmailAddress1"),
            EmailAddress(email="e.m@example.org", label="EmailAddress2"),
            EmailAddress(email="em@example.net", label="EmailAddress3"),
        ],
        phone_numbers=[
            PhoneNumber(label="BusinessPhone", phone_number="+49 30 1234567"),
            PhoneNumber(label="MobilePhone", phone_number="+49 170 1234567"),
            PhoneNumber(label="HomePhone", phone_number="+49 30 999"),
        ],
        physical_addresses=[
            PhysicalAddress(
                label="Business",
                street="Unter den Linden 1",
                city="Berlin",
                zipcode="10117",
                country="Deutschland",
            ),
            PhysicalAddress(label="Home", street="Hauptstr. 5", city="Potsdam", state="BB", zipcode="14467"),
        ],
        birthday=EWSDate(1980, 5, 17),
        body="Mandantin seit 2020\nZeile 2",
        categories=["timeSensor", "Mandant"],
        tsl_record_id=rid,
    )
    base.update(kw)
    return Contact(account=account, **base)


FIELDS = [
    "given_name",
    "middle_name",
    "surname",
    "display_name",
    "file_as",
    "company_name",
    "department",
    "job_title",
    "birthday",
    "body",
    "categories",
    "tsl_record_id",
]


def _same(a, b, fields):
    for f in fields:
        assert getattr(a, f) == getattr(b, f), f


def test_contact_create_refresh_update_delete(account, server):
    c = _contact(account, "contact-1")
    c.save()
    fresh = account.contacts.get(id=c.id)
    _same(c, fresh, FIELDS)
    assert {e.label: e.email for e in fresh.email_addresses} == {
        "EmailAddress1": "erika@example.com",
        "EmailAddress2": "e.m@example.org",
        "EmailAddress3": "em@example.net",
    }
    assert {p.label: p.phone_number for p in fresh.phone_numbers} == {
        "BusinessPhone": "+49 30 1234567",
        "MobilePhone": "+49 170 1234567",
        "HomePhone": "+49 30 999",
    }
    home = next(a for a in fresh.physical_addresses if a.label == "Home")
    assert (home.street, home.city, home.state, home.zipcode) == ("Hauptstr. 5", "Potsdam", "BB", "14467")

    old_ck = c.changekey
    c.surname = "Musterfrau"
    c.phone_numbers = [PhoneNumber(label="BusinessPhone", phone_number="+49 30 7654321")]
    c.physical_addresses = [PhysicalAddress(label="Business", street="Friedrichstr. 2", city="Berlin")]
    c.email_addresses = [EmailAddress(email="neu@example.com", label="EmailAddress1")]
    c.save(update_fields=["surname", "phone_numbers", "physical_addresses", "email_addresses"])
    assert c.changekey != old_ck
    c.refresh()
    assert c.surname == "Musterfrau"
    assert [(p.label, p.phone_number) for p in c.phone_numbers] == [("BusinessPhone", "+49 30 7654321")]
    assert [(a.label, a.street, a.city, a.zipcode) for a in c.physical_addresses] == [
        ("Business", "Friedrichstr. 2", "Berlin", None)
    ]
    assert [(e.label, e.email) for e in c.email_addresses] == [("EmailAddress1", "neu@example.com")]
    # the engine's view agrees with what exchangelib saw
    stored = next(i for i in server.engine.list_items(ALICE, "contacts") if i["item_id"] == c.id)
    assert stored["surname"] == "Musterfrau"
    assert stored["extended_properties"] == {"tslRecordId": "contact-1"}
    assert stored["change_key"] == c.changekey
    # a full save (no update_fields) works as well
    c.job_title = "Partnerin"
    c.save()
    assert account.contacts.get(id=c.id).job_title == "Partnerin"
    item_id = c.id
    c.delete()
    with pytest.raises(ErrorItemNotFound):
        account.contacts.get(id=item_id)


def test_filter_on_extended_property_and_fields(account):
    items = [
        _contact(account, f"flt-{i}", surname=f"Filter{i}", categories=["flt", f"n{i}"]) for i in range(5)
    ]
    account.bulk_create(folder=account.contacts, items=items)
    hit = list(account.contacts.filter(tsl_record_id="flt-3"))
    assert len(hit) == 1 and hit[0].surname == "Filter3"
    assert account.contacts.filter(tsl_record_id="nope").count() == 0
    assert account.contacts.filter(categories__contains="flt").count() == 5
    assert account.contacts.filter(surname__startswith="filter").count() == 0  # case-sensitive prefix
    assert account.contacts.filter(surname__istartswith="filter").count() == 5
    assert {c.surname for c in account.contacts.filter(surname__startswith="Filter")} >= {
        f"Filter{i}" for i in range(5)
    }
    only = account.contacts.filter(tsl_record_id="flt-1").only("tsl_record_id", "surname")[0]
    assert only.tsl_record_id == "flt-1" and only.surname == "Filter1"
    from exchangelib import Q

    assert account.contacts.filter(Q(tsl_record_id="flt-1") | Q(tsl_record_id="flt-2")).count() == 2
    assert account.contacts.filter(~Q(tsl_record_id="flt-1"), categories__contains="flt").count() == 4
    account.contacts.filter(categories__contains="flt").delete()
    assert account.contacts.filter(categories__contains="flt").count() == 0


@pytest.mark.parametrize("zone", ["Europe/Berlin", "America/New_York", "Asia/Tokyo", "UTC"])
def test_calendar_timed_in_zones(account, zone):
    tz = EWSTimeZone(zone)
    start = EWSDateTime(2026, 3, 10, 14, 0, tzinfo=tz)
    item = CalendarItem(
        account=account,
        folder=account.calendar,
        subject=f"Termin {zone}",
        start=start,
        end=start + dt.timedelta(hours=2),
        location="Raum 2",
        body=Body("Akte 1/26"),
        reminder_is_set=True,
        reminder_minutes_before_start=30,
        categories=["timeSensor"],
        legacy_free_busy_status="Busy",
        tsl_record_id=f"appt-{zone}",
    )
    item.save()
    fresh = account.calendar.get(id=item.id)
    assert fresh.start == start and fresh.end == start + dt.timedelta(hours=2)
    assert fresh.subject == item.subject and fresh.location == "Raum 2"
    assert fresh.reminder_is_set is True and fresh.reminder_minutes_before_start == 30
    assert fresh.is_all_day is False
    item.start = start + dt.timedelta(hours=1)
    item.end = start + dt.timedelta(hours=3)
    item.save(update_fields=["start", "end"])
    fresh = account.calendar.get(id=item.id)
    assert fresh.start == start + dt.timedelta(hours=1)
    view = list(account.calendar.view(start=start - dt.timedelta(days=1), end=start + dt.timedelta(days=1)))
    assert item.id in [v.id for v in view]
    assert item.id not in [
        v.id
        for v in account.calendar.view(start=start + dt.timedelta(days=2), end=start + dt.timedelta(days=3))
    ]
    item.delete()


def test_calendar_all_day(account):
    day = EWSDate(2026, 4, 15)
    item = CalendarItem(
        account=account,
        folder=account.calendar,
        subject="Frist: Berufungsbegründung",
        start=day,
        end=day,
        is_all_day=True,
        legacy_free_busy_status="Free",
        reminder_is_set=True,
        reminder_minutes_before_start=1440,
        tsl_record_id="deadline-9",
    )
    item.save()
    fresh = account.calendar.get(id=item.id)
    assert fresh.is_all_day is True
    assert fresh.start == day and fresh.end == day
    assert fresh.legacy_free_busy_status == "Free"
    assert fresh._start_timezone.ms_id == "W. Europe Standard Time"
    item.delete()


def test_task_due_reminder_complete(account):
    due = EWSDateTime(2026, 3, 5, 0, 0, tzinfo=EWSTimeZone("UTC"))
    task = Task(
        account=account,
        folder=account.tasks,
        subject="Wiedervorlage: Akte 123/26",
        body="Bitte prüfen",
        importance="High",
        due_date=EWSDate(2026, 3, 5),
        start_date=EWSDate(2026, 3, 1),
        reminder_is_set=True,
        reminder_due_by=EWSDateTime(2026, 3, 5, 9, 0, tzinfo=BERLIN),
        tsl_record_id="task-3",
    )
    task.save()
    fresh = account.tasks.get(id=task.id)
    assert fresh.due_date == EWSDate(2026, 3, 5) and fresh.start_date == EWSDate(2026, 3, 1)
    assert fresh.reminder_due_by == EWSDateTime(2026, 3, 5, 9, 0, tzinfo=BERLIN)
    assert fresh.status == "NotStarted" and fresh.percent_complete == 0 and fresh.is_complete is False
    assert due.date() == fresh.due_date
    task.percent_complete = Decimal(100)
    task.status = "Completed"
    task.save(update_fields=["percent_complete", "status"])
    fresh = account.tasks.get(id=task.id)
    assert fresh.status == "Completed" and fresh.percent_complete == 100 and fresh.is_complete is True
    assert fresh.complete_date is not None
    task.delete()


def test_bulk_create_update_delete(account):
    items = [_contact(account, f"bulk-{i}", surname=f"Bulk{i}") for i in range(7)]
    res = account.bulk_create(folder=account.contacts, items=items, chunk_size=3)
    assert all(not isinstance(r, Exception) for r in res) and len(res) == 7
    for it, r in zip(items, res, strict=True):
        it.id, it.changekey = r.id, r.changekey
        it.job_title = "geändert"
    upd = account.bulk_update([(it, ["job_title"]) for it in items], chunk_size=3)
    assert len(upd) == 7
    assert {c.job_title for c in account.fetch(ids=[(i, c) for i, c in upd])} == {"geändert"}
    dels = account.bulk_delete([(i, c) for i, c in upd], chunk_size=3)
    assert dels == [True] * 7
    again = account.bulk_delete([(i, c) for i, c in upd[:2]])
    assert all(isinstance(r, ErrorItemNotFound) for r in again)
