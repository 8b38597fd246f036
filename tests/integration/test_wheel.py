"""The built wheel on its own: installed into a fresh environment, run in an empty folder with no
project folder and no schema variable, every command starts and the demo runs to its end.

The fresh environment reuses this environment's installed dependencies (a path line, no network):
only the wheel itself is installed into it."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SOURCES = ("pyproject.toml", "setup.py", "README.md", "manifest.toml", "tsl_exchange_plugin", "hooks")


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> dict:
    base = tmp_path_factory.mktemp("wheel")
    src = base / "src"
    src.mkdir()
    for name in SOURCES:
        source = ROOT / name
        if source.is_dir():
            shutil.copytree(source, src / name, ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
        else:
            shutil.copy2(source, src / name)
    dist = base / "dist"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "-q",
            "--no-deps",
            "--no-build-isolation",
            "-w",
            str(dist),
            str(src),
        ],
        check=True,
        capture_output=True,
    )
    wheel = next(dist.glob("*.whl"))
    venv = base / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    bin_dir = venv / ("Scripts" if os.name == "nt" else "bin")
    python = bin_dir / "python"
    site = Path(
        subprocess.run(
            [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
            check=True,
            capture_output=True,
            text=True,
        ).stdout.strip()
    )
    # The dependencies from this environment, appended after the new environment's own packages.
    # A plain path line: the editable install's finder (a .pth that runs code) is not activated.
    (site / "zz_dependencies.pth").write_text(sysconfig.get_paths()["purelib"] + "\n", encoding="utf-8")
    subprocess.run(
        [sys.executable, "-m", "pip", "--python", str(python), "install", "-q", "--no-deps", str(wheel)],
        check=True,
        capture_output=True,
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TSL_", "PYTHON"))}
    return {"wheel": wheel, "bin": bin_dir, "site": site, "env": env, "empty": base / "empty"}


def _run(installed: dict, *args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    cwd = installed["empty"]
    cwd.mkdir(exist_ok=True)
    return subprocess.run(
        [str(installed["bin"] / "tsl-exchange"), *args],
        cwd=cwd,
        env=installed["env"],
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def test_wheel_ships_manifest_and_model_but_no_test_fixtures(installed):
    names = set(zipfile.ZipFile(installed["wheel"]).namelist())
    assert "tsl_exchange_plugin/manifest.toml" in names
    assert "tsl_exchange_plugin/sandbox/ews_model.json.gz" in names
    # PEP 561 markers: an installed copy's annotations are used by a type checker.
    assert {"tsl_exchange_plugin/py.typed", "tsl_hostapi/py.typed"} <= names
    assert not {n for n in names if n.endswith("testing.py")}
    assert not {n for n in names if n.endswith(".xsd")}, "Microsoft's schema files are not ours to ship"
    shipped = installed["site"] / "tsl_exchange_plugin" / "manifest.toml"
    assert shipped.read_bytes() == (ROOT / "manifest.toml").read_bytes()


def test_installed_package_is_the_wheel_not_the_checkout(installed):
    code = (
        "import tsl_exchange_plugin, tsl_hostapi; print(tsl_exchange_plugin.__file__, tsl_hostapi.__file__)"
    )
    out = subprocess.run(
        [str(installed["bin"] / "python"), "-c", code],
        cwd=installed["empty"].parent,
        env=installed["env"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert str(ROOT) not in out and str(installed["site"]) in out


def test_demo_runs_to_the_end_in_an_empty_folder(installed):
    result = _run(installed, "demo", "--contacts", "20", timeout=300)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "Vorführung beendet." in result.stdout
    assert "ohne Schema-Prüfung" in result.stdout  # said once, not per request
    assert result.stdout.count("ohne Schema-Prüfung") == 1
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize(
    "args",
    [
        ("--help",),
        ("--version",),
        ("demo", "--help"),
        ("sandbox", "--help"),
        ("worker", "--help"),
        ("status", "--help"),
        ("licence", "--help"),
        ("config", "--help"),
        ("status", "--data", "nirgends"),
        ("worker", "--once", "--data", "nirgends"),
    ],
)
def test_every_command_starts_from_the_wheel(installed, args):
    result = _run(installed, *args)
    assert "Traceback" not in result.stderr, result.stderr
    assert result.returncode in (0, 1, 2), result.stderr
    assert "No module named" not in result.stderr
