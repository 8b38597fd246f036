"""``tsl-exchange sandbox --serve both``: EWS and Graph over one store; the app secret is never printed."""

from __future__ import annotations

import argparse
import io
import threading

from tsl_exchange_plugin.backends.base import Written
from tsl_exchange_plugin.backends.graph.backend import GraphBackend
from tsl_exchange_plugin.cli import sandbox as cli
from tsl_exchange_plugin.mapping.items import ContactItem
from tsl_exchange_plugin.sandbox.graph.testing import CLIENT_ID, CLIENT_SECRET, TENANT, graph_account
from tsl_exchange_plugin.testing import wait_for


def test_both_protocols_over_one_store(tmp_path):
    parser = argparse.ArgumentParser()
    cli.add_arguments(parser)
    args = parser.parse_args(
        ["--port", "0", "--graph-port", "0", "--data", str(tmp_path), "--mailbox", "alice@kanzlei.test:pw-1"]
        + ["--serve", "both", "--graph-app", f"{TENANT}:{CLIENT_ID}:{CLIENT_SECRET}"]
    )
    out, stop, codes = io.StringIO(), threading.Event(), []
    thread = threading.Thread(target=lambda: codes.append(cli.run(args, out=out, stop=stop)))
    thread.start()
    try:
        wait_for(lambda: "Beenden" in out.getvalue(), what="the sandbox to start")
        lines = out.getvalue().splitlines()
        graph_url = next(ln.split(": ", 1)[1] for ln in lines if ln.startswith("Graph-Sandbox läuft"))
        authority = next(ln.split(": ", 1)[1] for ln in lines if ln.startswith("Anmeldedienst"))
        cert = next(ln.split(": ", 1)[1] for ln in lines if ln.startswith("Zertifikat (Graph)"))
        assert any(ln.startswith("EWS-Sandbox läuft") for ln in lines)
        backend = GraphBackend(verify=cert)
        session = backend.session(
            graph_account(type("GS", (), {"graph_url": graph_url, "url": authority})(), "alice@kanzlei.test")
        )
        (w,) = session.create([ContactItem("contact:cli", display_name="Über CLI", file_as="CLI")])
        assert isinstance(w, Written)
        assert list(session.find_all_ours("contact")) == ["contact:cli"]
        backend.close()
    finally:
        stop.set()
        thread.join(10)
    assert codes == [0]
    assert CLIENT_SECRET not in out.getvalue()
