"""Authentication against the sandbox with unmodified exchangelib: Basic, NTLM, both probes, TLS."""

from __future__ import annotations

import pytest
from exchangelib import BASIC, NTLM
from exchangelib.errors import ErrorAccessDenied, UnauthorizedError

from tsl_exchange_plugin.sandbox.testing import exchangelib_account


def _touch(account) -> str:
    """One authenticated EWS round trip (GetFolder root); returns the folder id."""
    return account.root.id


def test_basic_with_email(server):
    acc = exchangelib_account(server, "alice@kanzlei.test", auth="basic")
    assert _touch(acc)
    assert server.engine.request_counts("alice@kanzlei.test").get("GetFolder", 0) >= 1


def test_ntlm_down_level_name(server):
    acc = exchangelib_account(server, "alice@kanzlei.test", auth="ntlm", username="KANZLEI\\alice")
    assert _touch(acc)
    assert server.stats()["http"].get("auth_challenges", 0) >= 1  # the handshake really happened


def test_ntlm_upn(server):
    acc = exchangelib_account(server, "bob@kanzlei.test", auth="ntlm", username="bob@kanzlei.test")
    assert _touch(acc)
    assert server.engine.request_counts("bob@kanzlei.test").get("GetFolder", 0) >= 1


def test_probes_without_auth_type_and_version_pick_ntlm(server):
    acc = exchangelib_account(
        server, "carol@kanzlei.test", auth=None, version=None, username="KANZLEI\\carol"
    )
    assert _touch(acc)
    assert acc.protocol.auth_type == NTLM
    assert acc.version.build.major_version == 15 and acc.version.api_version == "Exchange2016"


def test_probe_picks_basic_when_ntlm_is_off(make_server):
    srv = make_server(ntlm=False)
    acc = exchangelib_account(srv, "alice@kanzlei.test", auth=None, version=None)
    assert _touch(acc)
    assert acc.protocol.auth_type == BASIC


@pytest.mark.parametrize("auth", ["basic", "ntlm"])
def test_wrong_password_is_unauthorized(server, auth):
    acc = exchangelib_account(server, "alice@kanzlei.test", auth=auth, password="not-the-password")
    with pytest.raises(UnauthorizedError):
        _touch(acc)
    assert server.stats()["http"]["auth_failures"] >= 1
    assert server.engine.request_counts("alice@kanzlei.test") == {}


@pytest.mark.parametrize("auth", ["basic", "ntlm"])
def test_other_mailbox_credentials_are_denied(server, auth):
    bob_password = server.credentials.account("bob@kanzlei.test").password
    acc = exchangelib_account(
        server, "alice@kanzlei.test", auth=auth, username="bob@kanzlei.test", password=bob_password
    )
    with pytest.raises(ErrorAccessDenied):
        _touch(acc)
    assert server.engine.request_counts("alice@kanzlei.test") == {}
    assert server.engine.request_counts("bob@kanzlei.test") == {}


def test_password_change_ends_ntlm_connection(server):
    acc = exchangelib_account(server, "alice@kanzlei.test", auth="ntlm")
    assert _touch(acc)
    server.set_password("alice@kanzlei.test", "Neues-Passwort-9")
    with pytest.raises(UnauthorizedError):
        acc.root.refresh()


def test_https_ntlm_with_trusted_certificate(make_server):
    srv = make_server(tls=True)
    assert srv.url.startswith("https://127.0.0.1:")
    acc = exchangelib_account(srv, "alice@kanzlei.test", auth="ntlm", username="KANZLEI\\alice")
    assert _touch(acc)


@pytest.mark.filterwarnings("ignore::urllib3.exceptions.InsecureRequestWarning")
def test_https_probes_with_no_verify_adapter(make_server):
    srv = make_server(tls=True)
    acc = exchangelib_account(srv, "bob@kanzlei.test", auth=None, version=None, verify=False)
    assert _touch(acc)
    assert acc.protocol.auth_type == NTLM


def test_basic_with_down_level_name(server):
    acc = exchangelib_account(server, "bob@kanzlei.test", auth="basic", username="KANZLEI\\bob")
    assert _touch(acc)


def test_parallel_ntlm_on_two_servers_with_different_passwords(make_server):
    """NTLM_USER_FILE is process-global: each server must still check its own passwords under load."""
    import threading

    first, second = make_server(), make_server()
    second.set_password("alice@kanzlei.test", "Anderes-Passwort-5")
    accounts = [
        exchangelib_account(srv, email, auth="ntlm")
        for srv in (first, second)
        for email in ("alice@kanzlei.test", "bob@kanzlei.test")
    ]
    errors: list[BaseException] = []

    def work(acc):
        try:
            for _ in range(4):
                acc.root.refresh()
        except BaseException as exc:  # collected and re-raised in the main thread
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(a,)) for a in accounts]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert not errors, errors
    for srv in (first, second):
        assert srv.engine.request_counts("alice@kanzlei.test")["GetFolder"] == 5
    # The old password no longer opens the second server's alice.
    stale = exchangelib_account(
        second,
        "alice@kanzlei.test",
        auth="ntlm",
        password=first.credentials.account("alice@kanzlei.test").password,
    )
    with pytest.raises(UnauthorizedError):
        _touch(stale)
