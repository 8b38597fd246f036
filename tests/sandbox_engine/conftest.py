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


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    from tsl_exchange_plugin.sandbox.server import SandboxServer

    srv = SandboxServer(tmp_path_factory.mktemp("srv"), mailboxes={ALICE: PASSWORD}, ntlm=False).start()
    yield srv
    srv.stop()
    assert srv.engine.violations == 0, srv.engine.violation_details()


@pytest.fixture(scope="module")
def account(server):
    from exchangelib import (
        BASIC,
        DELEGATE,
        Account,
        Build,
        Configuration,
        Credentials,
        EWSTimeZone,
        Version,
    )
    from exchangelib.protocol import close_connections

    from tsl_exchange_plugin.exchange.ews import register_record_id_property

    # The plugin's own registration (process-global and idempotent, PublicStrings "tslRecordId"),
    # so these tests and the plugin's never disagree or register it twice.
    register_record_id_property()
    config = Configuration(
        service_endpoint=server.url,
        credentials=Credentials(ALICE, PASSWORD),
        auth_type=BASIC,
        version=Version(build=Build(15, 1, 2507, 6)),
    )
    acc = Account(
        ALICE,
        config=config,
        autodiscover=False,
        access_type=DELEGATE,
        default_timezone=EWSTimeZone("Europe/Berlin"),
    )
    yield acc
    close_connections()
