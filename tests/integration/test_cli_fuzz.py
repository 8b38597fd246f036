"""Every subcommand of ``tsl-exchange`` with generated arguments: whatever an administrator types,
no traceback and no "unexpected error" reaches them. Exit codes and German refusals are fine.

The parser is read, not listed here, so a command added later is driven too. Commands that would
run until stopped are cut short at their loop (the sandbox is stopped at once, a worker works
once, the demo's story is replaced), everything before the loop runs for real."""

from __future__ import annotations

import argparse
import io
import threading
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tsl_exchange_plugin.cli import commands as cli
from tsl_exchange_plugin.cli import sandbox as sandbox_cli
from tsl_hostapi.reference import ReferenceHost
from tsl_hostapi.reference.sample_firm import generate_firm


def _commands(parser: argparse.ArgumentParser, prefix: tuple[str, ...] = ()) -> list[tuple]:
    """(argv prefix, parser) of every leaf command."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            out = []
            for name, sub in action.choices.items():
                out += _commands(sub, (*prefix, name))
            return out
    return [(prefix, parser)]


COMMANDS = _commands(cli.build_parser())


@pytest.fixture(scope="module")
def places(tmp_path_factory) -> dict[str, list[str]]:
    base = tmp_path_factory.mktemp("fuzz")
    host = ReferenceHost(base / "firm")
    host.load_firm(generate_firm(seed=3, contacts=10))
    host.close()
    demo_like = base / "demo"
    host = ReferenceHost(demo_like / "host")
    host.load_firm(generate_firm(seed=4, contacts=10))
    host.close()
    (demo_like / "sandbox").mkdir()
    a_file = base / "datei.txt"
    a_file.write_text("kein Schlüssel, keine Lizenz", encoding="utf-8")
    return {
        "dirs": [str(base / "firm"), str(demo_like), str(base / "fehlt"), str(a_file), ""],
        "files": [str(a_file), str(base / "fehlt.json"), str(base)],
    }


def _value(data, action: argparse.Action, places: dict[str, list[str]]) -> str:
    if action.choices:
        return data.draw(st.sampled_from([*map(str, action.choices), "falsch"]))
    dest = action.dest
    if dest in ("data",):
        return data.draw(st.sampled_from(places["dirs"]))
    if dest in ("file", "key_file"):
        return data.draw(st.sampled_from(places["files"]))
    if dest in ("queue", "queue_url"):
        return data.draw(
            st.sampled_from(["postgresql://niemand@127.0.0.1:1/x", "kaputt://x", "", "sqlite://relativ"])
        )
    if dest in ("user",):
        return data.draw(
            st.sampled_from(["1", "Dr. Thomas Becker", "niemand", "", "t.becker@becker-partner.de"])
        )
    if dest in ("mailbox",):
        return data.draw(st.sampled_from(["a@b.test:Geheim1", "ohne-passwort", ":", "a@b:"]))
    if dest in ("timeout", "lease"):
        return data.draw(st.sampled_from(["0", "0,5", "1", "-1", "nan", "inf", "1e9", "x"]))
    if dest == "port":
        return data.draw(st.sampled_from(["0", "0", "-1", "65536", "99999", "x"]))
    if dest == "host":
        return data.draw(st.sampled_from(["127.0.0.1", "999.1.1.1", "nicht-da.invalid", ""]))
    return data.draw(
        st.one_of(
            st.integers(-(2**40), 2**40).map(str),
            st.sampled_from(["", "x", "ä", "-", "--", "0", "1", "3"]),
            st.text(max_size=8),
        )
    )


def _argv(data, prefix: tuple[str, ...], parser: argparse.ArgumentParser, places) -> list[str]:
    groups: list[list[str]] = []  # an option with its value stays together when shuffled
    for action in parser._actions:
        if isinstance(action, argparse._HelpAction | argparse._VersionAction):
            continue
        if not action.option_strings:  # positional
            if data.draw(st.integers(0, 9)) > 0:
                groups.append([_value(data, action, places)])
            continue
        if not (action.required or data.draw(st.booleans())):
            continue
        flag = data.draw(st.sampled_from(action.option_strings))
        groups.append([flag] if action.nargs == 0 else [flag, _value(data, action, places)])
    groups = list(data.draw(st.permutations(groups)))
    return [*prefix, *(token for group in groups for token in group)]


@pytest.fixture
def short_loops(monkeypatch):
    """Cut the commands that run until stopped short at their loop."""
    import tsl_exchange_plugin.cli.demo as demo

    monkeypatch.setattr(demo, "run_demo", lambda **kwargs: 0)
    real_sandbox = sandbox_cli.run

    def sandbox_once(args, **_):
        stop = threading.Event()
        stop.set()
        return real_sandbox(args, out=io.StringIO(), stop=stop)

    monkeypatch.setattr(sandbox_cli, "run", sandbox_once)
    real_worker = cli._run_worker

    def worker_once(args, *rest):
        return real_worker(argparse.Namespace(**{**vars(args), "once": True, "timeout": 0.0}), *rest)

    monkeypatch.setattr(cli, "_run_worker", worker_once)
    for name in ("TSL_EXCHANGE_QUEUE_URL", "TSL_EXCHANGE_KEY", "TSL_EWS_SCHEMA_DIR"):
        monkeypatch.delenv(name, raising=False)


@settings(
    max_examples=300,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(data=st.data())
def test_no_traceback_reaches_the_user(data, places, short_loops, capsys, monkeypatch, tmp_path_factory):
    prefix, parser = data.draw(st.sampled_from(COMMANDS), label="command")
    argv = _argv(data, prefix, parser, places)
    if data.draw(st.booleans()):
        argv.insert(data.draw(st.integers(0, len(argv))), "-v")
    monkeypatch.chdir(tmp_path_factory.mktemp("cwd"))
    try:
        code = cli.main(argv)
    except SystemExit as exc:
        code = exc.code
    out, err = capsys.readouterr()
    assert "Traceback" not in err + out, (argv, err)
    assert "Unerwarteter Fehler" not in err, (argv, err)
    assert code in (0, 1, 2, None), (argv, code, err)
    assert Path.cwd().exists()
