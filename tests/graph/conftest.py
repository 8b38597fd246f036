"""Fixtures for the Graph backend: the Graph sandbox over the EWS sandbox's mailboxes."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tsl_exchange_plugin.graph.backend import GraphBackend, GraphSession

# pytest refuses ``pytest_plugins`` in a non-root conftest; importing the fixtures is the equivalent.
from tsl_exchange_plugin.sandbox.graph.testing import graph_account, graph_sandbox  # noqa: F401
from tsl_exchange_plugin.sandbox.testing import sandbox  # noqa: F401


@pytest.fixture
def gbackend(graph_sandbox) -> Iterator[GraphBackend]:  # noqa: F811
    b = GraphBackend()
    yield b
    b.close()


@pytest.fixture
def gsession(graph_sandbox, gbackend) -> GraphSession:  # noqa: F811
    return gbackend.session(graph_account(graph_sandbox))


# ----------------------------------------------------------------------------- the firm on Graph

from pathlib import Path  # noqa: E402

from tsl_exchange_plugin import PLUGIN_ID  # noqa: E402
from tsl_exchange_plugin.sandbox.graph.testing import CLIENT_ID, CLIENT_SECRET, TENANT  # noqa: E402
from tsl_exchange_plugin.sandbox.testing import SANDBOX_PASSWORDS  # noqa: E402
from tsl_exchange_plugin.testing import Kanzlei  # noqa: E402
from tsl_hostapi.reference.host import ReferenceHost  # noqa: E402
from tsl_hostapi.reference.sample_firm import generate_firm  # noqa: E402
from tsl_hostapi.types import SettingsContext  # noqa: E402

USER_TAB = f"{PLUGIN_ID}.user"
INTERFACES_TAB = f"{PLUGIN_ID}.interfaces"


class GraphKanzlei(Kanzlei):
    graph: object = None

    def configure_graph(self, user, **values) -> None:
        """The Exchange tab for a Microsoft 365 mailbox: Host "graph" (here the sandbox's Graph URL)."""
        data = {
            "enabled": True,
            "host": self.graph.graph_url,
            "email": self.mailbox_of[user.id],
            "backend": "auto",
        }
        data.update(values)
        result = self.host.save_tab(self.admin, "user", USER_TAB, SettingsContext("user", user.id), data)
        assert result.ok, result

    def configure_app(self, **values) -> None:
        data = {"graph_tenant_id": TENANT, "graph_client_id": CLIENT_ID, "graph_secret": CLIENT_SECRET}
        data.update(values)
        result = self.host.save_tab(
            self.admin, "interfaces", INTERFACES_TAB, SettingsContext("interfaces"), data
        )
        assert result.ok, result


def make_kanzlei(tmp_path: Path, sandbox, graph, licence_key, *, backend: str) -> GraphKanzlei:  # noqa: F811
    firm = generate_firm(seed=7, contacts=40)
    host = ReferenceHost(tmp_path / "host")
    host.load_firm(firm)
    host.startup()
    host.install_licence(PLUGIN_ID, licence_key())
    decision = host.enable(PLUGIN_ID)
    assert decision.allowed, decision.reason
    admin = next(u for u in firm.users if u.is_admin)
    lawyers = [u for u in firm.users if u.role.startswith("Rechtsanw")][:3]
    emails = sorted(SANDBOX_PASSWORDS)
    k = GraphKanzlei(
        host, sandbox, firm, admin, lawyers, {u.id: e for u, e in zip(lawyers, emails, strict=False)}
    )
    k.graph = graph
    # The sandbox's identity provider stands in for login.microsoftonline.com (an operator setting).
    # No background sweeps (as in the EWS fixture): their probe items would meet the tests' counts.
    k.runtime.save_firm_settings(
        {"graph_authority": graph.url, "reconcile_auto": False, "reconcile_time": ""}
    )
    k.configure_app()
    for user in lawyers:
        if backend == "graph":
            k.configure_graph(user)
        else:
            k.configure(user, password=SANDBOX_PASSWORDS[k.mailbox_of[user.id]])
    k.drain()
    return k


@pytest.fixture
def gkanzlei(tmp_path, sandbox, graph_sandbox, licence_key) -> Iterator[GraphKanzlei]:  # noqa: F811
    k = make_kanzlei(tmp_path, sandbox, graph_sandbox, licence_key, backend="graph")
    try:
        yield k
    finally:
        k.host.close()


@pytest.fixture(params=["ews", "graph"])
def anykanzlei(request, tmp_path, sandbox, graph_sandbox, licence_key) -> Iterator[GraphKanzlei]:  # noqa: F811
    """The same firm with its lawyers on EWS, and again on Microsoft Graph."""
    k = make_kanzlei(tmp_path, sandbox, graph_sandbox, licence_key, backend=request.param)
    k.backend_name = request.param
    try:
        yield k
    finally:
        k.host.close()
