"""Fixtures for the host side: a tiny recording plugin, a reference host, fake installed distributions."""

from __future__ import annotations

import sys
import textwrap
from pathlib import Path

import pytest

from tsl_hostapi import hookimpl
from tsl_hostapi.host import get_plugin_manager
from tsl_hostapi.reference import ReferenceHost
from tsl_hostapi.types import (
    ActionResult,
    LicenceDecision,
    MenuAction,
    SaveResult,
    SettingsButton,
    SettingsField,
    SettingsTab,
    SettingsValues,
)

VALID = "GÜLTIG bis 2099"


class Recorder:
    """A small plugin that records what the host called and answers like a real one would."""

    def __init__(self, plugin_id: str = "testplug") -> None:
        self.plugin_id = plugin_id
        self.calls: list[tuple[str, dict]] = []

    def names(self) -> list[str]:
        return [name for name, _ in self.calls]

    @hookimpl
    def tsl_startup(self, host):
        self.calls.append(("tsl_startup", {"host": host}))

    @hookimpl
    def tsl_shutdown(self, host):
        self.calls.append(("tsl_shutdown", {"host": host}))

    @hookimpl
    def tsl_licence_check(self, host, plugin_id, licence):
        if plugin_id != self.plugin_id:
            return None
        if licence is None or licence.document != VALID:
            return LicenceDecision(allowed=False, reason="Lizenz ungültig oder abgelaufen.")
        return LicenceDecision(allowed=True, seats=5)

    @hookimpl
    def tsl_settings_tabs(self, host, user, scope):
        self.calls.append(("tsl_settings_tabs", {"user": user, "scope": scope}))
        return [
            SettingsTab(
                plugin_id=self.plugin_id,
                tab_id=f"{self.plugin_id}.{scope}",
                title="Test",
                scope=scope,
                fields=(SettingsField("url", "Adresse", required=True),),
                buttons=(SettingsButton(f"{self.plugin_id}.test", "Testen"),),
            )
        ]

    @hookimpl
    def tsl_settings_load(self, host, user, plugin_id, tab_id, context):
        if plugin_id != self.plugin_id:
            return None
        return SettingsValues(
            values={"url": host.settings.get(self.plugin_id, f"url:{context.object_id}", "")}
        )

    @hookimpl
    def tsl_settings_save(self, host, user, plugin_id, tab_id, context, values):
        if plugin_id != self.plugin_id:
            return None
        if not values.get("url"):
            from tsl_hostapi.types import FieldError

            return SaveResult(ok=False, errors=(FieldError("url", "Bitte eine Adresse angeben."),))
        host.settings.set(self.plugin_id, f"url:{context.object_id}", values["url"])
        return SaveResult(ok=True)

    @hookimpl
    def tsl_context_menu_actions(self, host, user, view, selection):
        if view != "contacts":
            return None
        return [
            MenuAction(
                self.plugin_id, f"{self.plugin_id}.mark", "Markieren", ("Extras", "Auswahl ändern"), view
            )
        ]

    @hookimpl
    def tsl_run_action(self, host, user, plugin_id, action_id, selection, values):
        if plugin_id != self.plugin_id:
            return None
        self.calls.append(
            ("tsl_run_action", {"action_id": action_id, "selection": selection, "values": values})
        )
        return ActionResult(ok=True, message=f"{len(selection)} markiert", status_icon="green")

    @hookimpl
    def tsl_record_saved(self, host, event):
        self.calls.append(("tsl_record_saved", {"event": event}))

    @hookimpl
    def tsl_record_deleted(self, host, event):
        self.calls.append(("tsl_record_deleted", {"event": event}))


@pytest.fixture
def pm():
    return get_plugin_manager(load_entrypoints=False)


@pytest.fixture
def host(tmp_path, pm):
    h = ReferenceHost(tmp_path / "host", pm=pm)
    yield h
    h.close()


@pytest.fixture
def make_dist(tmp_path, monkeypatch):
    """Install a fake distribution (dist-info + package) on sys.path with an entry point of group tsl.

    Returns a function ``(plugin_id, min_host_api, code) -> package name``. Modules it
    creates are removed from ``sys.modules`` afterwards.
    """
    site = tmp_path / "site"
    site.mkdir()
    monkeypatch.syspath_prepend(str(site))
    created: list[str] = []

    def make(plugin_id: str, min_host_api: str = "1.0", code: str = "", manifest: str | None = None) -> str:
        pkg = f"fake_{plugin_id}_pkg"
        created.append(pkg)
        (site / pkg).mkdir()
        (site / pkg / "__init__.py").write_text(textwrap.dedent(code), encoding="utf-8")
        if manifest is None:
            manifest = (
                f'id = "{plugin_id}"\nname = "Fake {plugin_id}"\nname_de = "Testmodul {plugin_id}"\n'
                f'version = "0.1"\nmin_host_api = "{min_host_api}"\n'
            )
        (site / pkg / "manifest.toml").write_text(manifest, encoding="utf-8")
        info = site / f"{pkg}-0.1.dist-info"
        info.mkdir()
        (info / "METADATA").write_text(
            f"Metadata-Version: 2.1\nName: {pkg}\nVersion: 0.1\n", encoding="utf-8"
        )
        (info / "entry_points.txt").write_text(f"[tsl]\n{plugin_id} = {pkg}\n", encoding="utf-8")
        # A RECORD like an installer writes, so the manifest is found through the file list.
        (info / "RECORD").write_text(
            f"{pkg}/__init__.py,,\n{pkg}/manifest.toml,,\n{info.name}/METADATA,,\n", encoding="utf-8"
        )
        return pkg

    yield make
    for name in list(sys.modules):
        if any(name == p or name.startswith(p + ".") for p in created):
            del sys.modules[name]


@pytest.fixture
def site_dir(tmp_path) -> Path:
    return tmp_path / "site"


@pytest.fixture
def plug():
    """The test plugin class and the licence text it accepts (conftest is not importable in importlib mode)."""

    class Kit:
        pass

    kit = Kit()
    kit.Recorder = Recorder
    kit.VALID = VALID
    return kit
