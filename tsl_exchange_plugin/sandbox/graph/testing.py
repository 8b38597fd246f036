"""Fixtures and helpers for tests against the Graph sandbox (it serves the EWS sandbox's mailboxes).

``graph_sandbox`` starts a Graph sandbox over the ``sandbox`` fixture's store, registers the
firm's app (tenant ``TENANT``, client ``CLIENT_ID``, secret ``CLIENT_SECRET``) and makes the
Graph backend trust its certificate. At the end, any contract violation or internal error fails
the test.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from ...backends.base import MailboxAccount
from .server import GraphApp, GraphSandbox

TENANT = "5f1c2b7e-0d4a-4c7b-9a51-3e2f6d8c1a90"
CLIENT_ID = "a3d9e6b2-71c4-4f0e-8b2a-6c5d4e3f2a10"
CLIENT_SECRET = "sbx~Geheim.0123456789abcdef"


def graph_account(gs: GraphSandbox, email: str = "alice@kanzlei.test", **kw: Any) -> MailboxAccount:
    values: dict[str, Any] = dict(
        mailbox=email.split("@")[0],
        email=email,
        ews_url="",
        username=email,
        password="",
        backend="graph",
        tenant_id=TENANT,
        client_id=CLIENT_ID,
        client_secret=CLIENT_SECRET,
        graph_url=gs.graph_url,
        authority_host=gs.url,
        timeout=5.0,
    )
    values.update(kw)
    return MailboxAccount(**values)


def start_graph(engine: Any, **kw: Any) -> GraphSandbox:
    gs = GraphSandbox(engine, **kw).start()
    gs.add_app(GraphApp(CLIENT_ID, TENANT, secret=CLIENT_SECRET))
    return gs


def finish(gs: GraphSandbox) -> None:
    violations, errors = list(gs.violations), list(gs.internal_errors)
    gs.stop()
    assert not errors, "Graph sandbox internal errors:\n" + "\n".join(errors)
    assert not violations, "Graph contract violations:\n" + "\n".join(violations[:20])


@pytest.fixture
def graph_sandbox(sandbox: Any, monkeypatch: pytest.MonkeyPatch) -> Iterator[GraphSandbox]:
    from ...backends.graph.backend import CA_FILE_ENV

    gs = start_graph(sandbox.engine)
    monkeypatch.setenv(CA_FILE_ENV, gs.cert_pem_path or "")
    try:
        yield gs
    finally:
        finish(gs)
