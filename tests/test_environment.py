"""The tested environment is pinned once (requirements.txt); every other install path repeats it.

A learner who uses conda (environment.yml), pip (requirements.txt, the README's quick start) or
Binder (binder/) must get the same versions, and pyproject.toml's ranges must admit them.
"""
import re
import tomllib
from pathlib import Path

import pytest
from packaging.requirements import Requirement

ROOT = Path(__file__).resolve().parents[1]
CPU_INDEX = "--extra-index-url https://download.pytorch.org/whl/cpu"
PIN = re.compile(r"^\s*(?:-\s+)?([A-Za-z0-9][A-Za-z0-9._-]*)==([^\s#]+)\s*$")


def pins(path):
    """{normalised name: version} of every `name==version` line in a requirements-like file."""
    found = {}
    for line in path.read_text().splitlines():
        match = PIN.match(line)
        if match:
            name = re.sub(r"[-_.]+", "-", match[1]).lower()
            assert name not in found, f"{path.name} pins {name} twice"
            found[name] = match[2]
    return found


def test_requirements_pin_the_course_stack():
    required = {"torch", "transformers", "datasets", "faiss-cpu", "rank-bm25", "matplotlib",
                "jupyterlab", "nbval", "pytest"}
    missing = required - set(pins(ROOT / "requirements.txt"))
    assert not missing, f"requirements.txt does not pin {sorted(missing)}"


@pytest.mark.parametrize("other", ["environment.yml", "binder/requirements.txt"])
def test_pins_do_not_drift(other):
    source = pins(ROOT / "requirements.txt")
    copy = pins(ROOT / other)
    drift = {name: (source.get(name), copy.get(name))
             for name in source.keys() | copy.keys() if source.get(name) != copy.get(name)}
    assert not drift, f"{other} differs from requirements.txt (name: (requirements, {other})): {drift}"


@pytest.mark.parametrize("path", ["requirements.txt", "environment.yml", "binder/requirements.txt"])
def test_every_install_path_takes_the_cpu_build_of_torch(path):
    assert CPU_INDEX in (ROOT / path).read_text(), f"{path} must name the PyTorch CPU index"


def test_binder_runs_python_311_and_installs_the_package():
    assert (ROOT / "binder/runtime.txt").read_text().strip() == "python-3.11"
    assert "pip install --no-deps -e ." in (ROOT / "binder/postBuild").read_text()
    # repo2docker ignores binder/requirements.txt when an environment.yml is beside it.
    assert not (ROOT / "binder/environment.yml").exists()
    assert "python=3.11" in (ROOT / "environment.yml").read_text()


def test_pyproject_ranges_admit_the_tested_versions():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    declared = list(project["dependencies"])
    for extra in project["optional-dependencies"].values():
        declared += extra
    tested = pins(ROOT / "requirements.txt")
    for line in declared:
        req = Requirement(line)
        name = re.sub(r"[-_.]+", "-", req.name).lower()
        assert name in tested, f"pyproject.toml depends on {name}, which requirements.txt does not pin"
        assert req.specifier.contains(tested[name], prereleases=True), (
            f"pyproject.toml's range {req} excludes the tested {name}=={tested[name]}")


def test_ci_runs_the_readme_test_command_in_a_fresh_environment():
    readme = (ROOT / "README.md").read_text()
    ci = (ROOT / ".ci/run").read_text()
    assert "pip install -r requirements.txt -e ." in readme and "pip install" in ci
    assert "-r requirements.txt -e ." in ci
    assert re.search(r"^pytest$", ci, re.M), ".ci/run must call the README's test command, `pytest`"
    assert "pytest" in readme
