"""Installs ragtutor's network guard in every Python process of a test run, kernels included.

Python imports ``sitecustomize`` at start-up from the first directory on its path that has one.
The pytest plugin (``ragtutor.tools.testing``) puts this directory first on PYTHONPATH and sets
RAGTUTOR_BLOCK_NETWORK=1; every process pytest starts — each notebook kernel that nbval launches
among them — inherits both and arrives here before running any code of its own. The directory
holds nothing else, so it shadows no other module (a Python that ships its own sitecustomize,
such as Debian's system Python, runs this one instead during the tests).
"""
import os
import sys

if os.environ.get("RAGTUTOR_BLOCK_NETWORK") == "1":
    try:
        from ragtutor.tools import netguard
    except Exception as error:
        # Fail closed: Python would only print a warning for a broken sitecustomize and go on
        # with the network open.
        raise SystemExit(f"RAGTUTOR_BLOCK_NETWORK=1, but ragtutor's network guard cannot be "
                         f"imported in {sys.executable}: {error!r}") from error
    netguard.install()
