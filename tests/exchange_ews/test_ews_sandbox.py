"""EwsBackend against the real sandbox over HTTP, with unmodified exchangelib; read back with exchangelib."""

from __future__ import annotations

import dataclasses
import datetime as dt

import pytest
from exchangelib import Contact as ExlContact
from exchangelib import EWSTimeZone
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tsl_exchange_plugin.backends.base import (
    AuthFailed,
    ConfigError,
    Conflict,
    ItemNotFound,
    ItemRef,
    OutcomeUnknown,
    TransientError,
    Written,
)
from tsl_exchange_plugin.backends.ews.backend import EwsBackend
from tsl_exchange_plugin.mapping.common import USER_NOTES_MARKER, MappingError, case_line
from tsl_exchange_plugin.mapping.contact import map_contact
from tsl_exchange_plugin.mapping.items import CalendarEntry, ContactItem, TaskEntry
from tsl_hostapi.types import PHONE_KINDS, Contact, Phone, PostalAddress

from .conftest import mailbox_account

FULL = Contact(
    id="1",
    salutation="Frau",
    title="Dr.",
    given_name="Anna",
    middle_name="Maria",
    surname="Müller",
    generation="jun.",
    company="Müller & Söhne GmbH",
    department="Recht",
    job_title="Justiziarin",
    emails=(
        "anna@mueller.de",
        "a.mueller@kanzlei.test",
        "privat@example.org",
        "vierte@example.org",
        "kaputt",
    ),
    phones=(
        Phone("business", "+49 30 1234-0"),
        Phone("business", "+49 30 1234-1"),
        Phone("mobile", "+49 171 555"),
        Phone("home", "+49 30 999"),
        Phone("business_fax", "+49 30 1234-9"),
        Phone("home_fax", "+49 30 998"),
        Phone("other", "+49 40 1"),
    ),
    addresses=(
        PostalAddress("business", "Hauptstr. 1", "10115", "Berlin", "Berlin", "Deutschland"),
        PostalAddress("home", "Gartenweg 2", "80331", "München", "Bayern", "Deutschland"),
    ),
    birthday=dt.date(1984, 2, 29),
    website="https://mueller.de",
    notes="Mandantin seit 2019 😀\nBitte nur vormittags anrufen.",
    categories=("Mandant", "VIP"),
)


def body_text(value) -> str:
    return str(value or "").replace("\r\n", "\n")


def fetch(session, ref: ItemRef):
    [item] = list(session.raw_account.fetch([(ref.item_id, None)]))
    assert not isinstance(item, Exception), item
    return item


def assert_contact_equal(item: ContactItem, got) -> None:
    """Field by field: what the plugin owns is exactly what the mailbox holds."""
    assert got.tsl_record_id == item.record_key
    for name in (
        "display_name",
        "file_as",
        "given_name",
        "middle_name",
        "surname",
        "generation",
        "company_name",
        "department",
        "job_title",
        "business_homepage",
    ):
        assert (getattr(got, name) or "") == getattr(item, name), name
    assert {e.label: e.email for e in got.email_addresses or ()} == {
        e.label: e.address for e in item.email_addresses
    }
    assert {p.label: p.phone_number for p in got.phone_numbers or ()} == {
        p.label: p.number for p in item.phone_numbers
    }
    got_addr = {
        a.label: (a.street or "", a.city or "", a.state or "", a.country or "", a.zipcode or "")
        for a in got.physical_addresses or ()
    }
    assert got_addr == {
        a.label: (a.street, a.city, a.state, a.country, a.zipcode) for a in item.physical_addresses
    }
    assert got.birthday == item.birthday
    assert body_text(got.body) == item.body
    assert tuple(got.categories or ()) == item.categories


def create_one(session, item) -> Written:
    [res] = session.create([item])
    assert isinstance(res, Written), res
    return res


def ref(w: Written) -> ItemRef:
    return ItemRef(w.item_id, w.change_key)


# ----------------------------------------------------------------------------- contacts


def test_create_full_contact_reads_back_field_by_field(session, new_key):
    item = map_contact(
        FULL, record_key=new_key(), case_refs=[case_line("123/26", "Müller ./. Schmidt wegen Forderung")]
    )
    w = create_one(session, item)
    got = fetch(session, ref(w))
    assert isinstance(got, ExlContact)
    assert_contact_equal(item, got)
    assert got.display_name == "Dr. Anna Maria Müller jun."
    assert got.file_as == "Müller, Anna"


text = st.text(st.characters(codec="utf-8", exclude_categories=["Cs"]), max_size=30)
contacts = st.builds(
    Contact,
    id=st.just("x"),
    kind=st.sampled_from(["person", "organisation"]),
    salutation=st.sampled_from(["", "Herr", "Frau"]),
    title=st.sampled_from(["", "Dr.", "Prof. Dr."]),
    given_name=text,
    surname=text,
    company=text,
    emails=st.lists(st.emails() | text, max_size=4).map(tuple),
    phones=st.lists(st.builds(Phone, kind=st.sampled_from(PHONE_KINDS), number=text), max_size=5).map(tuple),
    addresses=st.lists(
        st.builds(PostalAddress, kind=st.sampled_from(["business", "home", "other"]), street=text, city=text),
        max_size=3,
    ).map(tuple),
    birthday=st.none() | st.dates(dt.date(1900, 1, 1), dt.date(2030, 12, 31)),
    notes=st.text(max_size=200),
    categories=st.lists(text, max_size=3).map(tuple),
)


@settings(
    max_examples=12,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(contacts)
def test_generated_contacts_round_trip(session, new_key, contact):
    try:
        item = map_contact(contact, record_key=new_key())
    except MappingError:
        return
    w = create_one(session, item)
    assert_contact_equal(item, fetch(session, ref(w)))


def test_update_changes_one_item_same_id_new_changekey(session, new_key):
    a = map_contact(FULL, record_key=new_key())
    b = map_contact(dataclasses.replace(FULL, surname="Schmidt"), record_key=new_key())
    wa, wb = session.create([a, b])
    changed = dataclasses.replace(
        FULL, surname="Meier", phones=(Phone("mobile", "0170 1"),), categories=("Gegner",)
    )
    item = map_contact(changed, record_key=a.record_key)
    [res] = session.update([(ref(wa), item)])
    assert isinstance(res, Written)
    assert res.item_id == wa.item_id and res.change_key != wa.change_key
    assert_contact_equal(item, fetch(session, ref(res)))
    assert_contact_equal(b, fetch(session, ref(wb)))  # untouched


def test_clearing_fields_really_clears(session, new_key):
    key = new_key()
    w = create_one(session, map_contact(FULL, record_key=key))
    bare = map_contact(Contact(id="1", surname="Müller"), record_key=key)
    assert bare.phone_numbers == () and bare.email_addresses == () and bare.birthday is None
    [res] = session.update([(ref(w), bare)])
    assert isinstance(res, Written)
    got = fetch(session, ref(res))
    assert_contact_equal(bare, got)
    assert not got.phone_numbers and not got.email_addresses and not got.physical_addresses
    assert got.birthday is None and not got.categories and not got.company_name and not got.given_name


def test_user_notes_below_marker_survive_update(session, new_key):
    key = new_key()
    w = create_one(session, map_contact(FULL, record_key=key))
    # The lawyer writes on the phone, below the marker.
    phone = fetch(session, ref(w))
    phone.body = body_text(phone.body) + "Privat: Kinder Max und Moritz 👦👦"
    phone.save(update_fields=["body"])
    new = map_contact(dataclasses.replace(FULL, notes="Neue Notiz der Kanzlei"), record_key=key)
    [res] = session.update([(ItemRef(phone.id, phone.changekey), new)])
    assert isinstance(res, Written)
    got = body_text(fetch(session, ref(res)).body)
    assert got == new.body + "Privat: Kinder Max und Moritz 👦👦"
    assert "Neue Notiz der Kanzlei" in got and "Mandantin seit 2019" not in got
    assert got.count(USER_NOTES_MARKER) == 1


def test_find_by_keys_finds_exactly_ours(session, new_key):
    k1, k2, k3 = new_key(), new_key(), new_key()
    w1, w2, w2b = session.create(
        [
            map_contact(FULL, record_key=k1),
            map_contact(FULL, record_key=k2),
            map_contact(FULL, record_key=k2),  # a duplicate, e.g. after an unknown outcome
        ]
    )
    # Made by hand in Outlook: same name, no property. Never found, never touched.
    hand = ExlContact(
        account=session.raw_account, folder=session.raw_account.contacts, display_name="Dr. Anna Müller"
    )
    hand.save()
    found = session.find_by_keys("contact", [k1, k2, k3])
    assert found[k1] == [ref(w1)]
    assert sorted(r.item_id for r in found[k2]) == sorted([w2.item_id, w2b.item_id])
    assert found[k3] == []
    ours = session.find_all_ours("contact")
    all_ids = {r.item_id for refs in ours.values() for r in refs}
    assert hand.id not in all_ids
    assert {w1.item_id, w2.item_id, w2b.item_id} <= all_ids
    # Cleanup of everything ours leaves the hand-made contact alone.
    results = session.delete([r for refs in ours.values() for r in refs])
    assert results == [None] * len(results)
    assert session.find_all_ours("contact") == {}
    hand.refresh()
    assert hand.display_name == "Dr. Anna Müller"


def test_delete_and_delete_again_reports_item_not_found(session, new_key):
    w = create_one(session, map_contact(FULL, record_key=new_key()))
    assert session.delete([ref(w)]) == [None]
    [again] = session.delete([ref(w)])
    assert isinstance(again, ItemNotFound)


def test_update_after_phone_delete_is_item_not_found(sandbox, session, new_key):
    k1, k2 = new_key(), new_key()
    w1, w2 = session.create([map_contact(FULL, record_key=k1), map_contact(FULL, record_key=k2)])
    sandbox.engine.phone_delete("alice@kanzlei.test", w1.item_id)
    res = session.update(
        [
            (ref(w1), map_contact(FULL, record_key=k1)),
            (ref(w2), map_contact(dataclasses.replace(FULL, surname="X"), record_key=k2)),
        ]
    )
    assert isinstance(res[0], ItemNotFound)
    assert isinstance(res[1], Written)
    assert fetch(session, ref(res[1])).surname == "X"


def test_conflict(sandbox, session, new_key):
    key = new_key()
    w = create_one(session, map_contact(FULL, record_key=key))
    sandbox.inject("response_code", code="ErrorIrresolvableConflict", operation="UpdateItem")
    [res] = session.update([(ref(w), map_contact(FULL, record_key=key))])
    assert isinstance(res, Conflict)
    assert "geändert" in str(res)


def test_busy_in_message_during_create_is_outcome_unknown(sandbox, session, new_key):
    keys = [new_key() for _ in range(3)]
    sandbox.inject("busy_in_message", index=1, operation="CreateItem")
    with pytest.raises(OutcomeUnknown):
        session.create([map_contact(FULL, record_key=k) for k in keys])
    # The worker's next step: look the keys up. Whatever was written is found, nothing else.
    found = session.find_by_keys("contact", keys)
    assert set(found) == set(keys)
    # Message 1 was busy, messages 0 and 2 were processed (and their answers lost with the exception).
    assert [len(found[k]) for k in keys] == [1, 0, 1]


def test_quota_on_update_is_transient(sandbox, session, new_key):
    key = new_key()
    w = create_one(session, map_contact(FULL, record_key=key))
    sandbox.inject("response_code", code="ErrorQuotaExceeded", operation="UpdateItem")
    with pytest.raises(TransientError) as info:
        session.update([(ref(w), map_contact(FULL, record_key=key))])
    assert info.value.back_off and info.value.back_off >= 600


# ----------------------------------------------------------------------------- connection problems


def test_wrong_password_is_auth_failed(sandbox, backend):
    s = backend.session(mailbox_account(sandbox, password="Falsch-123!"))
    with pytest.raises(AuthFailed) as info:
        s.find_all_ours("contact")
    assert (
        str(info.value) == "Anmeldung am Exchange-Server fehlgeschlagen: Benutzername oder Passwort falsch."
    )
    assert "Falsch-123!" not in str(info.value)


def test_auto_auth_probe_and_version_probe(sandbox):
    s = EwsBackend().session(mailbox_account(sandbox, email="bob@kanzlei.test", auth_type="auto"))
    w = create_one(s, map_contact(FULL, record_key="contact:probe"))
    assert s.find_by_keys("contact", ["contact:probe"]) == {"contact:probe": [ref(w)]}


def test_ntlm(sandbox):
    s = EwsBackend(version=(15, 1, 2507, 6)).session(
        mailbox_account(sandbox, email="carol@kanzlei.test", auth_type="ntlm")
    )
    assert s.find_all_ours("contact") == {}


def test_stopped_server_is_transient(sandbox, backend, new_key):
    s = backend.session(mailbox_account(sandbox, email="bob@kanzlei.test"))
    assert s.find_all_ours("contact") == {}
    sandbox.stop()
    with pytest.raises(TransientError) as info:
        s.find_by_keys("contact", ["contact:1"])
    assert type(info.value) is TransientError
    assert "nicht erreichbar" in str(info.value)
    with pytest.raises(TransientError) as info:
        s.create([map_contact(FULL, record_key=new_key())])
    assert type(info.value) is TransientError  # refused: nothing was sent, so the outcome is known


def test_tls_self_signed_needs_explicit_permission(sandbox_tls, new_key):
    strict = EwsBackend().session(mailbox_account(sandbox_tls, email="bob@kanzlei.test", verify_tls=True))
    with pytest.raises(ConfigError, match="Zertifikat"):
        strict.find_all_ours("contact")
    lax = EwsBackend().session(mailbox_account(sandbox_tls, email="carol@kanzlei.test", verify_tls=False))
    create_one(lax, map_contact(FULL, record_key=new_key()))


# ----------------------------------------------------------------------------- calendar and tasks


def test_calendar_timed_and_all_day_read_back(session, new_key):
    berlin = EWSTimeZone("Europe/Berlin")
    timed = CalendarEntry(
        record_key=new_key("appointment"),
        subject="Gerichtstermin LG Berlin",
        start=dt.datetime(2026, 3, 10, 14, 0),
        end=dt.datetime(2026, 3, 10, 15, 30),
        location="LG Berlin, Saal 101",
        body="Az. 123/26\n\n" + USER_NOTES_MARKER + "\n",
        categories=("Termin",),
        free_busy="Busy",
        reminder_minutes=30,
    )
    all_day = CalendarEntry(
        record_key=new_key("deadline"),
        subject="Frist: Berufungsbegründung",
        all_day=True,
        start_date=dt.date(2026, 4, 15),
        end_date=dt.date(2026, 4, 15),
        categories=("Frist",),
        free_busy="Free",
        reminder_minutes=1440,
    )
    wt, wa = session.create([timed, all_day])
    gt = fetch(session, ref(wt))
    assert gt.subject == timed.subject and gt.location == timed.location
    assert gt.start.astimezone(berlin).replace(tzinfo=None) == timed.start
    assert gt.end.astimezone(berlin).replace(tzinfo=None) == timed.end
    assert gt.is_all_day is False and gt.legacy_free_busy_status == "Busy"
    assert gt.reminder_is_set is True and gt.reminder_minutes_before_start == 30
    assert tuple(gt.categories) == ("Termin",) and gt.tsl_record_id == timed.record_key
    ga = fetch(session, ref(wa))
    assert ga.is_all_day is True and ga.legacy_free_busy_status == "Free"
    assert ga.start == dt.date(2026, 4, 15) and ga.end == dt.date(2026, 4, 15)
    assert ga.reminder_minutes_before_start == 1440
    # Updating the deadline: moved one day, reminder removed.
    moved = dataclasses.replace(
        all_day, start_date=dt.date(2026, 4, 16), end_date=dt.date(2026, 4, 16), reminder_minutes=None
    )
    [res] = session.update([(ref(wa), moved)])
    assert isinstance(res, Written)
    gm = fetch(session, ref(res))
    assert gm.start == dt.date(2026, 4, 16) and gm.end == dt.date(2026, 4, 16) and gm.reminder_is_set is False
    assert session.find_by_keys("calendar", [timed.record_key]) == {timed.record_key: [ref(wt)]}


def test_task_create_complete_read_back(session, new_key):
    task = TaskEntry(
        record_key=new_key("reminder"),
        subject="WV: Akte 123/26 vorlegen",
        due_date=dt.date(2026, 3, 5),
        start_date=dt.date(2026, 3, 1),
        body="Wiedervorlage\n\n" + USER_NOTES_MARKER + "\n",
        categories=("Wiedervorlage",),
        reminder_at=dt.datetime(2026, 3, 5, 8, 0, tzinfo=dt.UTC),
    )
    w = create_one(session, task)
    got = fetch(session, ref(w))
    assert got.subject == task.subject and got.status == "NotStarted"
    assert got.due_date == task.due_date and got.start_date == task.start_date
    assert got.reminder_is_set is True and got.reminder_due_by == task.reminder_at
    assert got.tsl_record_id == task.record_key
    done = dataclasses.replace(task, completed=True, reminder_at=None)
    [res] = session.update([(ref(w), done)])
    assert isinstance(res, Written)
    got = fetch(session, ref(res))
    assert got.status == "Completed" and got.reminder_is_set is False


def test_subfolder_target_created_once(sandbox, new_key):
    backend = EwsBackend(target_folders={"contact": "timeSensor LEGAL"})
    s1 = backend.session(mailbox_account(sandbox, email="carol@kanzlei.test"))
    key = new_key()
    create_one(s1, map_contact(FULL, record_key=key))
    s2 = backend.session(mailbox_account(sandbox, email="carol@kanzlei.test"))
    folder = s2.folder("contact")
    assert folder.name == "timeSensor LEGAL" and folder.id == s1.folder("contact").id
    assert len(s2.find_by_keys("contact", [key])[key]) == 1
    default = EwsBackend().session(mailbox_account(sandbox, email="carol@kanzlei.test"))
    assert default.find_by_keys("contact", [key])[key] == []


# ----------------------------------------------------------------------------- transport faults


def test_timeout_after_commit_is_outcome_unknown_and_lookup_finds_it(sandbox, new_key):
    s = EwsBackend().session(mailbox_account(sandbox, email="bob@kanzlei.test", timeout=1.0))
    s.folder("contact")  # resolve the folder first, so the fault meets the CreateItem
    key = new_key()
    sandbox.inject("commit_then_hang", seconds=3.0, operation="CreateItem")
    with pytest.raises(OutcomeUnknown):
        s.create([map_contact(FULL, record_key=key)])
    assert len(s.find_by_keys("contact", [key])[key]) == 1


def test_http_429_and_503_are_transient(sandbox, session, new_key):
    session.folder("contact")
    sandbox.inject("http_status", status=429, retry_after=7, operation="FindItem")
    with pytest.raises(TransientError) as info:
        session.find_all_ours("contact")
    assert type(info.value) is TransientError and info.value.back_off == 7
    sandbox.inject("http_status", status=503, operation="CreateItem")
    with pytest.raises(TransientError) as info:
        session.create([map_contact(FULL, record_key=new_key())])
    assert type(info.value) is TransientError  # 503: the server did not take the request
    assert session.find_all_ours("contact") == {}


def test_server_busy_fault_carries_back_off(sandbox, session):
    session.folder("contact")
    sandbox.inject("server_busy", back_off_ms=2500, operation="FindItem")
    with pytest.raises(TransientError) as info:
        session.find_all_ours("contact")
    assert info.value.back_off == 2.5


def test_requests_in_flight_limited_per_server(sandbox):
    import threading
    import time

    backend = EwsBackend(max_in_flight_per_server=1)
    sessions = [
        backend.session(mailbox_account(sandbox, email=e))
        for e in ("alice@kanzlei.test", "bob@kanzlei.test", "carol@kanzlei.test")
    ]
    for s in sessions:
        s.folder("contact")
    sandbox.inject("delay", seconds=0.3, operation="FindItem", count=3)
    errors: list[BaseException] = []

    def run(s):
        try:
            s.find_all_ours("contact")
        except BaseException as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(s,)) for s in sessions]
    start = time.monotonic()
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    assert not errors
    # With one request in flight per server the three delayed requests cannot overlap.
    assert time.monotonic() - start >= 0.9


def test_user_notes_kept_when_phone_turned_body_into_html(session, new_key):
    from exchangelib import HTMLBody

    key = new_key()
    w = create_one(session, map_contact(FULL, record_key=key))
    phone = fetch(session, ref(w))
    phone.body = HTMLBody(
        "<html><body><p>alt</p><p>" + USER_NOTES_MARKER + "</p><p>Hund: Bello &amp; Katze</p></body></html>"
    )
    phone.save(update_fields=["body"])
    new = map_contact(FULL, record_key=key)
    [res] = session.update([(ItemRef(phone.id, phone.changekey), new)])
    assert isinstance(res, Written)
    got = body_text(fetch(session, ref(res)).body)
    assert got.startswith(new.body) and "Hund: Bello & Katze" in got and "<p>" not in got
