"""Fixtures for the sandbox HTTP-layer tests: ``make_server`` for sandboxes with options (tls, ntlm, basic)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from exchangelib.protocol import close_connections

from tsl_exchange_plugin.sandbox.server import SandboxServer
from tsl_exchange_plugin.sandbox.testing import (  # noqa: F401 - sandbox, sandbox_tls are fixtures
    SANDBOX_PASSWORDS,
    restore_http_adapter,
    sandbox,
    sandbox_tls,
)


@pytest.fixture
def make_server(tmp_path: Path) -> Iterator:
    """Factory for started sandboxes; all are stopped at teardown and must end without violations."""
    servers: list[SandboxServer] = []

    def factory(**kw: object) -> SandboxServer:
        srv = SandboxServer(tmp_path / f"sb{len(servers)}", mailboxes=dict(SANDBOX_PASSWORDS), **kw).start()
        servers.append(srv)
        return srv

    yield factory
    close_connections()
    restore_http_adapter()
    problems = []
    for srv in servers:
        problems += srv.internal_errors
        if srv.engine.violations:
            problems += srv.engine.violation_details()
        srv.stop()
    assert not problems, "\n".join(problems)


@pytest.fixture
def server(make_server) -> SandboxServer:
    return make_server()
