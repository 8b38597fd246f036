"""Plugin manager: hookspecs, keyword calls, licence default, manifest checks, enable/disable."""

from __future__ import annotations

import inspect
import sys
import tomllib
from pathlib import Path

import pluggy
import pytest

from tsl_hostapi import HOST_API_VERSION, PROJECT, hookimpl, hookspec, hookspecs
from tsl_hostapi.host import (
    ENTRY_POINT_GROUP,
    NO_LICENCE_REASON,
    PluginLoadError,
    check_licence,
    disable_plugin,
    enable_plugin,
    get_plugin_manager,
    register_plugin,
    start_plugins,
)
from tsl_hostapi.manifest import ManifestError, load_manifest, version_newer
from tsl_hostapi.types import Contact, LicenceDecision, RecordRef, SettingsContext, User

ROOT = Path(__file__).resolve().parents[2]
ALL_HOOKS = {
    "tsl_startup": ("host",),
    "tsl_shutdown": ("host",),
    "tsl_licence_check": ("host", "plugin_id", "licence"),
    "tsl_settings_tabs": ("host", "user", "scope"),
    "tsl_settings_load": ("host", "user", "plugin_id", "tab_id", "context"),
    "tsl_settings_save": ("host", "user", "plugin_id", "tab_id", "context", "values"),
    "tsl_context_menu_actions": ("host", "user", "view", "selection"),
    "tsl_run_action": ("host", "user", "plugin_id", "action_id", "selection", "values"),
    "tsl_record_saved": ("host", "event"),
    "tsl_record_deleted": ("host", "event"),
}
ADMIN = User("8", "Peter Schulze", is_admin=True)


# --------------------------------------------------------------------------- the spec itself


def test_one_name_for_project_markers_and_group():
    assert PROJECT == "tsl" == ENTRY_POINT_GROUP
    assert hookspec.project_name == hookimpl.project_name == PROJECT
    with open(ROOT / "pyproject.toml", "rb") as fh:
        assert PROJECT in tomllib.load(fh)["project"]["entry-points"]


def test_every_hook_is_specified_with_its_arguments(pm):
    for name, args in ALL_HOOKS.items():
        caller = getattr(pm.hook, name)
        assert caller.spec is not None, name
        assert caller.spec.argnames == args, name
        doc = inspect.getdoc(getattr(hookspecs, name))
        assert doc and len(doc) > 80, f"{name} needs a docstring saying who calls it and what to return"
    specified = {n for n in dir(hookspecs) if n.startswith("tsl_")}
    assert specified == set(ALL_HOOKS)


def test_hook_kinds(pm):
    opts = {name: getattr(pm.hook, name).spec.opts for name in ALL_HOOKS}
    assert opts["tsl_startup"]["historic"] is True
    firstresult = {n for n, o in opts.items() if o.get("firstresult")}
    assert firstresult == {"tsl_licence_check", "tsl_settings_load", "tsl_settings_save", "tsl_run_action"}
    assert not any(o.get("historic") for n, o in opts.items() if n != "tsl_startup")


def test_manifest_of_the_plugin_names_the_same_hooks():
    manifest = load_manifest(ROOT / "manifest.toml")
    assert set(manifest.hooks) <= set(ALL_HOOKS)
    assert not version_newer(manifest.min_host_api, HOST_API_VERSION)


def test_hooks_take_keyword_arguments_only(pm):
    with pytest.raises(TypeError):
        pm.hook.tsl_record_saved(None, None)


def test_reference_host_calls_every_hook_with_exactly_its_keyword_arguments(host, plug):
    """Watch every hook call the host makes through a whole session."""
    seen: list[tuple[str, dict]] = []

    def before(hook_name, impls, kwargs):
        seen.append((hook_name, dict(kwargs)))

    host.pm.add_hookcall_monitoring(before, lambda *a: None)
    plugin = plug.Recorder()
    register_plugin(host.pm, plugin, "testplug")
    host.install_licence("testplug", plug.VALID)
    host.save_user(ADMIN)
    host.startup()
    c = Contact("1", surname="Jäger")
    host.save(c, user=ADMIN)
    host.delete(c.ref, user=ADMIN)
    ctx = SettingsContext("user", "8")
    host.open_tab(ADMIN, "user", "testplug.user", ctx)
    host.save_tab(ADMIN, "user", "testplug.user", ctx, {"url": "https://mail.example.de/EWS/Exchange.asmx"})
    host.menu(ADMIN, "contacts", (c.ref,))
    host.press(ADMIN, "testplug.mark", (c.ref,), {})
    host.interfaces_entries()
    host.disable("testplug")
    host.shutdown()
    called = {name for name, _ in seen}
    assert called == set(ALL_HOOKS)
    for name, kwargs in seen:
        assert tuple(sorted(kwargs)) == tuple(sorted(ALL_HOOKS[name])), name


# --------------------------------------------------------------------------- licence


def test_unclaimed_licence_check_fails_closed(host, pm):
    decision = pm.hook.tsl_licence_check(host=host, plugin_id="nobody", licence=None)
    assert decision == LicenceDecision(allowed=False, reason=NO_LICENCE_REASON)


def test_plugin_answers_for_its_own_id_only(host, pm, plug):
    register_plugin(pm, plug.Recorder("testplug"), "testplug")
    host.install_licence("testplug", plug.VALID)
    assert check_licence(pm, "testplug", host).allowed
    assert not check_licence(pm, "other", host).allowed
    host.install_licence("testplug", "abgelaufen")
    assert check_licence(pm, "testplug", host).reason == "Lizenz ungültig oder abgelaufen."


def test_a_raising_licence_check_denies(host, pm):
    class Broken:
        @hookimpl
        def tsl_licence_check(self, plugin_id):
            raise RuntimeError("kaputt")

    register_plugin(pm, Broken(), "broken")
    decision = check_licence(pm, "broken", host)
    assert not decision.allowed and "kaputt" in decision.reason


# --------------------------------------------------------------------------- enable / disable at run time


def test_enable_disable_at_run_time_with_historic_startup_replay(host, pm, plug):
    first = plug.Recorder("first")
    register_plugin(pm, first, "first")
    late = plug.Recorder("late")
    pm.known_plugins["late"] = late  # installed but disabled: known, not registered
    pm.set_blocked("late")
    host.install_licence("late", plug.VALID)

    host.startup()
    assert first.names() == ["tsl_startup"]
    assert late.calls == []

    decision = enable_plugin(pm, "late", host)
    assert decision.allowed and decision.seats == 5
    assert late.calls == [("tsl_startup", {"host": host})]  # replayed, with this host
    assert first.names() == ["tsl_startup"]  # not started twice

    host.save(Contact("7", surname="Groß"))
    assert late.names()[-1] == "tsl_record_saved"

    disable_plugin(pm, "late", host)
    assert late.names()[-1] == "tsl_shutdown"
    assert "tsl_shutdown" not in first.names()  # only the disabled plugin was shut down
    assert pm.is_blocked("late") and pm.get_plugin("late") is None
    n = len(late.calls)
    host.save(Contact("8", surname="Weiß"))
    assert len(late.calls) == n  # unregistered: no more events
    assert first.names()[-1] == "tsl_record_saved"

    # enable again: startup replays once more
    enable_plugin(pm, "late", host)
    assert late.names()[-1] == "tsl_startup"
    assert late.names().count("tsl_startup") == 2


def test_enabling_without_licence_is_refused(host, pm, plug):
    plugin = plug.Recorder("paid")
    pm.known_plugins["paid"] = plugin
    pm.set_blocked("paid")
    host.startup()
    decision = enable_plugin(pm, "paid", host)
    assert not decision.allowed
    assert decision.reason == "Lizenz ungültig oder abgelaufen."
    assert pm.is_blocked("paid") and plugin.calls == []


def test_enable_before_host_start_starts_with_the_host(host, pm, plug):
    plugin = plug.Recorder("early")
    pm.known_plugins["early"] = plugin
    pm.set_blocked("early")
    host.install_licence("early", plug.VALID)
    assert enable_plugin(pm, "early", host).allowed
    assert plugin.calls == []
    host.startup()
    host.startup()  # a second start must not replay twice
    assert plugin.names() == ["tsl_startup"]


def test_startup_that_raises_on_enable_leaves_plugin_blocked(host, pm, plug):
    class FailsToStart(plug.Recorder):
        @hookimpl
        def tsl_startup(self, host):
            raise RuntimeError("Datenbank gesperrt")

    plugin = FailsToStart("fragile")
    pm.known_plugins["fragile"] = plugin
    pm.set_blocked("fragile")
    host.install_licence("fragile", plug.VALID)
    host.startup()
    with pytest.raises(PluginLoadError, match="Datenbank gesperrt"):
        enable_plugin(pm, "fragile", host)
    assert pm.get_plugin("fragile") is None and pm.is_blocked("fragile")
    assert any(e.plugin_id == "fragile" for e in pm.load_errors)


def test_disable_survives_a_raising_shutdown(host, pm, plug):
    class FailsToStop(plug.Recorder):
        @hookimpl
        def tsl_shutdown(self, host):
            raise RuntimeError("hängt")

    register_plugin(pm, FailsToStop("stuck"), "stuck")
    host.startup()
    disable_plugin(pm, "stuck", host)
    assert pm.is_blocked("stuck")


def test_enable_with_another_host_is_refused(host, pm, tmp_path):
    from tsl_hostapi.reference import ReferenceHost

    start_plugins(pm, host)
    other = ReferenceHost(tmp_path / "other", pm=pm)
    try:
        with pytest.raises(RuntimeError):
            enable_plugin(pm, "x", other)
    finally:
        other._db.close()


def test_unknown_hook_in_plugin_is_refused(pm):
    class Typo:
        @hookimpl
        def tsl_record_save(self, event):  # missing "d"
            pass

    with pytest.raises(PluginLoadError):
        register_plugin(pm, Typo(), "typo")
    assert pm.get_plugin("typo") is None


# --------------------------------------------------------------------------- entry points and manifests

PLUGIN_CODE = """
from tsl_hostapi import hookimpl
from tsl_hostapi.types import LicenceDecision

STARTED = []

@hookimpl
def tsl_startup(host):
    STARTED.append(host)

@hookimpl
def tsl_licence_check(plugin_id, licence):
    if plugin_id == "{pid}":
        return LicenceDecision(allowed=True)
"""


def test_newer_min_host_api_is_refused_without_import(make_dist):
    pkg = make_dist(
        "futureplug", min_host_api="99.0", code="raise RuntimeError('darf nicht importiert werden')"
    )
    pm = get_plugin_manager(disabled=["exchange_sync"])
    assert pm.get_plugin("futureplug") is None
    assert pkg not in sys.modules
    (error,) = [e for e in pm.load_errors if e.plugin_id == "futureplug"]
    assert "99.0" in error.message and HOST_API_VERSION in error.message
    assert "benötigt die Host-Schnittstelle" in error.message  # German for the administrator
    assert "needs host API" in error.message  # English for the log


def test_refused_plugin_is_shown_greyed_out_and_cannot_be_enabled(make_dist, tmp_path):
    from tsl_hostapi.reference import ReferenceHost

    pkg = make_dist(
        "futureplug", min_host_api="99.0", code="raise RuntimeError('darf nicht importiert werden')"
    )
    pm = get_plugin_manager(disabled=["exchange_sync"])
    with ReferenceHost(tmp_path / "h", pm=pm) as h:
        (entry,) = [e for e in h.interfaces_entries() if e.plugin_id == "futureplug"]
        assert entry.greyed_out and not entry.enabled
        assert entry.name == "Testmodul futureplug"
        assert "99.0" in entry.reason
        with pytest.raises(PluginLoadError, match="99.0"):
            h.enable("futureplug")
    assert pkg not in sys.modules


def test_compatible_plugin_loads_from_entry_point(make_dist, host):
    pkg = make_dist("okplug", min_host_api=HOST_API_VERSION, code=PLUGIN_CODE.replace("{pid}", "okplug"))
    pm = get_plugin_manager(disabled=["exchange_sync"])
    assert pm.get_plugin("okplug") is sys.modules[pkg]
    assert pm.manifests["okplug"].display_name == "Testmodul okplug"
    assert not [e for e in pm.load_errors if e.plugin_id == "okplug"]


def test_disabled_plugin_is_not_imported_until_enabled(make_dist, tmp_path):
    from tsl_hostapi.reference import ReferenceHost

    pkg = make_dist("lateplug", code=PLUGIN_CODE.replace("{pid}", "lateplug"))
    pm = get_plugin_manager(disabled=["exchange_sync", "lateplug"])
    assert pkg not in sys.modules
    assert pm.manifests["lateplug"].id == "lateplug"  # read without importing
    with ReferenceHost(tmp_path / "h", pm=pm) as h:
        h.startup()
        assert h.enable("lateplug").allowed
        assert sys.modules[pkg].STARTED == [h]
        assert [e.enabled for e in h.interfaces_entries() if e.plugin_id == "lateplug"] == [True]
        h.disable("lateplug")
        assert pm.is_blocked("lateplug")


def test_missing_manifest_or_wrong_id_is_refused(make_dist, site_dir):
    make_dist("noman", code="raise RuntimeError('nein')")
    (site_dir / "fake_noman_pkg" / "manifest.toml").unlink()
    make_dist(
        "wrongid",
        code="raise RuntimeError('nein')",
        manifest='id = "other"\nname = "X"\nversion = "1"\nmin_host_api = "1.0"\n',
    )
    make_dist("badver", code="raise RuntimeError('nein')", min_host_api="eins")
    pm = get_plugin_manager(disabled=["exchange_sync"])
    errors = {e.plugin_id: e.message for e in pm.load_errors}
    assert "manifest.toml" in errors["noman"]
    assert "'other'" in errors["wrongid"]
    assert "eins" in errors["badver"]
    assert all(pm.get_plugin(p) is None for p in ("noman", "wrongid", "badver"))


def test_version_comparison():
    assert version_newer("99.0", "1.0")
    assert version_newer("1.1", "1.0")
    assert version_newer("1.10", "1.9")
    assert not version_newer("1", "1.0")
    assert not version_newer("1.0", "1.0")
    with pytest.raises(ManifestError):
        version_newer("1.x", "1.0")


def test_plugin_manager_is_a_pluggy_manager():
    assert isinstance(get_plugin_manager(load_entrypoints=False), pluggy.PluginManager)


def test_selection_and_context_types_reach_the_plugin(host, plug):
    plugin = plug.Recorder()
    register_plugin(host.pm, plugin, "testplug")
    refs = (RecordRef("contact", "1"), RecordRef("contact", "2"))
    result = host.press(ADMIN, "testplug.mark", refs, {"a": 1})
    assert result.ok and result.message == "2 markiert"
    (call,) = [kw for name, kw in plugin.calls if name == "tsl_run_action"]
    assert call["selection"] == refs and isinstance(call["selection"], tuple)
