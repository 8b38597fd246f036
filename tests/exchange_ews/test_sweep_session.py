"""The session methods of the reconcile sweep, against the sandbox with unmodified exchangelib."""

from __future__ import annotations

import datetime as dt
from zoneinfo import ZoneInfo

from tsl_exchange_plugin.backends.base import ItemRef, Written
from tsl_exchange_plugin.mapping.common import compose_body
from tsl_exchange_plugin.mapping.items import CalendarEntry, ContactItem, EmailEntry, TaskEntry


def _deadline(key: str, day: dt.date, **kw) -> CalendarEntry:
    return CalendarEntry(
        record_key=key,
        subject=kw.pop("subject", "Frist: Berufungsfrist – Az. 1/26"),
        all_day=True,
        start_date=day,
        end_date=day,
        free_busy="Free",
        categories=("Frist",),
        body=compose_body(["Az. 1/26"]),
        reminder_minutes=kw.pop("reminder_minutes", 600),
        **kw,
    )


def test_iter_ours_pages_keys_ids_and_local_dates(session, sandbox, new_key):
    day = dt.date(2026, 3, 30)  # the day after the spring DST switch
    items = [_deadline(new_key("deadline"), day + dt.timedelta(days=n)) for n in range(7)]
    written = session.create(items)
    assert all(isinstance(w, Written) for w in written)
    pages = list(session.iter_ours("calendar", page_size=3))
    assert [len(p) for p in pages] == [3, 3, 1]
    refs = {r.record_key: r for page in pages for r in page}
    assert {r.item_id for r in refs.values()} == {w.item_id for w in written}
    for item, w in zip(items, written, strict=True):
        assert refs[item.record_key].change_key == w.change_key
        assert refs[item.record_key].start_date == item.start_date.isoformat()
    assert list(session.iter_ours("task")) == []


def test_read_owned_equals_what_we_write_until_the_phone_changes_it(session, sandbox, new_key):
    items = [
        _deadline(new_key("deadline"), dt.date(2026, 10, 26)),
        TaskEntry(
            record_key=new_key("reminder"),
            subject="WV: Akte prüfen",
            due_date=dt.date(2026, 3, 2),
            body=compose_body(["Az. 2/26"]),
            categories=("Wiedervorlage",),
            reminder_at=dt.datetime(2026, 3, 2, 8, 0, tzinfo=ZoneInfo("Europe/Berlin")),
        ),
        ContactItem(
            record_key=new_key("contact"),
            display_name="Dr. Erika Muster",
            file_as="Muster, Erika",
            given_name="Erika",
            surname="Muster",
            email_addresses=(EmailEntry("EmailAddress1", "erika@example.test"),),
            body=compose_body(["Mandantin"]),
        ),
    ]
    written = session.create(items)
    for item, w in zip(items, written, strict=True):
        got = session.read_owned(item.item_class, [ItemRef(w.item_id, w.change_key)])[0]
        assert got == session.owned_values(item), item.item_class
    mailbox = "alice@kanzlei.test"
    sandbox.engine.phone_edit(mailbox, written[0].item_id, subject="am Telefon geändert")
    got = session.read_owned("calendar", [ItemRef(written[0].item_id, "")])[0]
    expected = session.owned_values(items[0])
    assert {k for k in expected if expected[k] != got.get(k)} == {"subject"}
