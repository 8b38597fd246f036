"""Build steps pyproject.toml cannot declare.

- ``manifest.toml`` lives once, at the top of the repository (the host reads it without importing
  the plugin); the build copies it into the package so the wheel carries it beside the code.
- The pytest fixture modules stay in the source tree for the tests and benchmarks but are left out
  of the wheel: they import pytest, which an installation does not have.
"""

from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

PACKAGE = "tsl_exchange_plugin"
TEST_ONLY_MODULES = {
    (PACKAGE, "testing"),
    (f"{PACKAGE}.sandbox", "testing"),
    (f"{PACKAGE}.sandbox.graph", "testing"),
}


class BuildPy(build_py):
    def find_package_modules(self, package, package_dir):
        modules = super().find_package_modules(package, package_dir)
        return [m for m in modules if (m[0], m[1]) not in TEST_ONLY_MODULES]

    def run(self):
        super().run()
        if not self.editable_mode:
            target = Path(self.build_lib) / PACKAGE / "manifest.toml"
            target.parent.mkdir(parents=True, exist_ok=True)
            self.copy_file(str(Path(__file__).parent / "manifest.toml"), str(target))

    def get_outputs(self, include_bytecode=True):
        outputs = super().get_outputs(include_bytecode)
        return [*outputs, str(Path(self.build_lib) / PACKAGE / "manifest.toml")]


setup(cmdclass={"build_py": BuildPy})
