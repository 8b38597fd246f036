"""Fixtures for the SOAP engine tests: a bare engine, and a real sandbox server with exchangelib."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tsl_exchange_plugin.sandbox.engine import SandboxEngine

ALICE = "alice@example.com"
PASSWORD = "Engine-Test-1!"


@pytest.fixture
def engine(tmp_path) -> Iterator[SandboxEngine]:
    eng = SandboxEngine(tmp_path / "eng")
    eng.add_mailbox(ALICE)
    yield eng
    assert eng.violations == 0, eng.violation_details()
    eng.close()


@pytest.fixture(scope="module", params=["http-basic", "https-ntlm"])
def server(request, tmp_path_factory):
    """The client scenarios run twice: plain HTTP with Basic, and HTTPS (self-signed, trusted
    explicitly) with NTLM through pyspnego's acceptor."""
    from tsl_exchange_plugin.sandbox.server import SandboxServer

    tls = request.param == "https-ntlm"
    srv = SandboxServer(
        tmp_path_factory.mktemp("srv"), mailboxes={ALICE: PASSWORD}, tls=tls, ntlm=tls
    ).start()
    srv.client_auth = "ntlm" if tls else "basic"
    yield srv
    srv.stop()
    assert srv.engine.violations == 0, srv.engine.violation_details()


@pytest.fixture(scope="module")
def account(server):
    from exchangelib import Build, Version
    from exchangelib.protocol import close_connections

    from tsl_exchange_plugin.backends.ews.convert import register_record_id_property
    from tsl_exchange_plugin.sandbox.testing import exchangelib_account, restore_http_adapter

    # The plugin's own registration (process-global and idempotent, PublicStrings "tslRecordId"),
    # so these tests and the plugin's never disagree or register it twice.
    register_record_id_property()
    acc = exchangelib_account(
        server,
        ALICE,
        auth=server.client_auth,
        password=PASSWORD,
        version=Version(build=Build(15, 1, 2507, 6)),
    )
    yield acc
    close_connections()
    restore_http_adapter()
