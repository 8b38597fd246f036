"""Each backend is the only importer of its client library (DESIGN: backends)."""

from __future__ import annotations

import ast
from pathlib import Path

import tsl_exchange_plugin

PACKAGE = Path(tsl_exchange_plugin.__file__).parent


def importers(module: str) -> set[str]:
    found = set()
    for path in PACKAGE.rglob("*.py"):
        rel = path.relative_to(PACKAGE).as_posix()
        if rel.startswith("sandbox/") or rel == "testing.py":
            continue  # the test servers and fixtures are not the plugin
        for node in ast.walk(ast.parse(path.read_text("utf-8"))):
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            if any(n == module or n.startswith(module + ".") for n in names):
                found.add(rel)
    return found


def test_only_the_graph_package_imports_httpx_and_msal():
    assert importers("httpx") <= {"backends/graph/backend.py"}
    assert importers("msal") <= {"backends/graph/auth.py"}


def test_only_the_ews_backend_imports_exchangelib():
    # backends/ews/series.py: the EWS backend's conversion of recurring masters;
    # backends/ews/phone.py: reads a mailbox back through an EwsSession (the demo's phone view).
    assert importers("exchangelib") == {
        f"backends/ews/{name}.py" for name in ("backend", "convert", "errors", "transport", "series", "phone")
    }
