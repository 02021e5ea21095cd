"""The course's pytest plugin (``-p ragtutor.tools.testing`` in pyproject.toml) and a notebook runner.

What the plugin does for every test run:

- sets ``HF_HUB_OFFLINE``, ``HF_DATASETS_OFFLINE`` and ``TRANSFORMERS_OFFLINE`` before any conftest
  or test module is imported, because the Hugging Face libraries read them once, at import;
- installs :mod:`ragtutor.tools.netguard` in the pytest process;
- sets ``RAGTUTOR_BLOCK_NETWORK=1`` and puts ``netguard_site/`` first on PYTHONPATH, so that every
  Python process pytest starts installs the guard too. nbval launches each notebook's kernel with
  this process's environment, so this is how the guard reaches the kernels — a plugin that only
  patches this process's sockets would not;
- sets the proxy variables (``netguard.PROXY_ENV``) to a closed loopback port, loopback exempt, so
  that what the guard cannot patch — ``curl`` or ``wget`` in a notebook's ``!`` cell, a Python
  started with ``-I``, ``-E`` or ``-S`` — fails at once when it honours them;
- under pytest-xdist (``-n``, as pyproject.toml asks), gives each worker one thread: it sets
  ``OMP_NUM_THREADS``, ``MKL_NUM_THREADS`` and ``OPENBLAS_NUM_THREADS`` to 1, which the notebook
  kernels it starts inherit, and calls ``torch.set_num_threads(1)`` in the worker itself. Two
  workers on two cores then share the machine instead of fighting over it;
- finds nbval's sanitize file from any working directory;
- records a ``slow`` property for each test marked slow, so that a JUnit report
  (``--junitxml``, as ``.ci/run`` writes one) can tell slow tests from unit tests.

:class:`CurrentEnvNotebookClient` executes a notebook the way nbval does, for the tests and the
benchmark that run notebooks outside nbval.
"""
import os
from pathlib import Path

import pytest
from jupyter_client.manager import AsyncKernelManager
from nbclient import NotebookClient
from nbval.kernel import CURRENT_ENV_KERNEL_NAME, NbvalKernelspecManager

from ragtutor.tools import netguard

__all__ = ["OFFLINE_ENV", "SITE_DIR", "WORKER_THREAD_ENV", "CurrentEnvNotebookClient"]

OFFLINE_ENV = {"HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1",
               "RAGTUTOR_BLOCK_NETWORK": "1"}
# One thread for each pytest-xdist worker and everything it starts.
WORKER_THREAD_ENV = {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1"}
SITE_DIR = Path(__file__).resolve().parent / "netguard_site"

# The variables as they were before the run, restored at its end (pytest may run in-process).
_saved_env = {}


@pytest.hookimpl(tryfirst=True)
def pytest_load_initial_conftests(early_config, parser, args):
    """Go offline before conftest files and test modules import anything."""
    if not (SITE_DIR / "sitecustomize.py").is_file():
        raise pytest.UsageError(f"{SITE_DIR / 'sitecustomize.py'} is missing, so notebook kernels "
                                "would run with the network open. Reinstall with: pip install -e .")
    paths = [str(SITE_DIR)] + [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep)
                               if p and p != str(SITE_DIR)]
    variables = {**OFFLINE_ENV, **netguard.PROXY_ENV, "PYTHONPATH": os.pathsep.join(paths)}
    worker = os.environ.get("PYTEST_XDIST_WORKER") is not None
    if worker:
        variables.update(WORKER_THREAD_ENV)
    for name, value in variables.items():
        _saved_env[name] = os.environ.get(name)
        os.environ[name] = value
    if worker:
        import torch
        torch.set_num_threads(1)
    netguard.install()


def pytest_configure(config):
    # pyproject.toml names the sanitize file relative to the repository root, but nbval opens it
    # relative to the working directory.
    sanitize = getattr(config.option, "nbval_sanitize_with", None)
    if sanitize and not Path(sanitize).is_absolute() and not Path(sanitize).exists():
        config.option.nbval_sanitize_with = str(config.rootpath / sanitize)


def pytest_runtest_setup(item):
    if item.get_closest_marker("slow") is not None:
        item.user_properties.append(("slow", "true"))


def pytest_unconfigure(config):
    netguard.uninstall()
    for name, value in _saved_env.items():
        if value is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = value
    _saved_env.clear()


class CurrentEnvNotebookClient(NotebookClient):
    """An nbclient ``NotebookClient`` whose kernel runs this Python, as nbval's
    ``--nbval-current-env`` starts it — not whatever a ``python3`` kernelspec points to.

    Usage: ``CurrentEnvNotebookClient(nb, resources={"metadata": {"path": folder}}).execute()``
    runs ``nb`` top to bottom with ``folder`` as the working directory and raises
    ``nbclient.exceptions.CellExecutionError`` at the first cell that fails.
    """

    def create_kernel_manager(self):
        self.km = AsyncKernelManager(kernel_name=CURRENT_ENV_KERNEL_NAME,
                                     kernel_spec_manager=NbvalKernelspecManager())
        return self.km
