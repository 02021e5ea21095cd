"""The tested environment is pinned once (requirements.txt); every other install path repeats it.

A learner who uses conda (environment.yml), pip (requirements.txt, the README's quick start) or
Binder (binder/) must get the same versions, and pyproject.toml's ranges must admit them.
"""
import re
import tomllib
from pathlib import Path

import pytest
from packaging.requirements import Requirement

from ragtutor import environment

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
                "jupyterlab", "nbval", "pytest", "hypothesis", "ipywidgets"}
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
    # The README's install is scripts/install.py (pip install -r requirements.txt -e .), and CI's too.
    assert "python scripts/install.py &&" in readme
    assert re.search(r"^python scripts/install.py\b", ci, re.M)
    assert re.search(r"^pytest$", ci, re.M), ".ci/run must call the README's test command, `pytest`"
    assert "pytest" in readme


# -- containers (Binder: 1 CPU, 2 GB, on a many-core host) -------------------------------------

def _cgroup(tmp_path, version, cpu=None, memory=None, used=0):
    """A fake cgroup folder: cpu as (quota, period) or None, memory in bytes or None."""
    if version == 2:
        (tmp_path / "cpu.max").write_text("max 100000\n" if cpu is None else f"{cpu[0]} {cpu[1]}\n")
        (tmp_path / "memory.max").write_text("max\n" if memory is None else f"{memory}\n")
        (tmp_path / "memory.current").write_text(f"{used}\n")
    else:
        (tmp_path / "cpu").mkdir()
        (tmp_path / "memory").mkdir()
        (tmp_path / "cpu" / "cpu.cfs_quota_us").write_text("-1\n" if cpu is None else f"{cpu[0]}\n")
        (tmp_path / "cpu" / "cpu.cfs_period_us").write_text(f"{cpu[1] if cpu else 100000}\n")
        (tmp_path / "memory" / "memory.limit_in_bytes").write_text(
            f"{memory if memory is not None else 9223372036854771712}\n")
        (tmp_path / "memory" / "memory.usage_in_bytes").write_text(f"{used}\n")
    return tmp_path


@pytest.mark.parametrize("version", [1, 2])
def test_cgroup_limits_are_read_in_both_versions(tmp_path, version):
    root = _cgroup(tmp_path, version, cpu=(150000, 100000), memory=2 * 2**30, used=2**29)
    assert environment.cgroup_cpus(root) == 2  # 1.5 CPUs, rounded up
    assert environment.cgroup_memory(root) == (2 * 2**30, 2**29)


@pytest.mark.parametrize("version", [1, 2])
def test_no_limit_reads_as_none(tmp_path, version):
    root = _cgroup(tmp_path, version)
    assert environment.cgroup_cpus(root) is None and environment.cgroup_memory(root) is None
    assert environment.cgroup_cpus(tmp_path / "missing") is None


def test_a_binder_like_container_gets_its_threads_and_memory_from_the_limits(tmp_path):
    import torch

    root = _cgroup(tmp_path, 2, cpu=(100000, 100000), memory=2 * 2**30, used=int(1.2 * 2**30))
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(4)
        report = environment.check_environment(verbose=False, cgroup_root=root)
        assert report["threads"] == 1 == torch.get_num_threads() and report["cpus"] == 1
    finally:
        torch.set_num_threads(before)
    assert report["memory_limit_gb"] == pytest.approx(2.0)
    assert report["memory_gb"] == pytest.approx(0.8, abs=0.01)  # the limit minus what is in use
    assert any("keep one chapter open at a time" in note for note in report["notes"])
    assert any("only 0.8 GB of memory is free" in w for w in report["warnings"])


def test_threads_are_never_raised_to_the_quota(tmp_path):
    import torch

    root = _cgroup(tmp_path, 2, cpu=(800000, 100000))
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        environment.check_environment(verbose=False, cgroup_root=root)
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)
