"""The plugin pushes through the worker into Microsoft 365 mailboxes (Graph sandbox), end to end."""

from __future__ import annotations

import dataclasses

from tsl_exchange_plugin import PLUGIN_ID
from tsl_hostapi.types import Phone, RecordRef

SET_SYNC = f"{PLUGIN_ID}.set_sync"


def subscribe(k, contact_ids, users):
    result = k.host.press(
        k.admin, SET_SYNC, [RecordRef("contact", c) for c in contact_ids], {"users": [u.id for u in users]}
    )
    assert result.ok, result.message


def test_contacts_through_the_worker(gkanzlei):
    k = gkanzlei
    alice, bob, carol = k.lawyers
    person = next(c for c in k.firm.contacts if c.kind == "person" and c.surname)
    subscribe(k, [person.id], [alice, bob])
    k.drain()
    (item,) = k.ours(alice, person.ref.key)
    assert item["surname"] == person.surname
    assert len(k.ours(bob, person.ref.key)) == 1
    assert k.ours(carol, person.ref.key) == []
    # Only Graph wrote them: the EWS endpoint saw no write.
    assert not k.server.engine.request_counts(k.mailbox_of[alice.id]).get("CreateItem")

    k.host.save(
        dataclasses.replace(person, job_title="Notarin", phones=(Phone("mobile", "+49 170 1234567"),))
    )
    k.drain()
    (after,) = k.ours(alice, person.ref.key)
    assert after["item_id"] == item["item_id"]
    assert after["job_title"] == "Notarin"
    assert after["phone_numbers"] == {"MobilePhone": "+49 170 1234567"}

    k.host.delete(person.ref)
    k.drain()
    assert k.ours(alice, person.ref.key) == []
    assert k.ours(bob, person.ref.key) == []


def test_a_worker_without_a_host_reaches_microsoft_365_mailboxes(gkanzlei):
    """What the host publishes into the queue's store is enough for a host-less worker to push
    into a Graph mailbox: the app registration travels with its secret only as the vault token."""
    from tsl_exchange_plugin.backends.graph.backend import GraphBackend
    from tsl_exchange_plugin.backends.routing import RoutingBackend
    from tsl_exchange_plugin.core.shared_state import FIRM_ROW, StoreContext
    from tsl_exchange_plugin.sandbox.graph.testing import CLIENT_SECRET
    from tsl_exchange_plugin.worker.dispatch import make_mapper
    from tsl_exchange_plugin.worker.runner import Worker

    k = gkanzlei
    alice = k.lawyers[0]
    runtime = k.runtime
    runtime.publisher.publish(full=True)
    assert CLIENT_SECRET not in (runtime.outbox.worker_row(FIRM_ROW) or "")
    context = StoreContext(runtime.outbox, runtime.vault)
    account = context.resolve_account(alice.id)
    assert account.backend == "graph" and account.client_secret == CLIENT_SECRET
    runtime.worker.stop()  # from here on only the host-less worker pushes
    graph = GraphBackend()
    worker = Worker(
        runtime.outbox,
        RoutingBackend(graph=graph),
        context.resolve_account,
        make_mapper(context.mapping_context),
        gate=context.gate,
    )
    contact = next(c for c in k.firm.contacts if c.kind == "person" and c.surname)
    subscribe(k, [contact.id], [alice])
    assert worker.drain(timeout=30)
    assert len(k.ours(alice, contact.ref.key)) == 1
    graph.close()
