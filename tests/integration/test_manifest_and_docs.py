"""manifest.toml, pyproject.toml, the registered hook implementations and the README agree."""

from __future__ import annotations

import inspect
import re
import tomllib
from importlib import metadata
from pathlib import Path

import tsl_exchange_plugin
from tsl_exchange_plugin import PLUGIN_ID
from tsl_exchange_plugin import plugin as plugin_module
from tsl_exchange_plugin.ui import actions, settings
from tsl_hostapi import HOST_API_VERSION, PROJECT, hookspecs
from tsl_hostapi.host import get_plugin_manager

ROOT = Path(__file__).resolve().parents[2]
MANIFEST = tomllib.loads((ROOT / "manifest.toml").read_text("utf-8"))
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text("utf-8"))


def hookspec_names() -> list[str]:
    return sorted(n for n, f in vars(hookspecs).items() if n.startswith("tsl_") and callable(f))


def test_manifest_matches_pyproject_and_package():
    assert MANIFEST["id"] == PLUGIN_ID
    assert MANIFEST["version"] == PYPROJECT["project"]["version"] == tsl_exchange_plugin.__version__
    eps = PYPROJECT["project"]["entry-points"][PROJECT]
    assert eps == {PLUGIN_ID: MANIFEST["entry_point"]}
    assert MANIFEST["entry_point"] == plugin_module.__name__
    assert MANIFEST["min_host_api"] <= HOST_API_VERSION


def test_entry_point_is_installed_and_manifest_ships_in_package():
    installed = {ep.name: ep.value for ep in metadata.entry_points(group=PROJECT)}
    assert installed.get(PLUGIN_ID) == MANIFEST["entry_point"]
    # The wheel carries it (copied in by setup.py's build step); tests/integration/test_wheel.py
    # builds and installs the wheel and compares the installed copy with this one.
    assert "manifest.toml" in (ROOT / "setup.py").read_text("utf-8")


def test_manifest_hooks_are_exactly_the_registered_implementations():
    pm = get_plugin_manager(load_entrypoints=False)
    pm.register(plugin_module, name=PLUGIN_ID)
    registered = sorted(
        name
        for name in hookspec_names()
        if any(i.plugin_name == PLUGIN_ID for i in getattr(pm.hook, name).get_hookimpls())
    )
    assert sorted(MANIFEST["hooks"]) == registered
    # The plugin implements every hook the host offers.
    assert registered == hookspec_names()


def test_manifest_tabs_and_actions_match_the_code():
    from tsl_hostapi.types import User

    admin = User("a", "Admin", is_admin=True)
    declared_tabs = {(t["scope"], t["tab_id"], t["title"]) for t in MANIFEST["settings_tabs"]}
    built = {
        (t.scope, t.tab_id, t.title)
        for scope in ("interfaces", "user", "contact")
        for t in settings.tabs(None, admin, scope)
    }
    assert declared_tabs == built
    declared_actions = {(a["action_id"], a["label"], a["view"]) for a in MANIFEST["menu_actions"]}
    menu = {(m.action_id, m.label, m.view) for m in actions.menu(None, admin, "contacts", ())}
    assert declared_actions == menu


def test_every_hookspec_is_documented_in_readme_with_signature():
    readme = (ROOT / "README.md").read_text("utf-8")
    for name in hookspec_names():
        spec = getattr(hookspecs, name)
        params = ", ".join(inspect.signature(spec).parameters)
        assert re.search(rf"`{name}\({re.escape(params)}\)`", readme), f"{name}({params}) missing in README"


def test_every_hookspec_has_a_docstring_saying_who_when_and_what():
    for name in hookspec_names():
        doc = inspect.getdoc(getattr(hookspecs, name)) or ""
        assert len(doc) > 80, name


def test_every_hook_has_its_own_test():
    here = Path(__file__).parent
    text = "\n".join(p.read_text("utf-8") for p in here.glob("test_hook_*.py"))
    for name in hookspec_names():
        assert f"def test_{name}" in text, f"no test for {name}"
