"""Installed as ``sitecustomize.py`` on nova-compute's PYTHONPATH by cloud.sh.

Nova loads ``compute_driver`` as ``nova.virt.<value>``; this finder serves
``nova.virt.saltminion_driver`` from the test hypervisor's file beside it, so
nothing is written into the system's nova package.
"""

import importlib.abc
import importlib.util
import os
import sys

_HERE = os.path.dirname(os.path.abspath(__file__))


class _TestHypervisorFinder(importlib.abc.MetaPathFinder):
    def find_spec(self, fullname, path=None, target=None):
        if fullname != "nova.virt.saltminion_driver":
            return None
        return importlib.util.spec_from_file_location(
            fullname, os.path.join(_HERE, "saltminion_driver.py")
        )


sys.meta_path.insert(0, _TestHypervisorFinder())
