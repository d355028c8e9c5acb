"""pyproject.toml lists what the package imports, as ranges that hold the exact pins of requirements.lock.txt."""

from __future__ import annotations

import ast
import sys
import tomllib
from importlib.metadata import packages_distributions
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("avface", "occlusion_synth", "pipelines")
# Imported only behind a clear error, and the user's choice (pyproject.toml says why).
NOT_DEPENDENCIES = {"tensorflow", "mediapipe"}


def _imported_top_level_modules() -> dict[str, set[str]]:
    found: dict[str, set[str]] = {}
    for pkg in PACKAGES:
        for path in (ROOT / pkg).rglob("*.py"):
            for node in ast.walk(ast.parse(path.read_text(), str(path))):
                if isinstance(node, ast.Import):
                    names = [a.name for a in node.names]
                elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                    names = [node.module]
                else:
                    continue
                for name in names:
                    top = name.split(".")[0]
                    if top not in sys.stdlib_module_names and top not in PACKAGES:
                        found.setdefault(top, set()).add(str(path.relative_to(ROOT)))
    return found


def _pyproject_requirements() -> list[Requirement]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    reqs = [Requirement(r) for r in project["dependencies"]]
    for extra in project.get("optional-dependencies", {}).values():
        reqs += [Requirement(r) for r in extra]
    return reqs


def test_every_imported_module_is_a_declared_dependency():
    # a requirement's extras count as declared (``dask[distributed]`` brings ``distributed``)
    declared = {canonicalize_name(n) for r in _pyproject_requirements() for n in (r.name, *r.extras)}
    dists = packages_distributions()
    missing = {}
    for module, files in sorted(_imported_top_level_modules().items()):
        if module in NOT_DEPENDENCIES:
            continue
        names = {canonicalize_name(d) for d in dists.get(module, [module])}
        if not names & declared:
            missing[module] = sorted(files)[:3]
    assert not missing, f"imported but not in pyproject.toml's dependencies: {missing}"


def test_pyproject_ranges_hold_the_lock_files_pins():
    pins = {}
    for line in (ROOT / "requirements.lock.txt").read_text().splitlines():
        line = line.split("#")[0].strip()
        if "==" in line:
            req = Requirement(line)
            pins[canonicalize_name(req.name)] = next(iter(req.specifier)).version
    for req in _pyproject_requirements():
        pin = pins.get(canonicalize_name(req.name))
        if pin is not None:
            assert req.specifier.contains(pin, prereleases=True), f"{req} excludes the lock file's {req.name}=={pin}"
