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

from tsl_exchange_plugin.cli import sandbox as cli


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
            "tsl_exchange_plugin.cli.sandbox",
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


def _run_in_thread(tmp_path, *extra):
    import io
    import threading

    parser = argparse.ArgumentParser()
    cli.add_arguments(parser)
    args = parser.parse_args(
        ["--port", "0", "--data", str(tmp_path), "--mailbox", "a@kanzlei.test:pw-1", *extra]
    )
    out, stop, codes = io.StringIO(), threading.Event(), []
    thread = threading.Thread(target=lambda: codes.append(cli.run(args, out=out, stop=stop)))
    thread.start()
    return out, stop, thread, codes


def test_delay_ms_arms_a_delay_for_every_request(tmp_path):
    import json
    import urllib.request

    out, stop, thread, codes = _run_in_thread(tmp_path, "--no-validate", "--delay-ms", "250")
    try:
        deadline = time.monotonic() + 20
        while "Beenden" not in out.getvalue() and time.monotonic() < deadline and thread.is_alive():
            time.sleep(0.02)
        text = out.getvalue()
        assert "Verzögerung je Anfrage: 250 ms" in text
        base = next(ln.split(": ", 1)[1].strip() for ln in text.splitlines() if ln.startswith("Inspektion"))
        with urllib.request.urlopen(base) as resp:
            assert json.load(resp)["faults_armed"] == 1
        port = int(base.split(":")[2].split("/")[0])
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        auth = base64.b64encode(b"a@kanzlei.test:pw-1").decode()
        started = time.monotonic()
        headers = {"Authorization": f"Basic {auth}", "Content-Type": "text/xml; charset=utf-8"}
        conn.request("POST", "/EWS/Exchange.asmx", body=b"<x/>", headers=headers)
        conn.getresponse().read()
        assert time.monotonic() - started >= 0.25  # a floor: the server slept before answering
        conn.close()
    finally:
        stop.set()
        thread.join(10)
    assert codes == [0]


def test_negative_delay_is_refused(tmp_path, capsys):
    parser = argparse.ArgumentParser()
    cli.add_arguments(parser)
    with pytest.raises(SystemExit) as exc:  # refused while parsing, with the allowed range
        parser.parse_args(["--port", "0", "--data", str(tmp_path), "--delay-ms", "-5"])
    assert exc.value.code == 2
    assert "--delay-ms" in capsys.readouterr().err
