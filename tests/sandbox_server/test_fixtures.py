"""The public fixtures of ``sandbox.testing`` end to end: items written by exchangelib show in the inspection API."""

from __future__ import annotations

import json
import urllib.request

from exchangelib import Contact

from tsl_exchange_plugin.sandbox.testing import SANDBOX_PASSWORDS, exchangelib_account


def _api(server, path: str):
    base = server.url.split("/EWS/")[0].replace("https://", "http://")
    if server.cert_pem_path:
        import ssl

        ctx = ssl.create_default_context(cafile=server.cert_pem_path)
        with urllib.request.urlopen(server.url.split("/EWS/")[0] + path, context=ctx, timeout=10) as r:
            return json.loads(r.read())
    with urllib.request.urlopen(base + path, timeout=10) as r:
        return json.loads(r.read())


def test_sandbox_fixture_bulk_create_is_visible(sandbox):
    assert sorted(sandbox.credentials.emails()) == sorted(SANDBOX_PASSWORDS)
    acc = exchangelib_account(sandbox, "alice@kanzlei.test")
    contacts = [
        Contact(folder=acc.contacts, given_name="Max", surname=f"Mustermann{i}", display_name=f"Max M{i}")
        for i in range(5)
    ]
    results = acc.bulk_create(folder=acc.contacts, items=contacts, chunk_size=2)
    assert len(results) == 5 and not [r for r in results if isinstance(r, Exception)]
    items = _api(sandbox, "/sandbox/api/mailboxes/alice@kanzlei.test/items?folder=contacts")
    assert len(items) == 5
    assert _api(sandbox, "/sandbox/api/mailboxes/bob@kanzlei.test/items?folder=contacts") == []
    stats = _api(sandbox, "/sandbox/api/stats")
    assert stats["per_mailbox"]["alice@kanzlei.test"]["CreateItem"] == 3
    assert stats["violations"] == 0


def test_sandbox_tls_fixture_ntlm_round_trip(sandbox_tls):
    acc = exchangelib_account(sandbox_tls, "carol@kanzlei.test", auth="ntlm", username="KANZLEI\\carol")
    c = Contact(
        folder=acc.contacts, given_name="Erika", surname="Musterfrau", display_name="Erika Musterfrau"
    )
    c.save()
    fetched = acc.contacts.get(id=c.id)
    assert fetched.surname == "Musterfrau"
    items = _api(sandbox_tls, "/sandbox/api/mailboxes/carol@kanzlei.test/items?folder=contacts")
    assert len(items) == 1
