"""``tsl-exchange sandbox`` as a process: prints URL and mailboxes (never a password), stops on SIGTERM."""

from __future__ import annotations

import argparse
import base64
import http.client
import signal
import subprocess
import sys
import time

import pytest

from tsl_exchange_plugin.sandbox import cli


def test_bad_mailbox_argument_is_a_clear_german_error():
    parser = argparse.ArgumentParser()
    cli.add_arguments(parser)
    with pytest.raises(SystemExit):
        parser.parse_args(["--data", "x", "--mailbox", "alice-ohne-passwort"])
    args = parser.parse_args(["--data", "x", "--mailbox", "a@b.test:pw:mit:doppelpunkt"])
    assert args.mailbox == [("a@b.test", "pw:mit:doppelpunkt")]


def test_serves_until_sigterm(tmp_path):
    secret = "Cli-Geheim-7"
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "tsl_exchange_plugin.sandbox.cli",
            "--port",
            "0",
            "--data",
            str(tmp_path),
            "--mailbox",
            f"alice@kanzlei.test:{secret}",
            "--no-validate",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        lines = []
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            line = proc.stdout.readline()
            if not line:
                break
            lines.append(line)
            if line.startswith("Beenden"):
                break
        url = next(ln.split(": ", 1)[1].strip() for ln in lines if ln.startswith("EWS-Sandbox läuft"))
        assert any("alice@kanzlei.test" in ln for ln in lines)
        port = int(url.split(":")[2].split("/")[0])
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        auth = base64.b64encode(f"alice@kanzlei.test:{secret}".encode()).decode()
        conn.request("GET", "/EWS/Exchange.asmx", headers={"Authorization": f"Basic {auth}"})
        assert conn.getresponse().status == 200
        conn.close()
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=15)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, err
    assert secret not in "".join(lines) + out + err
    assert "beendet" in out
