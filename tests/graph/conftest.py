"""Fixtures for the Graph backend: the Graph sandbox over the EWS sandbox's mailboxes."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tsl_exchange_plugin.backends.graph.backend import GraphBackend, GraphSession

# pytest refuses ``pytest_plugins`` in a non-root conftest; importing the fixtures is the equivalent.
from tsl_exchange_plugin.sandbox.graph.testing import graph_account, graph_sandbox  # noqa: F401
from tsl_exchange_plugin.sandbox.testing import sandbox  # noqa: F401
from tsl_exchange_plugin.testing import GraphKanzlei, make_kanzlei


@pytest.fixture
def gbackend(graph_sandbox) -> Iterator[GraphBackend]:  # noqa: F811
    b = GraphBackend()
    yield b
    b.close()


@pytest.fixture
def gsession(graph_sandbox, gbackend) -> GraphSession:  # noqa: F811
    return gbackend.session(graph_account(graph_sandbox))


# ----------------------------------------------------------------------------- the firm on Graph


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
