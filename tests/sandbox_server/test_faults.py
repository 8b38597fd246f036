"""Transport faults: each produces the exchangelib exception NOTES §3 predicts, and the server keeps serving."""

from __future__ import annotations

import time

import pytest
from exchangelib import Contact
from exchangelib.errors import (
    ErrorServerBusy,
    ErrorTimeoutExpired,
    MalformedResponseError,
    TransportError,
    UnauthorizedError,
)
from exchangelib.protocol import BaseProtocol

from tsl_exchange_plugin.sandbox.testing import exchangelib_account

ALICE = "alice@kanzlei.test"


def _touch(account) -> str:
    return account.root.id


@pytest.fixture
def account(server):
    acc = exchangelib_account(server, ALICE, auth="basic")
    assert _touch(acc)  # warm: folder cached, connection open
    return acc


def _still_serves(server, account) -> None:
    before = server.engine.request_counts(ALICE).get("GetFolder", 0)
    account.root.refresh()
    assert server.engine.request_counts(ALICE).get("GetFolder", 0) == before + 1


def test_503_is_server_busy(server, account):
    server.inject("http_status", status=503, retry_after=7, operation="GetFolder")
    with pytest.raises(ErrorServerBusy):
        account.root.refresh()
    _still_serves(server, account)


def test_500_iis_page_is_server_busy(server, account):
    server.inject("http_status", status=500, mailbox=ALICE)
    with pytest.raises(ErrorServerBusy):
        account.root.refresh()
    _still_serves(server, account)


def test_429_is_malformed_response(server, account):
    fault = server.inject("http_status", status=429, retry_after=2)
    with pytest.raises(MalformedResponseError, match="429"):
        account.root.refresh()
    assert fault.fired == 1
    _still_serves(server, account)


@pytest.mark.parametrize("auth", ["basic", "ntlm"])
def test_401_is_unauthorized(server, auth):
    acc = exchangelib_account(server, ALICE, auth=auth)
    assert _touch(acc)
    server.inject("http_status", status=401)
    with pytest.raises(UnauthorizedError):
        acc.root.refresh()
    _still_serves(server, acc)


def test_fault_for_other_mailbox_does_not_fire(server, account):
    fault = server.inject("http_status", status=503, mailbox="bob@kanzlei.test")
    _still_serves(server, account)
    assert fault.fired == 0 and fault.count == 1


def test_delay_beyond_client_timeout_times_out(server, account, monkeypatch):
    monkeypatch.setattr(BaseProtocol, "TIMEOUT", 0.5)
    server.inject("delay", seconds=2.0)
    start = time.monotonic()
    with pytest.raises(ErrorTimeoutExpired):
        account.root.refresh()
    assert time.monotonic() - start < 1.9
    monkeypatch.setattr(BaseProtocol, "TIMEOUT", 10)
    _still_serves(server, account)


def test_short_delay_answers(server, account):
    server.inject("delay", seconds=0.3)
    start = time.monotonic()
    account.root.refresh()
    assert time.monotonic() - start >= 0.3


def test_drop_connection_is_timeout_expired(server, account):
    before = server.engine.request_counts(ALICE).get("GetFolder", 0)
    server.inject("drop_connection", operation="GetFolder")
    # NOTES §3: exchangelib reports a vanished connection like a timeout.
    with pytest.raises(ErrorTimeoutExpired, match="RemoteDisconnected|Connection aborted"):
        account.root.refresh()
    assert server.engine.request_counts(ALICE).get("GetFolder", 0) == before  # nothing processed
    _still_serves(server, account)


def test_commit_then_hang_commits(server, account, monkeypatch):
    monkeypatch.setattr(BaseProtocol, "TIMEOUT", 0.5)
    server.inject("commit_then_hang", operation="CreateItem", seconds=1.5)
    contact = Contact(
        folder=account.contacts, given_name="Hanna", surname="Hängend", display_name="Hanna Hängend"
    )
    with pytest.raises((ErrorTimeoutExpired, TransportError)):
        contact.save()
    monkeypatch.setattr(BaseProtocol, "TIMEOUT", 10)
    items = server.engine.list_items(ALICE, "contacts")
    assert [i for i in items if "Hängend" in str(i)], items
    # The client never learnt the id, but the contact is there for a lookup.
    assert account.contacts.filter(surname="Hängend").count() == 1
