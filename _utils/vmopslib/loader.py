"""The ``salt.loader`` entry point of a pip-installed pack.

``pip install saltext-vmops`` on the master (and on minions that call the
execution module) makes Salt load the pack's modules from the installed
package: no ``saltutil.sync_all`` needed.  Do not also sync the same modules
from the state tree on that node (two modules with one name).
"""

import os

_HERE = os.path.dirname(os.path.abspath(__file__))


def get_loader_dirs():
    """Where Salt finds the pack's execution modules, runners and states."""
    return {
        "modules": [os.path.join(_HERE, "salt_modules")],
        "runners": [os.path.join(_HERE, "salt_runners")],
        "states": [os.path.join(_HERE, "salt_states")],
    }
