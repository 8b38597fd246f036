"""Property-based round trips through exchangelib and the sandbox (few examples, kept fast)."""

from __future__ import annotations

import datetime as dt

from exchangelib import CalendarItem, Contact, EWSDateTime, EWSTimeZone
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

# XML 1.0 text without the characters XML cannot carry; exchangelib strips surrounding blanks itself.
_text = (
    st.text(
        alphabet=st.characters(blacklist_categories=("Cs", "Cc"), blacklist_characters="\r"),
        min_size=1,
        max_size=40,
    )
    .map(str.strip)
    .filter(bool)
)
UTC = EWSTimeZone("UTC")
_settings = settings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)


@_settings
@given(
    given_name=_text,
    surname=_text,
    company=_text,
    body=_text,
    cats=st.lists(_text, max_size=3, unique=True),
    rid=_text,
)
def test_contact_fields_round_trip(account, given_name, surname, company, body, cats, rid):
    c = Contact(
        account=account,
        folder=account.contacts,
        given_name=given_name,
        surname=surname,
        display_name=f"{given_name} {surname}",
        company_name=company,
        body=body,
        categories=cats or None,
        tsl_record_id=rid,
    )
    c.save()
    try:
        fresh = account.contacts.get(id=c.id)
        assert (fresh.given_name, fresh.surname, fresh.company_name, fresh.body) == (
            given_name,
            surname,
            company,
            body,
        )
        assert (fresh.categories or []) == cats
        assert fresh.tsl_record_id == rid
        assert [x.id for x in account.contacts.filter(tsl_record_id=rid)] == [c.id]
    finally:
        c.delete()


@_settings
@given(
    minutes=st.integers(min_value=0, max_value=60 * 24 * 365 * 3),
    length=st.integers(min_value=0, max_value=600),
    zone=st.sampled_from(["Europe/Berlin", "America/New_York", "Asia/Tokyo", "UTC", "Australia/Sydney"]),
)
def test_calendar_instant_round_trip(account, minutes, length, zone):
    tz = EWSTimeZone(zone)
    start = (EWSDateTime(2025, 1, 1, tzinfo=EWSTimeZone("UTC")) + dt.timedelta(minutes=minutes)).astimezone(
        tz
    )
    end = start + dt.timedelta(minutes=length)
    item = CalendarItem(account=account, folder=account.calendar, subject="hyp", start=start, end=end)
    item.save()
    try:
        fresh = account.calendar.get(id=item.id)
        assert fresh.start.astimezone(UTC) == start.astimezone(UTC)
        assert fresh.end.astimezone(UTC) == end.astimezone(UTC)
    finally:
        item.delete()
