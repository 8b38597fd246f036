"""An item Exchange refuses is isolated and failed with its reason; a poison job never spins.

The rig is a real worker on a SQLite queue, exchangelib against the sandbox over HTTP.
"One drain" runs claims until none is left (at most ``MAX_CLAIMS``, counted): a job that
is retried or reclaimed without progress shows up as pending work or as too many claims.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import sqlite3
import time
from collections.abc import Callable, Iterator

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tsl_exchange_plugin import signals
from tsl_exchange_plugin.backends.base import MailboxAccount, Written
from tsl_exchange_plugin.backends.ews.backend import EwsBackend
from tsl_exchange_plugin.mapping.common import MappingError
from tsl_exchange_plugin.mapping.context import MappingContext
from tsl_exchange_plugin.mapping.items import CalendarEntry, ContactItem, ExchangeItem
from tsl_exchange_plugin.outbox.base import Change
from tsl_exchange_plugin.outbox.snapshot import Snapshot, dump
from tsl_exchange_plugin.outbox.sqlite import SQLiteOutbox
from tsl_exchange_plugin.sandbox.testing import SANDBOX_PASSWORDS
from tsl_exchange_plugin.worker.dispatch import make_mapper
from tsl_exchange_plugin.worker.runner import Worker, WorkerConfig
from tsl_hostapi.types import Appointment, Contact, Deadline, Reminder, User

MAILBOX = "alice"
EMAIL = "alice@kanzlei.test"
BATCH = 100
BAD_AT = 37  # not first, not last, not in the middle: bisection has to find it
MAX_CLAIMS = 10


@dataclasses.dataclass
class Rig:
    outbox: SQLiteOutbox
    server: object
    claims: list[int]
    make_worker: Callable[..., Worker]
    account: dict = dataclasses.field(default_factory=dict)  # overrides for MailboxAccount

    def enqueue(self, records) -> None:
        kinds = {Contact: "contact", Appointment: "appointment"}
        self.outbox.enqueue(
            [Change(MAILBOX, r.ref.key, "upsert", dump(Snapshot(kinds[type(r)], r))) for r in records]
        )

    def drain(self, worker: Worker) -> None:
        """Claim until nothing is claimable; an exception counts as a claim (as the worker loop
        survives it), so a job that comes back at once without progress exhausts MAX_CLAIMS.
        The drain's clock stands at its start: a retry with a short jittered back-off is not
        due within it, however slowly a loaded machine runs the claims."""
        now = time.time()
        for _ in range(MAX_CLAIMS):
            try:
                worked = worker.run_once(now=now)
            except Exception:
                worked = True
            if not worked:
                return
        raise AssertionError(f"no end after {MAX_CLAIMS} claims: {self.claims}")

    def ours(self, folder: str) -> dict[str, dict]:
        out = {}
        for item in self.server.engine.list_items(EMAIL, folder):
            key = (item.get("extended_properties") or {}).get("tslRecordId")
            if key:
                out[key] = item
        return out


@pytest.fixture
def rig(tmp_path, sandbox) -> Iterator[Rig]:
    outbox = SQLiteOutbox(tmp_path / "outbox.sqlite3")
    claims: list[int] = []
    real_claim = outbox.claim

    def counting_claim(*args, **kwargs):
        claim = real_claim(*args, **kwargs)
        if claim is not None:
            claims.append(len(claim.jobs))
        return claim

    outbox.claim = counting_claim  # type: ignore[method-assign]
    backend = EwsBackend()
    workers: list[Worker] = []
    account: dict = {}

    def resolve(mailbox: str) -> MailboxAccount:
        email = f"{mailbox}@kanzlei.test"
        values = dict(auth_type="basic", timeout=10.0) | account
        return MailboxAccount(mailbox, email, sandbox.url, email, SANDBOX_PASSWORDS[email], **values)

    def make_worker(mapper, **config) -> Worker:
        cfg = dict(threads=1, batch_size=BATCH, lanes=1, slices_per_claim=1, max_back_off=900.0)
        cfg.update(config)
        worker = Worker(outbox, backend, resolve, mapper, WorkerConfig(**cfg))
        workers.append(worker)
        return worker

    try:
        yield Rig(outbox, sandbox, claims, make_worker, account)
    finally:
        for worker in workers:
            worker.stop()
        outbox.close()


# ----------------------------------------------------------------------------- records


def contact(n: int, **kw) -> Contact:
    return Contact(id=str(n), given_name="Anna", surname=f"Muster{n}", **kw)


def appointment(n: int, **kw) -> Appointment:
    values = dict(
        id=str(n),
        subject=f"Besprechung {n}",
        start=dt.datetime(2026, 5, 4, 10, 0),
        end=dt.datetime(2026, 5, 4, 11, 0),
        participant_ids=(MAILBOX,),
    )
    values.update(kw)
    return Appointment(**values)


# Each value is one that Exchange refuses, as measured: the whole CreateItem failed with it.
BAD = {
    "website": (contact, dict(website="http://www.kanzlei müller.de"), "contacts"),
    "birthday_year_1": (contact, dict(birthday=dt.date(1, 1, 1)), "contacts"),
    "birthday_9999": (contact, dict(birthday=dt.date(9999, 12, 31)), "contacts"),
    "reminder_10M": (appointment, dict(reminder_minutes=10_000_000), "calendar"),
    "lmt_offset_1900": (
        appointment,
        dict(
            timezone="America/St_Johns",
            start=dt.datetime(1900, 3, 1, 10, 0),
            end=dt.datetime(1900, 3, 1, 11, 0),
        ),
        "calendar",
    ),
}


def batch(kind: str) -> tuple[list, str, str]:
    make, bad_values, folder = BAD[kind]
    records = [make(n) for n in range(BATCH)]
    records[BAD_AT] = make(BAD_AT, **bad_values)
    return records, records[BAD_AT].ref.key, folder


def raw_mapper(snapshot: Snapshot, mailbox: str) -> list[ExchangeItem]:
    """The record's values as they are, without the mapping's checks: what reaches the server
    when the mapping lets a bad value through."""
    r = snapshot.record
    if isinstance(r, Contact):
        return [
            ContactItem(
                r.ref.key,
                r.surname,
                r.surname,
                surname=r.surname,
                birthday=r.birthday,
                business_homepage=r.website,
            )
        ]
    return [
        CalendarEntry(
            r.ref.key,
            r.subject,
            timezone=r.timezone,
            start=r.start,
            end=r.end,
            reminder_minutes=r.reminder_minutes,
        )
    ]


def job_of(rig: Rig, key: str):
    (job,) = [j for j in rig.outbox.jobs(MAILBOX) if j.record_key == key]
    return job


# ----------------------------------------------------------------------------- server refuses


@pytest.mark.parametrize("kind", sorted(BAD))
def test_an_item_the_server_refuses_is_isolated_and_failed_the_rest_pushed(rig, kind):
    records, bad_key, folder = batch(kind)
    rig.enqueue(records)
    worker = rig.make_worker(raw_mapper)
    rig.drain(worker)
    ours = rig.ours(folder)
    assert set(ours) == {r.ref.key for r in records} - {bad_key}
    assert rig.outbox.pending_count() == 0
    job = job_of(rig, bad_key)
    assert job.status == "failed"
    assert "Exchange" in job.last_error and "abgelehnt" in job.last_error
    assert len(rig.claims) == 1  # isolated within the claim, no retry round


def test_a_refused_entry_is_pushed_again_once_its_record_is_corrected(rig):
    records, bad_key, _ = batch("website")
    rig.enqueue(records)
    worker = rig.make_worker(raw_mapper)
    rig.drain(worker)
    assert job_of(rig, bad_key).status == "failed"
    rig.enqueue([contact(BAD_AT, website="https://www.kanzlei-mueller.de")])
    rig.drain(worker)
    assert rig.ours("contacts")[bad_key]["business_home_page"] == "https://www.kanzlei-mueller.de"
    assert rig.outbox.jobs(MAILBOX) == []


def test_creates_that_may_have_landed_are_looked_up_before_the_refused_request_is_split(rig):
    # Round 1: 50 creates land, but their answer never comes (outcome unknown).
    records, bad_key, _ = batch("reminder_10M")
    first, rest = records[50:], records[:50]  # the refused one (BAD_AT) comes in round 2
    rig.account["timeout"] = 1.0
    rig.server.inject("commit_then_hang", operation="CreateItem", seconds=3, mailbox=EMAIL)
    worker = rig.make_worker(raw_mapper)
    rig.enqueue(first)
    assert worker.run_once()
    assert len(rig.ours("calendar")) == 50
    # The lost answer paused the server, not the jobs: no attempt counted, all 50 handed out once.
    assert all(j.attempts == 0 and j.claims == 1 for j in rig.outbox.jobs(MAILBOX))
    # Round 2 (after the server's pause): the same 50 with 50 new ones, one of them refused. The
    # first claim probes the recovering server with a small slice, the next takes the rest.
    rig.enqueue(rest)
    assert worker.run_once(now=time.time() + 3600)
    while worker.run_once(now=time.time() + 3600):
        pass
    ours = rig.ours("calendar")
    assert set(ours) == {r.ref.key for r in records} - {bad_key}  # each once: the 50 were found
    assert len(rig.server.engine.list_items(EMAIL, "calendar")) == 99
    assert job_of(rig, bad_key).status == "failed"
    assert rig.outbox.pending_count() == 0


# ----------------------------------------------------------------------------- mapping refuses


@pytest.mark.parametrize("kind", sorted(BAD))
def test_the_mapping_catches_what_exchange_refuses_before_it_is_sent(rig, kind):
    records, bad_key, folder = batch(kind)
    rig.enqueue(records)
    before = rig.server.engine.request_counts(EMAIL).get("CreateItem", 0)
    worker = rig.make_worker(make_mapper())
    rig.drain(worker)
    assert rig.outbox.pending_count() == 0
    # Nothing was refused by the server: one CreateItem carried the whole batch.
    assert rig.server.engine.request_counts(EMAIL).get("CreateItem", 0) - before == 1
    ours = rig.ours(folder)
    if folder == "calendar":
        # A date or reminder is never changed silently: the entry is refused with a reason.
        assert set(ours) == {r.ref.key for r in records} - {bad_key}
        job = job_of(rig, bad_key)
        assert job.status == "failed"
        assert "bitte" in job.last_error and "korrigieren" in job.last_error
    else:
        # A contact stays reachable; the value Exchange cannot hold is kept in the notes.
        assert set(ours) == {r.ref.key for r in records}
        item = ours[bad_key]
        assert not item.get("business_home_page")
        assert not item.get("birthday")
        assert "nicht als" in item["body"] and "übernommen" in item["body"]


# ----------------------------------------------------------------------------- poison jobs


def test_a_mapper_error_and_a_failing_receiver_never_stop_the_other_jobs(rig):
    records = [contact(n) for n in range(20)]
    rig.enqueue(records)
    poison = records[3].ref.key
    noisy = records[5].ref.key
    mapper = make_mapper()

    def breaking_mapper(snapshot, mailbox):
        if snapshot.record.ref.key == poison:
            return {}["kein-feld"]  # a KeyError deep in a mapping
        return mapper(snapshot, mailbox)

    def locked_audit(sender, **extra):
        if extra.get("record_key") == noisy:
            raise sqlite3.OperationalError("database is locked")

    signals.push_succeeded.connect(locked_audit)
    try:
        worker = rig.make_worker(breaking_mapper)
        rig.drain(worker)
    finally:
        signals.push_succeeded.disconnect(locked_audit)
    ours = rig.ours("contacts")
    assert set(ours) == {r.ref.key for r in records} - {poison}
    job = job_of(rig, poison)
    assert job.status == "failed"
    assert "KeyError" in job.last_error
    assert rig.outbox.pending_count() == 0
    assert len(rig.claims) == 1


def test_a_mapping_error_that_may_pass_retries_that_job_alone_with_back_off(rig):
    records = [contact(n) for n in range(10)]
    rig.enqueue(records)
    flaky = records[4].ref.key
    mapper = make_mapper()

    def locked_settings(snapshot, mailbox):
        if snapshot.record.ref.key == flaky:
            raise sqlite3.OperationalError("database is locked")  # e.g. the settings store, briefly
        return mapper(snapshot, mailbox)

    started = time.time()
    rig.drain(rig.make_worker(locked_settings))
    assert set(rig.ours("contacts")) == {r.ref.key for r in records} - {flaky}
    job = job_of(rig, flaky)
    assert (job.status, job.attempts) == ("pending", 1)
    assert job.due_at > started and "database is locked" in job.last_error
    assert len(rig.claims) == 1


def test_a_batch_that_cannot_be_recorded_is_retried_with_back_off_never_reclaimed_at_once(rig):
    records = [contact(n) for n in range(5)]
    rig.enqueue(records)
    worker = rig.make_worker(make_mapper())
    real = rig.outbox.complete_many
    calls = []

    def locked(*args, **kwargs):
        calls.append(1)
        if len(calls) == 1:
            raise sqlite3.OperationalError("database is locked")
        return real(*args, **kwargs)

    rig.outbox.complete_many = locked  # type: ignore[method-assign]
    started = time.time()
    rig.drain(worker)
    assert len(rig.claims) == 1
    jobs = rig.outbox.jobs(MAILBOX)
    assert len(jobs) == 5
    for job in jobs:
        assert job.status == "pending"
        assert job.attempts == 1
        assert job.due_at > started
        assert "database is locked" in job.last_error


# ----------------------------------------------------------------------------- generated records

ZONES = ["Europe/Berlin", "Europe/Amsterdam", "America/St_Johns", "Asia/Kolkata", "Asia/Kathmandu", "UTC"]
WEBSITES = st.sampled_from(
    [
        "https://www.kanzlei.de",
        "www.kanzlei.de",
        "http://www.kanzlei müller.de",
        "http://kanzlei.de:80a",
        "http://[::1]/",
        "http:kanzlei.de",
        "mailto:info@kanzlei.de",
        "siehe Briefkopf",
        "https://müller.de/a?b#c",
    ]
) | st.text(max_size=30)
MOMENTS = st.datetimes(min_value=dt.datetime(1890, 1, 1), max_value=dt.datetime(2110, 12, 31))
REMINDERS = st.none() | st.sampled_from([0, 15, 2_629_800, 2_629_801, 10_000_000]) | st.integers(0, 3_000_000)

contacts = st.builds(
    Contact,
    id=st.just("g"),
    given_name=st.text(max_size=20),
    surname=st.text(min_size=1, max_size=300),
    birthday=st.none() | st.dates(),
    website=WEBSITES,
)
appointments = st.builds(
    Appointment,
    id=st.just("g"),
    subject=st.text(max_size=300),
    start=MOMENTS,
    end=st.none(),
    timezone=st.sampled_from(ZONES),
    participant_ids=st.just((MAILBOX,)),
    reminder_minutes=REMINDERS,
)
deadlines = st.builds(
    Deadline,
    id=st.just("g"),
    due_date=st.dates(min_value=dt.date(1890, 1, 1), max_value=dt.date(2110, 12, 31)),
    kind=st.text(max_size=40),
    responsible_ids=st.just((MAILBOX,)),
)
wiedervorlagen = st.builds(
    Reminder,
    id=st.just("g"),
    due_date=st.dates(min_value=dt.date(1890, 1, 1), max_value=dt.date(2110, 12, 31)),
    subject=st.text(max_size=300),
    responsible_ids=st.just((MAILBOX,)),
)
KINDS = {Contact: "contact", Appointment: "appointment", Deadline: "deadline", Reminder: "reminder"}


@pytest.fixture
def sessions(sandbox):
    """One session per recipient zone: exchangelib writes all-day items in the account's zone."""
    backend = EwsBackend()
    opened: dict[str, object] = {}

    def session_for(zone: str):
        if zone not in opened:
            email = EMAIL
            opened[zone] = backend.session(
                MailboxAccount(MAILBOX, email, sandbox.url, email, SANDBOX_PASSWORDS[email], "basic", zone)
            )
        return opened[zone]

    yield session_for
    for session in opened.values():
        session.close()


@settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(record=st.one_of(contacts, appointments, deadlines, wiedervorlagen), zone=st.sampled_from(ZONES))
def test_what_the_mapping_accepts_exchange_accepts_and_what_it_refuses_has_a_reason(sessions, record, zone):
    mapper = make_mapper(lambda mailbox, snap: MappingContext(User(MAILBOX, "Anna"), timezone=zone))
    try:
        items = mapper(Snapshot(KINDS[type(record)], record), MAILBOX)
    except MappingError as exc:
        assert str(exc).strip()
        return
    results = sessions(zone).create(items)
    assert all(isinstance(r, Written) for r in results), [str(r) for r in results]


# ----------------------------------------------------------------------------- status view


def test_the_status_view_names_each_failed_entry_with_its_reason(kanzlei):
    from tsl_exchange_plugin.ui.status import mailbox_rows

    k = kanzlei
    alice = k.lawyers[0]
    bad = k.host.save(
        Appointment(
            id="zu-frueh",
            subject="Verhandlung",
            start=dt.datetime(2026, 6, 1, 9, 0),
            end=dt.datetime(2026, 6, 1, 10, 0),
            participant_ids=(alice.id,),
            reminder_minutes=10_000_000,
        )
    )
    k.drain()
    (row,) = [r for r in mailbox_rows(k.host, k.runtime) if r.user_id == alice.id]
    assert row.failed == 1
    (failure,) = row.failures
    assert failure.startswith(f"{bad.ref.key}: Die Erinnerung 10000000 Minuten")
    assert "korrigieren" in failure
