"""The Graph sandbox's protocol rules and the backend's behaviour at each of them: contract
validation, $batch, paging, extended-property filters, transactionId, throttling, tokens."""

from __future__ import annotations

import datetime as dt
import time

import httpx
import pytest

from tsl_exchange_plugin.backends.base import AuthFailed, ItemRef, OutcomeUnknown, TransientError, Written
from tsl_exchange_plugin.backends.graph.backend import GraphBackend
from tsl_exchange_plugin.backends.graph.wire import RECORD_ID_PROPERTY
from tsl_exchange_plugin.mapping.items import CalendarEntry, ContactItem
from tsl_exchange_plugin.sandbox.graph import GraphApp
from tsl_exchange_plugin.sandbox.graph.testing import CLIENT_ID, TENANT, graph_account

ALICE = "alice@kanzlei.test"


def contact(key: str) -> ContactItem:
    return ContactItem(key, display_name=f"Kontakt {key}", file_as=f"Kontakt {key}", surname=key)


@pytest.fixture
def raw(graph_sandbox, gsession):
    """A plain HTTP client with a valid token, for requests the backend would never send."""
    token = gsession._backend.tokens.token(graph_account(graph_sandbox))
    with httpx.Client(
        base_url=graph_sandbox.graph_url,
        verify=__import__("ssl").create_default_context(cafile=graph_sandbox.cert_pem_path),
        headers={"Authorization": f"Bearer {token}"},
    ) as client:
        yield client


def test_a_body_that_breaks_the_contract_is_recorded(graph_sandbox, raw):
    resp = raw.post(f"/users/{ALICE}/events", json={"subject": "x", "showAs": "vielleicht"})
    assert resp.status_code == 400  # the sandbox refuses the value ...
    assert any("showAs" in v for v in graph_sandbox.violations)  # ... and the fixture would fail the test
    graph_sandbox.violations.clear()


def test_batch_rules(graph_sandbox, raw):
    req = lambda i, **kw: {"id": str(i), "method": "GET", "url": f"/users/{ALICE}/contacts", **kw}  # noqa: E731
    assert raw.post("/$batch", json={"requests": [req(i) for i in range(21)]}).status_code == 400
    assert raw.post("/$batch", json={"requests": [req(1), req("1")]}).status_code == 400
    assert any("requests" in v for v in graph_sandbox.violations)  # 21 requests break the contract too
    graph_sandbox.violations.clear()
    body = {
        "requests": [
            {"id": "a", "method": "DELETE", "url": f"/users/{ALICE}/contacts/AAMkNichtDa"},
            req("b", dependsOn=["a"]),
            req("c"),
        ]
    }
    answer = raw.post("/$batch", json=body)
    assert answer.status_code == 200
    items = answer.json()["responses"]
    assert [i["id"] for i in items] != ["a", "b", "c"]  # the order is not kept
    status = {i["id"]: i["status"] for i in items}
    assert status == {"a": 404, "b": 424, "c": 200}
    # An EWS id (with '/' or '+') in a URL is malformed.
    bad = raw.post("/$batch", json={"requests": [req("x", url=f"/users/{ALICE}/contacts/AB+c/d=")]})
    assert bad.json()["responses"][0]["body"]["error"]["code"] in ("ErrorInvalidIdMalformed", "BadRequest")


def test_extended_property_filter_semantics(graph_sandbox, gsession, raw):
    gsession.create([contact("contact:Ab-1")])
    prop = RECORD_ID_PROPERTY

    def count(flt: str) -> int:
        resp = raw.get(f"/users/{ALICE}/contacts", params={"$filter": flt})
        assert resp.status_code == 200, resp.text
        return len(resp.json()["value"])

    assert (
        count(f"singleValueExtendedProperties/Any(ep: ep/id eq '{prop}' and ep/value eq 'contact:ab-1')") == 1
    )
    assert (
        count(
            f"singleValueExtendedProperties/Any(ep: ep/id eq '{prop.replace('tslRecordId', 'tslrecordid')}' and ep/value eq 'contact:Ab-1')"
        )
        == 0
    )
    resp = raw.get(f"/users/{ALICE}/contacts", params={"$filter": f"id eq '{prop}'"})
    assert resp.status_code == 400 and resp.json()["error"]["code"] == "ErrorInvalidProperty"
    # Without $expand the property is not in the answer.
    (item,) = raw.get(f"/users/{ALICE}/contacts").json()["value"]
    assert "singleValueExtendedProperties" not in item


def test_lookups_follow_next_links(graph_sandbox, gsession):
    items = [contact(f"contact:p{n}") for n in range(230)]
    assert all(isinstance(w, Written) for w in gsession.create(items))
    before = len(graph_sandbox.log())
    found = gsession.find_all_ours("contact")
    assert len(found) == 230
    assert len(graph_sandbox.log()) - before == 3  # pages of 100, 100, 30, each following the nextLink
    assert gsession.folder_count("contact") == 230


def test_transaction_id_makes_a_repeated_event_create_harmless(graph_sandbox, gsession, sandbox):
    entry = CalendarEntry(
        "appointment:tx", "Termin", start=dt.datetime(2026, 5, 4, 10), end=dt.datetime(2026, 5, 4, 11)
    )
    (first,) = gsession.create([entry])
    (again,) = gsession.create([entry])
    assert first.item_id == again.item_id
    assert len(sandbox.engine.list_items(ALICE, "calendar")) == 1


def test_throttling_answers_carry_their_wait(graph_sandbox, gsession):
    graph_sandbox.inject("status", status=429, retry_after=7)
    with pytest.raises(TransientError) as err:
        gsession.find_all_ours("contact")
    assert err.value.back_off == 7.0 and "drosselt" in str(err.value)
    graph_sandbox.inject("status", status=503, retry_after=3, inner=True, method="POST")
    first, second = gsession.create([contact("contact:t1"), contact("contact:t2")])
    assert isinstance(first, TransientError) and first.back_off == 3.0
    assert isinstance(second, Written)


@pytest.mark.parametrize(
    "fault,pause,back_off",
    [
        (dict(kind="status", status=429, retry_after=7), "mailbox", 7.0),
        (dict(kind="status", status=429), "mailbox", None),  # the worker's own busy back-off then
        (dict(kind="status", status=503, retry_after=2), "mailbox", 2.0),
        (dict(kind="status", status=503), "server", None),
        (dict(kind="status", status=502), "server", None),
        (dict(kind="status", status=500), "server", None),
        (dict(kind="drop"), "server", None),
        (dict(kind="status", status=429, retry_after=4, inner=True), "mailbox", 4.0),
        (dict(kind="status", status=503, inner=True), "mailbox", None),
    ],
    ids=lambda v: "-".join(f"{k}={x}" for k, x in v.items()) if isinstance(v, dict) else str(v),
)
def test_each_failure_names_what_waits(graph_sandbox, gsession, fault, pause, back_off):
    """The worker pauses the mailbox or the whole server by this (as for EWS): throttling is the
    mailbox's, a service that fails or cannot be reached is the server's."""
    gsession.find_all_ours("contact")  # the token first: the fault is the request's
    fault = dict(fault)
    graph_sandbox.inject(fault.pop("kind"), method="GET", **fault)
    with pytest.raises(TransientError) as err:
        gsession.find_by_keys("contact", ["contact:x"])
    assert (err.value.pause, err.value.back_off) == (pause, back_off)
    assert str(err.value) and "Microsoft 365" in str(err.value)


def test_a_lost_answer_to_a_create_is_an_unknown_outcome(graph_sandbox, gsession, sandbox):
    graph_sandbox.inject("drop_after_commit", method="POST")
    with pytest.raises(OutcomeUnknown):
        gsession.create([contact("contact:lost")])
    assert len(sandbox.engine.list_items(ALICE, "contacts")) == 1  # it was written
    assert gsession.find_by_keys("contact", ["contact:lost"])["contact:lost"]


def test_the_sandbox_counts_concurrency_and_budget(graph_sandbox, gsession):
    graph_sandbox.budget = (25, 600.0)
    gsession.create([contact(f"contact:b{n}") for n in range(20)])
    with pytest.raises(TransientError) as err:
        gsession.create([contact(f"contact:c{n}") for n in range(10)])
    assert err.value.back_off and err.value.back_off > 1
    assert max(graph_sandbox.peak_in_flight.values()) <= 4


def test_the_backend_keeps_its_own_budget(graph_sandbox):
    backend = GraphBackend(budget=(30, 600.0))
    session = backend.session(graph_account(graph_sandbox))
    session.create([contact(f"contact:d{n}") for n in range(25)])
    sent = len(graph_sandbox.log())
    with pytest.raises(TransientError) as err:
        session.create([contact(f"contact:e{n}") for n in range(10)])
    assert "10.000 Anfragen" in str(err.value) and err.value.back_off > 500
    assert len(graph_sandbox.log()) == sent  # refused before anything went out
    backend.close()


def test_lanes_of_one_mailbox_never_have_more_than_four_requests_out(graph_sandbox):
    import threading

    graph_sandbox.delay = 0.02
    backend = GraphBackend()
    sessions = [backend.session(graph_account(graph_sandbox)) for _ in range(3)]
    errors: list[BaseException] = []

    def push(n: int) -> None:
        try:
            results = sessions[n].create([contact(f"contact:l{n}-{i}") for i in range(60)])
            assert all(isinstance(r, Written) for r in results), results
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=push, args=(n,)) for n in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert graph_sandbox.peak_in_flight[ALICE] <= 4
    assert not [r for r in graph_sandbox.log() if r.status == 429]
    backend.close()


def test_an_expired_token_is_renewed_once(graph_sandbox, gsession):
    gsession.create([contact("contact:x1")])
    asked = graph_sandbox.token_requests
    real = time.time
    graph_sandbox.clock = lambda: real() + 4000  # the token the backend holds has expired
    gsession.create([contact("contact:x2")])
    assert graph_sandbox.token_requests == asked + 1
    assert len(gsession.find_all_ours("contact")) == 2


def test_certificate_credentials(graph_sandbox, sandbox):
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import rsa
    from cryptography.x509.oid import NameOID

    def make() -> tuple[str, str]:
        key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "tsl-exchange-sync")])
        now = dt.datetime.now(dt.UTC)
        cert = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(days=1))
            .not_valid_after(now + dt.timedelta(days=30))
            .sign(key, hashes.SHA256())
        )
        key_pem = key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        ).decode()
        return key_pem, cert.public_bytes(serialization.Encoding.PEM).decode()

    key_pem, cert_pem = make()
    other_key, _ = make()
    app_id = "6e0b8a3c-9d2f-4e71-b5a4-1c3d2e4f5a60"
    graph_sandbox.add_app(GraphApp(app_id, TENANT, certificate_pem=cert_pem))
    backend = GraphBackend()
    ok = backend.session(
        graph_account(
            graph_sandbox, client_id=app_id, client_secret="", client_certificate=key_pem + cert_pem
        )
    )
    (w,) = ok.create([contact("contact:cert")])
    assert isinstance(w, Written)
    wrong = backend.session(
        graph_account(
            graph_sandbox, client_id=app_id, client_secret="", client_certificate=other_key + cert_pem
        )
    )
    with pytest.raises(AuthFailed) as err:
        wrong.create([contact("contact:cert2")])
    assert "Zertifikat wurde nicht anerkannt" in str(err.value)
    assert CLIENT_ID != app_id
    backend.close()


def test_deleting_an_item_already_gone_is_reported_not_raised(gsession, graph_sandbox):
    (w,) = gsession.create([contact("contact:gone")])
    (item,) = graph_sandbox.items(ALICE, "contacts")
    graph_sandbox.phone_delete(ALICE, item["id"])
    (result,) = gsession.delete([ItemRef(w.item_id, w.change_key)])
    assert type(result).__name__ == "ItemNotFound"


def test_event_times_all_day_rendering_and_calendar_view(graph_sandbox, gsession, sandbox, raw):
    timed = CalendarEntry(
        "appointment:t1",
        "Verhandlung",
        start=dt.datetime(2026, 3, 10, 14),
        end=dt.datetime(2026, 3, 10, 15, 30),
    )
    allday = CalendarEntry(
        "deadline:a1",
        "Frist",
        timezone="Pacific/Auckland",
        all_day=True,
        start_date=dt.date(2026, 3, 10),
        end_date=dt.date(2026, 3, 10),
        free_busy="Free",
    )
    assert all(isinstance(w, Written) for w in gsession.create([timed, allday]))
    stored = {i["subject"]: i for i in sandbox.engine.list_items(ALICE, "calendar")}
    assert (stored["Verhandlung"]["start"], stored["Verhandlung"]["end"]) == (
        "2026-03-10T13:00:00Z",
        "2026-03-10T14:30:00Z",
    )
    assert stored["Verhandlung"]["start_time_zone"] == {"id": "W. Europe Standard Time"}
    # Auckland's 10 March begins on 9 March 11:00 UTC (summer time, UTC+13).
    assert stored["Frist"]["start"] == "2026-03-09T11:00:00Z"
    # All-day events come back midnight to midnight, labelled with the zone asked for (NOTES §8).
    events = raw.get(
        f"/users/{ALICE}/events", headers={"Prefer": 'outlook.timezone="Eastern Standard Time"'}
    ).json()
    frist = next(e for e in events["value"] if e["subject"] == "Frist")
    assert frist["start"] == {"dateTime": "2026-03-10T00:00:00.0000000", "timeZone": "Eastern Standard Time"}
    assert frist["end"]["dateTime"] == "2026-03-11T00:00:00.0000000"
    # calendarView places it by its real span in the creating zone.
    view = raw.get(
        f"/users/{ALICE}/calendarView",
        params={"startDateTime": "2026-03-09T10:00:00Z", "endDateTime": "2026-03-09T12:00:00Z"},
    ).json()
    assert [e["subject"] for e in view["value"]] == ["Frist"]


def test_phone_edits_and_deletes_through_the_inspection_api(graph_sandbox, gsession, sandbox):
    (w,) = gsession.create([contact("contact:ph")])
    (item,) = graph_sandbox.items(ALICE, "contacts")
    base = graph_sandbox.url + "/sandbox/api/mailboxes/" + ALICE
    with httpx.Client(
        verify=__import__("ssl").create_default_context(cafile=graph_sandbox.cert_pem_path)
    ) as c:
        assert c.patch(f"{base}/contacts/{item['id']}", json={"jobTitle": "vom Telefon"}).status_code == 204
        assert sandbox.engine.list_items(ALICE, "contacts")[0]["job_title"] == "vom Telefon"
        assert c.delete(f"{base}/contacts/{item['id']}").status_code == 204
    (result,) = gsession.update([(ItemRef(w.item_id, w.change_key), contact("contact:ph"))])
    assert type(result).__name__ == "ItemNotFound"


def test_a_to_do_list_deleted_on_the_phone_is_created_again(graph_sandbox, gsession, raw):
    from tsl_exchange_plugin.mapping.items import TaskEntry

    task = TaskEntry("reminder:td", "WV: Akte", due_date=dt.date(2026, 6, 1))
    (first,) = gsession.create([task])
    list_id = first.item_id.split(":")[1]
    assert raw.delete(f"/users/{ALICE}/todo/lists/{list_id}").status_code == 204
    (retry,) = gsession.create([task])
    assert isinstance(retry, TransientError) and "To-Do-Liste" in str(retry)
    (again,) = gsession.create([task])
    assert isinstance(again, Written) and again.item_id.split(":")[1] != list_id
    assert list(gsession.find_all_ours("task")) == ["reminder:td"]


def test_a_write_that_commits_and_then_never_answers(graph_sandbox, gbackend, sandbox):
    session = gbackend.session(graph_account(graph_sandbox, timeout=1.0))
    session.find_all_ours("contact")  # token and connection first; the held answer is the write's
    graph_sandbox.inject("hang_after_commit", method="POST")
    try:
        with pytest.raises(OutcomeUnknown):
            session.create([contact("contact:hang")])
    finally:
        graph_sandbox.release_held()
    assert session.find_by_keys("contact", ["contact:hang"])["contact:hang"]  # it was written


def test_a_connection_dropped_before_the_server_read_it(graph_sandbox, gsession, sandbox):
    graph_sandbox.inject("drop", method="POST")
    with pytest.raises(OutcomeUnknown):  # the client cannot tell it from a lost answer
        gsession.create([contact("contact:drop")])
    assert sandbox.engine.list_items(ALICE, "contacts") == []
    (w,) = gsession.create([contact("contact:drop")])
    assert isinstance(w, Written)
