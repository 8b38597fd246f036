"""Read a plugin's ``manifest.toml`` without importing the plugin.

The host decides from the manifest whether it may import a plugin at all (for
example when the plugin needs a newer host API), so reading it must not run any
of the plugin's code: the file is located through the distribution's file list
or ``importlib.util.find_spec`` of the top-level package, which only finds the
package directory and executes nothing.
"""

from __future__ import annotations

import importlib.util
import tomllib
from dataclasses import dataclass
from importlib.metadata import EntryPoint
from pathlib import Path
from typing import Any

from tsl_hostapi import HOST_API_VERSION

MANIFEST_NAME = "manifest.toml"


class ManifestError(Exception):
    """A manifest is missing or unusable. The message is German, then English."""


@dataclass(frozen=True)
class ManifestTab:
    scope: str
    tab_id: str
    title: str = ""


@dataclass(frozen=True)
class ManifestAction:
    action_id: str
    label: str = ""
    view: str = ""


@dataclass(frozen=True)
class PluginManifest:
    """What a plugin declares before it is imported."""

    id: str
    name: str
    version: str
    min_host_api: str
    name_de: str = ""
    licence_module: str = ""
    entry_point: str = ""
    hooks: tuple[str, ...] = ()
    settings_tabs: tuple[ManifestTab, ...] = ()
    menu_actions: tuple[ManifestAction, ...] = ()
    path: str = ""  # where it was read from, for messages

    @property
    def display_name(self) -> str:
        """The name the (German) Interfaces page shows."""
        return self.name_de or self.name


def parse_version(text: str) -> tuple[int, ...]:
    """``"1.0"`` -> ``(1, 0)``. Raises :class:`ManifestError` for anything else."""
    parts = str(text).strip().split(".")
    if not parts or not all(p.isdigit() for p in parts):
        raise ManifestError(
            f'Ungültige Versionsangabe {text!r} (erwartet z. B. "1.0"). / Invalid version {text!r}.'
        )
    return tuple(int(p) for p in parts)


def _pad(v: tuple[int, ...], n: int) -> tuple[int, ...]:
    return v + (0,) * (n - len(v))


def version_newer(a: str, b: str) -> bool:
    """Is version ``a`` newer than ``b``? ``"1.0"`` and ``"1"`` are equal."""
    va, vb = parse_version(a), parse_version(b)
    n = max(len(va), len(vb))
    return _pad(va, n) > _pad(vb, n)


def _req_str(data: dict[str, Any], key: str, where: str) -> str:
    value = data.get(key)
    if not isinstance(value, str) or not value.strip():
        raise ManifestError(
            f"Manifest {where}: Pflichtangabe {key!r} fehlt oder ist leer. / "
            f"Manifest {where}: required key {key!r} is missing or empty."
        )
    return value.strip()


def parse_manifest(data: dict[str, Any], where: str = "") -> PluginManifest:
    """Build a :class:`PluginManifest` from parsed TOML. Unknown keys are ignored (newer plugins)."""
    try:
        tabs = tuple(
            ManifestTab(scope=str(t["scope"]), tab_id=str(t["tab_id"]), title=str(t.get("title", "")))
            for t in data.get("settings_tabs", ())
        )
        actions = tuple(
            ManifestAction(
                action_id=str(a["action_id"]), label=str(a.get("label", "")), view=str(a.get("view", ""))
            )
            for a in data.get("menu_actions", ())
        )
        hooks = tuple(str(h) for h in data.get("hooks", ()))
    except (KeyError, TypeError, AttributeError) as exc:
        raise ManifestError(
            f"Manifest {where}: Reiter oder Menüeinträge unvollständig ({exc}). / "
            f"Manifest {where}: settings_tabs or menu_actions incomplete ({exc})."
        ) from exc
    min_api = _req_str(data, "min_host_api", where)
    parse_version(min_api)
    return PluginManifest(
        id=_req_str(data, "id", where),
        name=_req_str(data, "name", where),
        version=_req_str(data, "version", where),
        min_host_api=min_api,
        name_de=str(data.get("name_de", "")),
        licence_module=str(data.get("licence_module", "")),
        entry_point=str(data.get("entry_point", "")),
        hooks=hooks,
        settings_tabs=tabs,
        menu_actions=actions,
        path=where,
    )


def load_manifest(path: str | Path) -> PluginManifest:
    """Read and parse one manifest file."""
    path = Path(path)
    try:
        with path.open("rb") as fh:
            data = tomllib.load(fh)
    except FileNotFoundError as exc:
        raise ManifestError(f"Manifest {path} nicht gefunden. / Manifest {path} not found.") from exc
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise ManifestError(
            f"Manifest {path} ist nicht lesbar: {exc}. / Manifest {path} cannot be read: {exc}."
        ) from exc
    return parse_manifest(data, where=str(path))


def find_manifest_path(ep: EntryPoint) -> Path | None:
    """Where the manifest of the package behind ``ep`` lives, found without importing it.

    First the distribution's own file list (a regular install), then the
    top-level package's directory as the import system would find it (editable
    installs, a package on ``sys.path``). ``find_spec`` of a top-level name runs
    no code of the package.
    """
    top = ep.value.split(":", 1)[0].split(".", 1)[0].strip()
    dist = ep.dist
    if dist is not None:
        for f in dist.files or ():
            if f.parts == (top, MANIFEST_NAME):
                located = Path(str(dist.locate_file(f)))
                if located.is_file():
                    return located
    try:
        spec = importlib.util.find_spec(top)
    except (ImportError, ValueError):
        spec = None
    if spec is not None and spec.submodule_search_locations:
        for location in spec.submodule_search_locations:
            candidate = Path(location).resolve() / MANIFEST_NAME
            if candidate.is_file():
                return candidate
        # A source checkout (editable install): the manifest sits at the top of the project,
        # beside its pyproject.toml; the wheel's build copies it into the package.
        for location in spec.submodule_search_locations:
            project = Path(location).resolve().parent
            if (project / "pyproject.toml").is_file() and (project / MANIFEST_NAME).is_file():
                return project / MANIFEST_NAME
    return None


def manifest_for_entry_point(ep: EntryPoint) -> PluginManifest:
    """Find and read the manifest for ``ep``; checks that its id is the entry-point name."""
    path = find_manifest_path(ep)
    if path is None:
        raise ManifestError(
            f"Modul {ep.name!r}: keine {MANIFEST_NAME} im Paket gefunden. / "
            f"Plugin {ep.name!r}: no {MANIFEST_NAME} found in its package."
        )
    manifest = load_manifest(path)
    if manifest.id != ep.name:
        raise ManifestError(
            f"Modul {ep.name!r}: Manifest nennt die Kennung {manifest.id!r}. / "
            f"Plugin {ep.name!r}: its manifest declares id {manifest.id!r}."
        )
    return manifest


def host_api_problem(manifest: PluginManifest, host_api: str = HOST_API_VERSION) -> str | None:
    """Why this host cannot load the plugin, or None. German first, then English."""
    if version_newer(manifest.min_host_api, host_api):
        return (
            f"Das Modul „{manifest.display_name}“ ({manifest.id} {manifest.version}) benötigt die "
            f"Host-Schnittstelle {manifest.min_host_api} oder neuer; diese Installation bietet "
            f"{host_api}. Bitte timeSensor LEGAL aktualisieren. / "
            f"Plugin {manifest.id} {manifest.version} needs host API {manifest.min_host_api} or newer; "
            f"this host provides {host_api}. It was not loaded."
        )
    return None
