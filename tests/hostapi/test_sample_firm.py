"""The sample firm: deterministic, German, and awkward where real data is."""

from __future__ import annotations

import datetime as dt
import re

import pytest

from tsl_hostapi.reference.sample_firm import generate_firm
from tsl_hostapi.reference.workdays import easter_sunday, is_working_day, next_working_day
from tsl_hostapi.serialize import to_json


@pytest.fixture(scope="module")
def firm():
    return generate_firm(seed=1)


def test_same_seed_same_firm_other_seed_other_firm(firm):
    again = generate_firm(seed=1)
    assert again == firm
    assert to_json(again.contacts) == to_json(firm.contacts)
    other = generate_firm(seed=2)
    assert other.contacts != firm.contacts


def test_staff(firm):
    roles = [u.role for u in firm.users]
    assert len(firm.lawyers) == 4 and len(firm.clerks) == 3
    assert sum(u.is_admin for u in firm.users) == 1
    assert {"Rechtsanwalt", "Rechtsanwältin"} <= set(roles)
    assert any(u.name.startswith("Dr. ") for u in firm.lawyers)
    assert all(re.fullmatch(r"[a-z.]+@[a-z.-]+", u.email) for u in firm.users)
    assert len({u.id for u in firm.users}) == len(firm.users)


def test_contacts_are_german_and_varied(firm):
    contacts = firm.contacts
    assert len(contacts) == 300 and len({c.id for c in contacts}) == 300
    text = to_json(contacts)
    assert all(ch in text for ch in "äöüß")
    persons = [c for c in contacts if c.kind == "person"]
    orgs = [c for c in contacts if c.kind == "organisation"]
    assert len(persons) > 150 and len(orgs) > 30
    assert {"Herr", "Frau"} <= {c.salutation for c in persons}
    assert {"Dr.", "Prof. Dr."} <= {c.title for c in persons}
    for form in ("GmbH", "AG", "e.K.", "GbR"):
        assert any(c.company.endswith(form) for c in orgs), form
    assert any(c.birthday == dt.date(c.birthday.year, 2, 29) for c in persons if c.birthday)
    assert any(
        len(c.addresses) >= 2 and {a.kind for a in c.addresses} >= {"home", "business"} for c in persons
    )
    assert any(len(c.phones) >= 3 for c in contacts)
    assert all(p.number.startswith("+49 ") for c in contacts for p in c.phones)
    assert all(re.fullmatch(r"\d{5}", a.postal_code) for c in contacts for a in c.addresses)
    assert any(a.postal_code.startswith("0") for c in contacts for a in c.addresses)
    assert any(len(c.emails) >= 2 for c in contacts)
    assert all("@" in e and e.isascii() for c in contacts for e in c.emails)
    assert any(c.notes for c in contacts) and any("\n" in c.notes for c in contacts)
    assert all(c.company for c in orgs) and all(c.surname for c in persons)


def test_contact_count_is_a_parameter():
    small = generate_firm(seed=3, contacts=12)
    assert len(small.contacts) == 12
    assert {c.id for c in small.contacts} >= {cc.client_contact_id for cc in small.cases}
    with pytest.raises(ValueError):
        generate_firm(contacts=1)


def test_cases(firm):
    lawyers = {u.id for u in firm.lawyers}
    clerks = {u.id for u in firm.clerks}
    contact_ids = {c.id for c in firm.contacts}
    assert len({c.file_number for c in firm.cases}) == len(firm.cases)
    for case in firm.cases:
        assert re.fullmatch(r"\d{1,3}/\d\d", case.file_number)
        assert re.fullmatch(r".+ \./\. .+ wegen .+", case.rubrum)
        assert case.lawyer_id in lawyers and case.clerk_id in clerks
        assert {case.client_contact_id, case.opponent_contact_id} <= contact_ids
        assert case.client_contact_id != case.opponent_contact_id


def test_calendar(firm):
    case_ids = {c.id for c in firm.cases}
    staff = {u.id for u in firm.users}
    assert firm.appointments and firm.deadlines and firm.reminders
    timed = [a for a in firm.appointments if not a.all_day]
    all_day = [a for a in firm.appointments if a.all_day]
    assert timed and all_day
    for a in timed:
        assert a.start < a.end and a.timezone == "Europe/Berlin" and a.start.tzinfo is None
        assert set(a.participant_ids) <= staff and a.participant_ids
    for a in all_day:
        assert a.start_date <= a.end_date and a.start is None
    assert any(a.appointment_type == "Gerichtstermin" and "gericht" in a.location for a in timed)
    for d in firm.deadlines:
        assert is_working_day(d.due_date)
        assert d.pre_deadline_dates and all(
            p < d.due_date and is_working_day(p) for p in d.pre_deadline_dates
        )
        assert list(d.pre_deadline_dates) == sorted(set(d.pre_deadline_dates))
        assert d.case_id in case_ids and set(d.responsible_ids) <= staff
        assert not (d.done and d.due_date >= firm.today)
    assert len({d.kind for d in firm.deadlines}) >= 4
    for r in firm.reminders:
        assert r.case_id in case_ids and r.responsible_ids and set(r.responsible_ids) <= staff
        assert r.subject.startswith("WV ")


def test_load_firm_into_host(host, firm):
    rec_events = []
    from tsl_hostapi import hookimpl
    from tsl_hostapi.host import register_plugin

    class Count:
        @hookimpl
        def tsl_record_saved(self, event):
            rec_events.append(event)

    register_plugin(host.pm, Count(), "count")
    host.load_firm(firm)
    assert rec_events == []
    assert host.iter_records("contact") == list(firm.contacts)
    assert host.iter_records("deadline") == list(firm.deadlines)
    assert host.list_users() == list(firm.users)
    small = generate_firm(seed=5, contacts=10, cases=3, appointments=2, deadlines=2, reminders=2)
    host.load_firm(small, events=True)
    assert len(rec_events) == 10 + 3 + 2 + 2 + 2


def test_working_days():
    assert easter_sunday(2026) == dt.date(2026, 4, 5)
    assert easter_sunday(2027) == dt.date(2027, 3, 28)
    assert next_working_day(dt.date(2026, 4, 3)) == dt.date(2026, 4, 7)  # Karfreitag -> Dienstag nach Ostern
    assert next_working_day(dt.date(2026, 10, 3)) == dt.date(2026, 10, 5)  # Samstag, Tag der Einheit
    assert next_working_day(dt.date(2026, 12, 24)) == dt.date(2026, 12, 24)
    assert next_working_day(dt.date(2026, 12, 25)) == dt.date(2026, 12, 28)
