"""Reproducibility and the environment check every notebook starts with."""
import importlib.metadata
import math
import os
import platform
import random
import sys
from pathlib import Path

import numpy as np

__all__ = ["set_seed", "check_environment", "cgroup_cpus", "cgroup_memory"]

# What the course is tested with (requirements.txt); check_environment() compares against it.
TESTED_PYTHON = (3, 11)
MIN_MEMORY_GB = 1.5  # the memory budget of one chapter (README)
_PACKAGES = ["torch", "transformers", "tokenizers", "datasets", "faiss-cpu", "numpy", "scipy",
             "scikit-learn", "rank-bm25", "matplotlib"]


def set_seed(seed=0):
    """Seed Python, NumPy and torch, and ask torch for deterministic kernels.

    On a CPU the course's models then train to the same weights on every run with the same thread
    count (a different thread count can change the order of floating-point sums).
    """
    if not isinstance(seed, int) or isinstance(seed, bool) or seed < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
    random.seed(seed)
    np.random.seed(seed)
    try:
        import torch
    except ImportError:
        return seed
    torch.manual_seed(seed)
    torch.use_deterministic_algorithms(True, warn_only=True)
    return seed


def _version(name):
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return None


CGROUP_ROOT = Path("/sys/fs/cgroup")


def _read_number(path):
    """The integer in a cgroup file; None when the file is missing or says "max" / no limit."""
    try:
        text = Path(path).read_text().split()
    except OSError:
        return None
    if not text or text[0] == "max":
        return None
    try:
        value = int(text[0])
    except ValueError:
        return None
    return None if value < 0 or value >= 2**60 else value  # -1 and ~2^63 mean "no limit"


def cgroup_memory(root=CGROUP_ROOT):
    """``(limit, in use)`` in bytes of this container's memory (cgroup v2 or v1), or None when it
    has no limit. Binder's containers have one; ``psutil`` reports the host's memory instead."""
    for limit_file, usage_file in (("memory.max", "memory.current"),
                                   ("memory/memory.limit_in_bytes", "memory/memory.usage_in_bytes")):
        limit = _read_number(Path(root) / limit_file)
        if limit is not None:
            return limit, _read_number(Path(root) / usage_file) or 0
    return None


def cgroup_cpus(root=CGROUP_ROOT):
    """The CPUs this container may use by its CPU quota (cgroup v2 or v1), rounded up; None when it
    has no quota. A 1-CPU quota on a 64-core host is 1, where ``os.cpu_count()`` says 64."""
    try:
        quota, period = (Path(root) / "cpu.max").read_text().split()[:2]
        if quota != "max":
            return max(1, math.ceil(int(quota) / int(period)))
        return None
    except (OSError, ValueError):
        pass
    quota = _read_number(Path(root) / "cpu" / "cpu.cfs_quota_us")
    period = _read_number(Path(root) / "cpu" / "cpu.cfs_period_us")
    return max(1, math.ceil(quota / period)) if quota and period else None


def _available_memory_gb(root=CGROUP_ROOT):
    """Free memory in GB: the host's, or less where the container's limit leaves less."""
    try:
        import psutil
        free = psutil.virtual_memory().available
    except ImportError:
        free = None
    container = cgroup_memory(root)
    if container is not None:
        left = max(container[0] - container[1], 0)
        free = left if free is None else min(free, left)
    return None if free is None else free / 2**30


def check_environment(verbose=True, cgroup_root=CGROUP_ROOT):
    """Print the versions, CPU threads, free memory and offline mode; warn in plain words.

    In a container with a CPU quota below torch's thread count (Binder gives 1 CPU on a many-core
    host), it lowers torch's threads to the quota, since more threads than CPUs only make every
    step slower; free memory is what the container's memory limit leaves, not the host's.

    Returns ``{"versions": {...}, "threads": int, "cpus": int, "memory_gb": float,
    "memory_limit_gb": float or None, "offline": bool, "warnings": [str, ...], "notes": [str,
    ...]}`` so that a test or a notebook can assert on it.
    """
    versions = {"python": platform.python_version(), "ragtutor": _version("ragtutor")}
    versions.update({name: _version(name) for name in _PACKAGES})
    warnings = []
    if sys.version_info[:2] != TESTED_PYTHON:
        warnings.append(f"Python {platform.python_version()} is not the tested Python "
                        f"{TESTED_PYTHON[0]}.{TESTED_PYTHON[1]}; most things should still work.")
    missing = [name for name, v in versions.items() if v is None and name != "ragtutor"]
    if missing:
        warnings.append(f"not installed: {', '.join(missing)}. Run: python scripts/install.py (the README's quick start)")
    if versions["ragtutor"] is None:
        warnings.append("ragtutor is imported from the source tree but not installed. "
                        "Run: pip install -e .")
    threads, notes = None, []
    quota = cgroup_cpus(cgroup_root)
    try:
        import torch
        if quota is not None and torch.get_num_threads() > quota:
            notes.append(f"this container may use {quota} CPU(s) of the host's {os.cpu_count()}: "
                         f"torch now uses {quota} thread(s) instead of {torch.get_num_threads()}.")
            torch.set_num_threads(quota)
        threads = torch.get_num_threads()
        if torch.version.cuda is not None and not torch.cuda.is_available():
            warnings.append(f"torch {torch.__version__} is a CUDA build on a machine without a GPU: it "
                            "works, but the CPU build is 10x smaller (see the README).")
    except ImportError:
        pass
    memory = _available_memory_gb(cgroup_root)
    container = cgroup_memory(cgroup_root)
    limit = None if container is None else container[0] / 2**30
    if limit is not None and limit < 2 * MIN_MEMORY_GB:
        notes.append(f"this container allows {limit:.1f} GB of memory in all and a chapter may "
                     f"need up to {MIN_MEMORY_GB} GB: keep one chapter open at a time (shut down "
                     "the kernels of the others: Kernel > Shut Down Kernel).")
    if memory is not None and memory < MIN_MEMORY_GB:
        warnings.append(f"only {memory:.1f} GB of memory is free; a chapter may need up to "
                        f"{MIN_MEMORY_GB} GB. Close other notebooks or restart the kernel.")
    offline = os.environ.get("HF_HUB_OFFLINE") == "1"
    report = {"versions": versions, "threads": threads, "cpus": quota or os.cpu_count(),
              "memory_gb": memory, "memory_limit_gb": limit, "offline": offline,
              "warnings": warnings, "notes": notes}
    if verbose:
        for name, v in versions.items():
            print(f"{name:<13} {v or 'not installed'}")
        print(f"{'CPU threads':<13} {threads} of {quota or os.cpu_count()} cores"
              + (f" (the container's quota; the host has {os.cpu_count()})" if quota else ""))
        if memory is not None:
            print(f"{'free memory':<13} {memory:.1f} GB")
        print(f"{'offline mode':<13} {'on' if offline else 'off'} (HF_HUB_OFFLINE; the course needs "
              "no network either way)")
        for note in notes:
            print(f"note: {note}")
        for w in warnings:
            print(f"WARNING: {w}")
        if not warnings:
            print("Everything looks right.")
    return report
