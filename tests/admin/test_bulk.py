"""Contacts list › Extras › Auswahl ändern: 10,000 contacts in one go, per-record report, host not blocked."""

from __future__ import annotations

import dataclasses
import threading
import time

from tsl_exchange_plugin import PLUGIN_ID
from tsl_exchange_plugin.core import subscriptions
from tsl_exchange_plugin.ui.actions import bulk_progress
from tsl_hostapi.reference.sample_firm import generate_firm
from tsl_hostapi.types import RecordRef

SET_SYNC = f"{PLUGIN_ID}.set_sync"
REMOVE_SYNC = f"{PLUGIN_ID}.remove_sync"
N = 10_000


def test_ten_thousand_contacts_in_one_action_with_progress_and_per_record_report(kanzlei):
    k = kanzlei
    alice, bob, _ = k.lawyers
    big = generate_firm(seed=11, contacts=N)
    # The host's own data, no events; prefixed ids so nothing of the fixture's firm is replaced.
    contacts = tuple(dataclasses.replace(c, id=f"b{c.id}") for c in big.contacts)
    big = dataclasses.replace(
        big, users=(), contacts=contacts, cases=(), appointments=(), deadlines=(), reminders=()
    )
    k.host.load_firm(big)
    k.runtime.worker.stop()  # only the queueing is measured here, not 10,000 pushes
    refs = [c.ref for c in big.contacts]
    assert len(refs) == N
    # 100 already set for alice; one that does not exist; one that is not a contact.
    k.host.press(k.admin, SET_SYNC, refs[:100], {"users": [alice.id]})
    selection = [*refs, RecordRef("contact", "does-not-exist"), RecordRef("case", k.firm.cases[0].id)]

    progress: list[tuple[int, int]] = []

    def on_progress(sender, **kw):
        progress.append((kw["done"], kw["total"]))

    # The host keeps saving while the action runs (another user, another thread).
    latencies: list[float] = []
    stop = threading.Event()

    def keep_saving():
        contact = k.firm.contacts[0]
        while not stop.is_set():
            t = time.monotonic()
            k.host.save(contact)
            latencies.append(time.monotonic() - t)

    saver = threading.Thread(target=keep_saving)
    bulk_progress.connect(on_progress)
    saver.start()
    try:
        started = time.monotonic()
        result = k.host.press(k.admin, SET_SYNC, selection, {"users": [alice.id]})
        elapsed = time.monotonic() - started
    finally:
        stop.set()
        saver.join()
        bulk_progress.disconnect(on_progress)
    assert result.ok, result.message
    assert len(result.outcomes) == len(selection)
    assert [o.ref for o in result.outcomes] == selection  # in selection order
    by_status: dict[str, int] = {}
    for o in result.outcomes:
        by_status[o.status] = by_status.get(o.status, 0) + 1
    assert by_status == {"done": N - 100, "unchanged": 100, "failed": 2}
    assert result.outcomes[0].message == "bereits gesetzt"
    assert result.outcomes[-2].message == "Kontakt existiert nicht (mehr)"
    assert result.outcomes[-1].message == "Kein Kontakt"
    assert f"für {N - 100} von {N + 2} Kontakten gesetzt, 2 fehlgeschlagen" in result.message
    assert progress[0] == (0, N) and progress[-1] == (N, N) and len(progress) >= 3
    assert k.runtime.outbox.pending_count(alice.id) == N
    assert subscriptions.subscribers(k.host.settings, refs[-1].id) == (alice.id,)
    assert elapsed < 30, elapsed
    # The host's saves went on meanwhile; none waited for the whole action.
    assert latencies and max(latencies) < elapsed / 2, (max(latencies), elapsed)

    # Removing again reports the same way.
    removed = k.host.press(k.admin, REMOVE_SYNC, refs[:10] + [refs[0]], {"users": [alice.id, bob.id]})
    assert [o.status for o in removed.outcomes] == ["done"] * 10
    assert subscriptions.subscribers(k.host.settings, refs[0].id) == ()


def test_bulk_rights_users_may_only_change_their_own_sync(kanzlei):
    k = kanzlei
    alice, bob, _ = k.lawyers
    refs = [c.ref for c in k.firm.contacts[:3]]
    assert k.host.press(alice, SET_SYNC, refs, {"users": [alice.id]}).ok
    refused = k.host.press(alice, SET_SYNC, refs, {"users": [bob.id]})
    assert not refused.ok and "nur für sich selbst" in refused.message
    assert all(bob.id not in subscriptions.subscribers(k.host.settings, r.id) for r in refs)
    no_account = next(u for u in k.firm.users if u.id not in {x.id for x in k.lawyers})
    refused = k.host.press(k.admin, SET_SYNC, refs, {"users": [no_account.id]})
    assert not refused.ok and "ohne aktives Exchange-Konto" in refused.message
