"""Pytest fixtures for end-to-end tests (loaded with ``-p tsl_exchange_plugin.testing``).

``kanzlei``: a law firm wired end to end: reference host, the plugin loaded through
its entry point and enabled with a licence, three lawyers with Exchange accounts on
the sandbox (``sandbox`` fixture of ``tsl_exchange_plugin.sandbox.testing``).
``licence_key``: trusts a fresh Ed25519 key and issues licences with it.
``make_kanzlei``: the same firm with its lawyers on EWS or on Microsoft Graph (``GraphKanzlei``),
over the Graph sandbox (``graph_sandbox`` of ``tsl_exchange_plugin.sandbox.graph.testing``).
"""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from tsl_exchange_plugin import PLUGIN_ID, licence
from tsl_exchange_plugin.cli.demo import sandbox_tab_values
from tsl_exchange_plugin.core.runtime import SyncRuntime
from tsl_exchange_plugin.plugin import runtime_for
from tsl_exchange_plugin.sandbox.server import SandboxServer
from tsl_exchange_plugin.sandbox.testing import SANDBOX_PASSWORDS
from tsl_hostapi.reference import ReferenceHost
from tsl_hostapi.reference.sample_firm import Firm, generate_firm
from tsl_hostapi.types import SettingsContext, User

if TYPE_CHECKING:
    from tsl_exchange_plugin.sandbox.graph import GraphSandbox

T = TypeVar("T")

USER_TAB = f"{PLUGIN_ID}.user"
INTERFACES_TAB = f"{PLUGIN_ID}.interfaces"


def wait_for(
    predicate: Callable[[], T], timeout: float = 30.0, what: str = "condition", *, step: float = 0.02
) -> T:
    """Poll ``predicate`` until it returns something truthy (returned), or fail after ``timeout``:
    tests wait for a state, never sleep for luck."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(step)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


@pytest.fixture
def licence_key(monkeypatch: pytest.MonkeyPatch) -> Callable[..., str]:
    """Trust a fresh test key; returns a function that issues licence documents with it."""
    key = Ed25519PrivateKey.generate()
    monkeypatch.setenv(licence.DEV_KEYS_ENV, "1")  # development keys count only behind this switch
    monkeypatch.setenv(licence.TRUSTED_KEYS_ENV, f"test={licence.public_key_b64(key)}")

    def issue(
        *, seats: int = 10, modules: Iterable[str] = (licence.MODULE,), expires: dt.date | None = None
    ) -> str:
        claims = licence.LicenceClaims(
            customer="Kanzlei Test",
            modules=tuple(modules),
            seats=seats,
            expires=expires or dt.date.today() + dt.timedelta(days=365),
        )
        return licence.sign(claims, key, "test")

    return issue


@dataclass
class Kanzlei:
    host: ReferenceHost
    server: SandboxServer
    firm: Firm
    admin: User
    lawyers: list[User]  # three, each with an Exchange account on the sandbox
    mailbox_of: dict[str, str]  # user id -> sandbox mailbox e-mail

    @property
    def runtime(self) -> SyncRuntime:
        runtime = runtime_for(self.host)
        assert runtime is not None, "plugin not started"
        return runtime

    def drain(self, timeout: float = 30.0) -> None:
        """Wait until the queue holds nothing pending (polling with a deadline)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.runtime.outbox.pending_count() == 0:
                return
            self.runtime.worker.wake()
            time.sleep(0.05)
        jobs = self.runtime.outbox.jobs()
        raise AssertionError(f"queue not drained after {timeout}s: {jobs[:5]}")

    def items(self, user: User, folder: str = "contacts") -> list[dict[str, Any]]:
        return self.server.engine.list_items(self.mailbox_of[user.id], folder)

    def ours(self, user: User, record_key: str, folder: str = "contacts") -> list[dict[str, Any]]:
        return [
            i
            for i in self.items(user, folder)
            if (i.get("extended_properties") or {}).get("tslRecordId") == record_key
        ]

    def ours_any(self, user: User, folder: str = "contacts") -> list[dict[str, Any]]:
        return [
            i for i in self.items(user, folder) if (i.get("extended_properties") or {}).get("tslRecordId")
        ]

    def configure(self, user: User, *, password: str | None = None, **values: Any) -> None:
        data = sandbox_tab_values(self.server.url, self.mailbox_of[user.id], password or "")
        if password is None:
            del data["password"]  # keep the stored one
        data.update(values)
        result = self.host.save_tab(self.admin, "user", USER_TAB, SettingsContext("user", user.id), data)
        assert result.ok, result


@pytest.fixture
def kanzlei(tmp_path: Path, sandbox: SandboxServer, licence_key: Callable[..., str]) -> Iterator[Kanzlei]:
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
    k = Kanzlei(host, sandbox, firm, admin, lawyers, {u.id: e for u, e in zip(lawyers, emails, strict=False)})
    # No background sweeps: a test that wants one asks for it (runtime.reconciler / the sweeper),
    # so no sweep's requests meet another test's fault plan or request counts.
    k.runtime.admin.save_firm_settings({"reconcile_auto": False, "reconcile_time": ""})
    for user in lawyers:
        k.configure(user, password=SANDBOX_PASSWORDS[k.mailbox_of[user.id]])
    # Enabling an account pushes what already concerns the user (the sample firm's
    # appointments, deadlines, reminders); start each test from a drained queue.
    k.drain()
    try:
        yield k
    finally:
        # A test may have restarted the host (k.host is then a new one): close both, so no
        # worker thread outlives its test.
        k.host.close()
        if k.host is not host:
            host.close()


class GraphKanzlei(Kanzlei):
    graph: GraphSandbox | None = None  # set by make_kanzlei
    backend_name: str = "graph"

    def configure_graph(self, user: User, **values: Any) -> None:
        """The Exchange tab for a Microsoft 365 mailbox: Host "graph" (here the sandbox's Graph URL)."""
        assert self.graph is not None, "make_kanzlei sets the Graph sandbox"
        data = {
            "enabled": True,
            "host": self.graph.graph_url,
            "email": self.mailbox_of[user.id],
            "backend": "auto",
        }
        data.update(values)
        result = self.host.save_tab(self.admin, "user", USER_TAB, SettingsContext("user", user.id), data)
        assert result.ok, result

    def configure_app(self, **values: Any) -> None:
        from tsl_exchange_plugin.sandbox.graph.testing import CLIENT_ID, CLIENT_SECRET, TENANT

        data = {"graph_tenant_id": TENANT, "graph_client_id": CLIENT_ID, "graph_secret": CLIENT_SECRET}
        data.update(values)
        result = self.host.save_tab(
            self.admin, "interfaces", INTERFACES_TAB, SettingsContext("interfaces"), data
        )
        assert result.ok, result


def make_kanzlei(
    tmp_path: Path,
    sandbox: SandboxServer,
    graph: GraphSandbox,
    licence_key: Callable[..., str],
    *,
    backend: str,
) -> GraphKanzlei:
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
    k.backend_name = backend
    # The sandbox's identity provider stands in for login.microsoftonline.com (an operator setting).
    # No background sweeps (as in the EWS fixture): their probe items would meet the tests' counts.
    k.runtime.admin.save_firm_settings(
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


def kanzlei_on(
    backend: str, tmp_path: Path, sandbox: SandboxServer, graph: GraphSandbox, licence_key: Callable[..., str]
) -> GraphKanzlei:
    """The firm with its lawyers on ``backend`` ("ews" or "graph"), for suites that run their
    end-to-end scenarios against both: on Graph, a test's change to a lawyer's Exchange tab
    (``configure``) keeps the mailbox on Microsoft 365. The caller closes ``k.host``."""
    k = make_kanzlei(tmp_path, sandbox, graph, licence_key, backend=backend)
    if backend == "graph":
        k.configure = lambda user, password=None, **values: k.configure_graph(user, **values)  # type: ignore[method-assign]  # the Graph variant of the same step
    return k
