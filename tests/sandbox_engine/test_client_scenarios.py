"""Whole-client scenarios in the spirit of a client library's own suite against a real server,
run through unmodified exchangelib over HTTP+Basic and HTTPS+NTLM (see the ``server`` fixture)."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal

from exchangelib import CalendarItem, Contact, EWSDateTime, EWSTimeZone, Q, Task
from exchangelib.indexed_properties import PhoneNumber, PhysicalAddress


def _contact(account, rid: str, **kw) -> Contact:
    base = dict(
        folder=account.contacts,
        display_name=f"Scenario {rid}",
        given_name="Sze",
        surname=f"Nario-{rid}",
        company_name="Szenario GmbH",
        job_title="Justiziarin",
        categories=["szenario"],
        tsl_record_id=rid,
    )
    base.update(kw)
    return Contact(**base)


def test_wipe_fields(account):
    c = _contact(account, "wipe-1", phone_numbers=[PhoneNumber(label="MobilePhone", phone_number="+49 1")])
    c.save()
    c.company_name = None
    c.job_title = None
    c.phone_numbers = None
    c.save(update_fields=["company_name", "job_title", "phone_numbers"])
    fresh = account.contacts.get(id=c.id)
    assert fresh.company_name is None and fresh.job_title is None
    assert not fresh.phone_numbers
    assert fresh.surname == "Nario-wipe-1"  # untouched fields stay
    c.delete()


def test_update_single_and_multi_field_indexed(account):
    c = _contact(
        account,
        "idx-1",
        phone_numbers=[PhoneNumber(label="BusinessPhone", phone_number="+49 30 1")],
        physical_addresses=[
            PhysicalAddress(label="Business", street="Alt 1", city="Berlin", zipcode="10115")
        ],
    )
    c.save()
    c.phone_numbers = [
        PhoneNumber(label="BusinessPhone", phone_number="+49 30 2"),
        PhoneNumber(label="HomeFax", phone_number="+49 30 3"),
    ]
    c.physical_addresses = [PhysicalAddress(label="Business", street="Neu 2", city="Köln", zipcode="50667")]
    c.save(update_fields=["phone_numbers", "physical_addresses"])
    fresh = account.contacts.get(id=c.id)
    assert {p.label: p.phone_number for p in fresh.phone_numbers} == {
        "BusinessPhone": "+49 30 2",
        "HomeFax": "+49 30 3",
    }
    (addr,) = fresh.physical_addresses
    assert (addr.label, addr.street, addr.city, addr.zipcode) == ("Business", "Neu 2", "Köln", "50667")
    c.delete()


def test_update_extended_property(account):
    c = _contact(account, "ext-1")
    c.save()
    c.tsl_record_id = "ext-2"
    c.save(update_fields=["tsl_record_id"])
    assert account.contacts.filter(tsl_record_id="ext-1").count() == 0
    assert [x.id for x in account.contacts.filter(tsl_record_id="ext-2")] == [c.id]
    c.delete()


def test_filter_on_simple_fields(account):
    items = [_contact(account, f"flt-s-{i}", subject=None, surname=f"Filterfall {i}") for i in range(3)]
    for item in items:
        item.save()
    assert account.contacts.filter(surname__startswith="Filterfall").count() == 3
    assert account.contacts.filter(surname="Filterfall 1").count() == 1
    assert account.contacts.filter(Q(surname="Filterfall 0") | Q(surname="Filterfall 2")).count() == 2
    assert (
        account.contacts.filter(categories__contains="szenario", surname__startswith="Filterfall").count()
        == 3
    )
    for item in items:
        item.delete()


def test_update_to_non_utc_datetime_and_timestamps(account):
    berlin = EWSTimeZone("Europe/Berlin")
    tokyo = EWSTimeZone("Asia/Tokyo")
    item = CalendarItem(
        folder=account.calendar,
        subject="Szenario Termin",
        start=EWSDateTime(2026, 10, 24, 9, 0, tzinfo=berlin),
        end=EWSDateTime(2026, 10, 24, 10, 0, tzinfo=berlin),
    )
    item.save()
    created = account.calendar.get(id=item.id)
    item.start = EWSDateTime(2026, 10, 26, 17, 0, tzinfo=tokyo)  # after Berlin's switch to winter time
    item.end = EWSDateTime(2026, 10, 26, 18, 0, tzinfo=tokyo)
    item.save(update_fields=["start", "end"])
    fresh = account.calendar.get(id=item.id)
    assert fresh.start == EWSDateTime(2026, 10, 26, 8, 0, tzinfo=EWSTimeZone("UTC"))
    assert fresh.start.astimezone(berlin).hour == 9
    assert fresh.last_modified_time >= created.last_modified_time
    assert fresh.datetime_created == created.datetime_created
    item.delete()


def test_task_complete_and_reopen(account):
    task = Task(folder=account.tasks, subject="Szenario WV", due_date=dt.date(2026, 3, 2))
    task.save()
    task.complete()
    done = account.tasks.get(id=task.id)
    assert done.status == "Completed" and done.percent_complete == 100
    task.status = "NotStarted"
    task.percent_complete = Decimal(0)
    task.save(update_fields=["status", "percent_complete"])
    reopened = account.tasks.get(id=task.id)
    assert reopened.status == "NotStarted" and reopened.due_date == dt.date(2026, 3, 2)
    task.delete()
