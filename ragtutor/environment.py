"""Reproducibility and the environment check every notebook starts with."""
import importlib.metadata
import os
import platform
import random
import sys

import numpy as np

__all__ = ["set_seed", "check_environment"]

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


def _available_memory_gb():
    try:
        import psutil
    except ImportError:
        return None
    return psutil.virtual_memory().available / 2**30


def check_environment(verbose=True):
    """Print the versions, CPU threads, free memory and offline mode; warn in plain words.

    Returns ``{"versions": {...}, "threads": int, "memory_gb": float, "offline": bool,
    "warnings": [str, ...]}`` so that a test or a notebook can assert on it.
    """
    versions = {"python": platform.python_version(), "ragtutor": _version("ragtutor")}
    versions.update({name: _version(name) for name in _PACKAGES})
    warnings = []
    if sys.version_info[:2] != TESTED_PYTHON:
        warnings.append(f"Python {platform.python_version()} is not the tested Python "
                        f"{TESTED_PYTHON[0]}.{TESTED_PYTHON[1]}; most things should still work.")
    missing = [name for name, v in versions.items() if v is None and name != "ragtutor"]
    if missing:
        warnings.append(f"not installed: {', '.join(missing)}. Run: pip install -r requirements.txt")
    if versions["ragtutor"] is None:
        warnings.append("ragtutor is imported from the source tree but not installed. "
                        "Run: pip install -e .")
    threads = None
    try:
        import torch
        threads = torch.get_num_threads()
        if torch.version.cuda is not None and not torch.cuda.is_available():
            warnings.append(f"torch {torch.__version__} is a CUDA build on a machine without a GPU: it "
                            "works, but the CPU build is 10x smaller (see the README).")
    except ImportError:
        pass
    memory = _available_memory_gb()
    if memory is not None and memory < MIN_MEMORY_GB:
        warnings.append(f"only {memory:.1f} GB of memory is free; a chapter may need up to "
                        f"{MIN_MEMORY_GB} GB. Close other notebooks or restart the kernel.")
    offline = os.environ.get("HF_HUB_OFFLINE") == "1"
    report = {"versions": versions, "threads": threads, "cpus": os.cpu_count(),
              "memory_gb": memory, "offline": offline, "warnings": warnings}
    if verbose:
        for name, v in versions.items():
            print(f"{name:<13} {v or 'not installed'}")
        print(f"{'CPU threads':<13} {threads} of {os.cpu_count()} cores")
        if memory is not None:
            print(f"{'free memory':<13} {memory:.1f} GB")
        print(f"{'offline mode':<13} {'on' if offline else 'off'} (HF_HUB_OFFLINE; the course needs "
              "no network either way)")
        for w in warnings:
            print(f"WARNING: {w}")
        if not warnings:
            print("Everything looks right.")
    return report
