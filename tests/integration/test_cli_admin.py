"""``tsl-exchange`` as an administrator meets it: German throughout, every option explained and
range-checked, ``-v`` anywhere, ``--data`` the same for every command, commands that say why their
work will not happen, licences installed and shown, development keys only behind a visible switch."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

import tsl_exchange_plugin
from tsl_exchange_plugin import PLUGIN_ID, licence
from tsl_exchange_plugin.cli import commands as cli
from tsl_exchange_plugin.cli.args import options_without_help
from tsl_exchange_plugin.cli.demo import run_demo
from tsl_exchange_plugin.core.firm import FIRM_KEY
from tsl_hostapi.reference import ReferenceHost


def _subcommands(parser) -> dict:
    import argparse

    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    return {}


def _call(capsys, *argv: str) -> tuple[int, str, str]:
    try:
        code = cli.main(list(argv))
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 2)
    out, err = capsys.readouterr()
    return code, out, err


def test_every_option_has_help_text():
    assert options_without_help(cli.build_parser()) == []


@pytest.mark.parametrize("command", [None, *sorted(_subcommands(cli.build_parser()))])
def test_help_is_german(capsys, command):
    code, out, _ = _call(capsys, *([command] if command else []), "--help")
    assert code == 0
    assert out.startswith("Aufruf: ")
    for english in ("usage:", "options:", "positional arguments", "show this help"):
        assert english not in out


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (("demo", "--contacts", "-5"), "--contacts: -5 ist nicht erlaubt"),
        (("sandbox", "--port", "99999", "--data", "x"), "--port: 99999 ist nicht erlaubt"),
        (("worker", "--threads", "0"), "--threads: 0 ist nicht erlaubt"),
        (("worker", "--lease", "abc"), "„abc“ ist keine Zahl"),
        (("status",), "diese Angaben fehlen: --data"),
        (("status", "--data", "x", "--gibtsnicht"), "unbekannte Angaben: --gibtsnicht"),
        (("config", "--data", "x", "--worker", "irgendwo"), "ungültige Auswahl"),
        ((), "diese Angaben fehlen"),
    ],
)
def test_wrong_arguments_get_a_german_sentence_not_a_traceback(capsys, argv, expected):
    code, _, err = _call(capsys, *argv)
    assert code == 2
    assert expected in err and "Fehler:" in err
    assert "Traceback" not in err and "error:" not in err and "usage:" not in err


def test_verbose_works_after_the_subcommand(capsys, tmp_path):
    parser = cli.build_parser()
    assert parser.parse_args(["status", "--data", "x", "-v"]).verbose is True
    assert parser.parse_args(["-v", "status", "--data", "x"]).verbose is True
    assert parser.parse_args(["status", "--data", "x"]).verbose is False
    code, _, err = _call(capsys, "status", "--data", str(tmp_path), "-v")
    assert code == 1 and "Kein timeSensor-Datenverzeichnis" in err


@pytest.fixture
def demo_dir(tmp_path_factory, monkeypatch) -> Path:
    for name in (licence.DEV_KEYS_ENV, licence.TRUSTED_KEYS_ENV):
        monkeypatch.delenv(name, raising=False)
    root = tmp_path_factory.mktemp("demo")
    assert run_demo(data=str(root), contacts=10) == 0
    return root


def test_the_demo_directory_works_for_every_later_command(capsys, demo_dir):
    capsys.readouterr()
    code, out, err = _call(capsys, "status", "--data", str(demo_dir))
    assert code == 0, err
    assert "Die Lizenz stammt nicht vom Hersteller" not in out + err  # the demo's licence is honoured ...
    assert "Entwicklungsschlüssel" in err  # ... and said to be a development one
    assert "Entwicklungslizenz" in out.splitlines()[0]
    code, out, _ = _call(capsys, "licence", "show", "--data", str(demo_dir))
    assert code == 0 and "Entwicklungslizenz" in out and "gültig" in out
    code, out, err = _call(capsys, "resync", "Dr. Thomas Becker", "--data", str(demo_dir), "--timeout", "60")
    assert code == 0, err
    assert "Übertragen." in out


def test_worker_in_host_mode_and_held_pushing_say_why_and_fail(capsys, demo_dir):
    code, _, err = _call(capsys, "worker", "--once", "--data", str(demo_dir), "--timeout", "5")
    assert code == 2 and "Worker-Modus ist „host“" in err and "config" in err
    code, out, _ = _call(capsys, "config", "--data", str(demo_dir), "--worker", "external")
    assert code == 0 and "Worker-Modus: external" in out
    host = ReferenceHost(demo_dir / "host")
    try:
        assert host.settings.get(PLUGIN_ID, FIRM_KEY, {})["worker"] == "external"
        host.remove_licence(PLUGIN_ID)
    finally:
        host.close()
    code, _, err = _call(capsys, "worker", "--once", "--data", str(demo_dir), "--timeout", "5")
    assert code == 1 and "Keine Lizenz" in err
    code, out, err = _call(capsys, "resync", "Dr. Julia Weiß", "--data", str(demo_dir), "--timeout", "5")
    assert code == 1 and "Keine Lizenz" in err
    assert "der Worker überträgt sie" not in out + err


def _issue(key: Ed25519PrivateKey, key_id: str, **over) -> str:
    claims = licence.LicenceClaims(
        customer=over.get("customer", "Kanzlei Muster"),
        modules=(licence.MODULE,),
        seats=over.get("seats", 5),
        expires=over.get("expires", dt.date.today() + dt.timedelta(days=365)),
    )
    return licence.sign(claims, key, key_id)


def test_a_key_named_in_the_environment_is_not_trusted_without_the_switch(monkeypatch):
    key = Ed25519PrivateKey.generate()
    monkeypatch.delenv(licence.DEV_KEYS_ENV, raising=False)
    monkeypatch.setenv(licence.TRUSTED_KEYS_ENV, f"selbst={licence.public_key_b64(key)}")
    decision, _ = licence.verify(_issue(key, "selbst"))
    assert not decision.allowed and licence.DEV_KEYS_ENV in decision.reason
    monkeypatch.setenv(licence.DEV_KEYS_ENV, "1")
    assert licence.verify(_issue(key, "selbst"))[0].allowed
    # A development key never stands in for a vendor key id.
    vendor_id = next(iter(licence.VENDOR_KEYS))
    monkeypatch.setenv(licence.TRUSTED_KEYS_ENV, f"{vendor_id}={licence.public_key_b64(key)}")
    assert not licence.verify(_issue(key, vendor_id))[0].allowed


def test_the_vendor_key_ships_as_a_public_key_only():
    import base64

    assert licence.VENDOR_KEYS
    for b64 in licence.VENDOR_KEYS.values():
        assert len(base64.b64decode(b64)) == 32  # a raw Ed25519 public key, nothing else
    import re

    # A PEM block with a body, not code that merely names the marker (e.g. a certificate form's check).
    pem_block = re.compile(r"-----BEGIN [A-Z ]*PRIVATE KEY-----\s*[A-Za-z0-9+/=\s]{40,}")
    package = Path(tsl_exchange_plugin.__file__).parent
    for path in package.rglob("*"):
        if path.is_file() and path.suffix in (".py", ".toml", ".json", ".pem", ".key"):
            assert not pem_block.search(path.read_text("utf-8", errors="replace")), path


def test_licence_install_and_show(capsys, tmp_path, monkeypatch):
    from tsl_hostapi.reference.sample_firm import generate_firm

    host = ReferenceHost(tmp_path / "host")
    host.load_firm(generate_firm(seed=3, contacts=10))
    host.close()
    key = Ed25519PrivateKey.generate()
    good = tmp_path / "lizenz.json"
    good.write_text(_issue(key, "entwicklung", seats=7), encoding="utf-8")
    forged = tmp_path / "gefaelscht.json"
    data = json.loads(good.read_text("utf-8"))
    data["seats"] = 700
    forged.write_text(json.dumps(data), encoding="utf-8")
    data_dir = str(tmp_path / "host")

    monkeypatch.delenv(licence.DEV_KEYS_ENV, raising=False)
    monkeypatch.setenv(licence.TRUSTED_KEYS_ENV, f"entwicklung={licence.public_key_b64(key)}")
    code, _, err = _call(capsys, "licence", "install", str(good), "--data", data_dir)
    assert code == 1 and "Entwicklungsmodus" in err
    code, out, _ = _call(capsys, "licence", "show", "--data", data_dir)
    assert code == 1 and "Keine Lizenz" in out

    monkeypatch.setenv(licence.DEV_KEYS_ENV, "1")
    code, out, err = _call(capsys, "licence", "install", str(good), "--data", data_dir)
    assert code == 0, err
    assert "Achtung: Entwicklungsmodus" in err  # every command warns while the switch is on
    assert "7 Exchange-Plätze" in out and "Entwicklungslizenz" in out
    code, out, err = _call(capsys, "licence", "install", str(forged), "--data", data_dir)
    assert code == 1 and "Signatur" in err
    code, out, _ = _call(capsys, "licence", "show", "--data", data_dir)
    assert code == 0 and "7 Exchange-Plätze" in out
    code, _, err = _call(capsys, "licence", "install", str(tmp_path / "fehlt.json"), "--data", data_dir)
    assert code == 2 and "Datei nicht gefunden" in err
