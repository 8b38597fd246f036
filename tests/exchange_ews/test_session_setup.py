"""Sessions of different mailboxes set themselves up side by side.

A worker process starting on many mailboxes resolves each one's folders first (GetFolder
round trips). A slow answer for one mailbox must not hold up the set-up of another: here the
answer about alice's folders is held at the sandbox (a fault gated by an event, so the test
decides when it goes on, not the clock) while bob's session resolves its folder.
"""

from __future__ import annotations

import threading

from tsl_exchange_plugin.testing import wait_for

from .conftest import mailbox_account


def test_a_slow_folder_answer_for_one_mailbox_does_not_hold_up_another(sandbox, backend):
    # alice's request waits for the hold, however long that takes
    alice = backend.session(mailbox_account(sandbox, "alice@kanzlei.test", timeout=300.0))
    bob = backend.session(mailbox_account(sandbox, "bob@kanzlei.test"))
    hold = threading.Event()
    fault = sandbox.inject("delay", operation="GetFolder", mailbox="alice@kanzlei.test", hold=hold)
    outcome: dict[str, object] = {}

    def resolve(name: str, session) -> None:
        try:
            outcome[name] = session.folder("contact")
        except Exception as exc:  # shown by the assertion below
            outcome[name] = exc

    first = threading.Thread(target=resolve, args=("alice", alice), daemon=True)
    second = threading.Thread(target=resolve, args=("bob", bob), daemon=True)
    try:
        first.start()
        wait_for(lambda: fault.fired, 30, "alice's GetFolder held at the sandbox")
        second.start()
        second.join(30)
        assert not second.is_alive(), "bob's folder waited for the answer about alice's folders"
        assert "alice" not in outcome
        assert outcome["bob"] is not None and not isinstance(outcome["bob"], Exception), outcome
    finally:
        hold.set()
        first.join(30)
        second.join(30)
        alice.close()
        bob.close()
    assert outcome["alice"] is not None and not isinstance(outcome["alice"], Exception), outcome


def test_a_new_mailbox_session_asks_the_server_once_for_its_folder(sandbox, backend):
    """Set-up per mailbox is one GetFolder: the server version is probed once per server (not
    per mailbox), and the mailbox root is not fetched just to reach the default folder."""
    emails = ["alice@kanzlei.test", "bob@kanzlei.test", "carol@kanzlei.test"]
    sessions = [backend.session(mailbox_account(sandbox, email)) for email in emails]
    sandbox.clear_requests()
    try:
        for session in sessions:
            assert session.find_all_ours("contact") == {}
    finally:
        for session in sessions:
            session.close()
    operations = [(r.mailbox, r.operation) for r in sandbox.requests()]
    assert [op for _, op in operations].count("ConvertId") == 1, operations
    for email in emails:
        setup = [op for box, op in operations if box == email and op != "ConvertId"]
        assert setup == ["GetFolder", "FindItem"], (email, operations)
