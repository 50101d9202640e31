"""The drivers the pack knows, and the factory that builds one for a cloud profile.

Kept out of ``provider.py`` (the contract): the drivers import the contract, the
factory imports the drivers, and nothing imports in a circle.
"""

import functools
import importlib

from .errors import InvalidInput

# driver name -> (module, class)
DRIVERS = {
    "openstack": ("openstack", "OpenStackProvider"),
    "ec2": ("ec2", "EC2Provider"),
}


def driver_class(driver):
    if driver not in DRIVERS:
        raise InvalidInput("unknown driver %r (known: %s)" % (driver, ", ".join(sorted(DRIVERS))))
    module, cls = DRIVERS[driver]
    return getattr(importlib.import_module("." + module, __package__), cls)


def get_provider(profile):
    """The driver for a cloud profile (see ``config.cloud``)."""
    return driver_class(profile["driver"])(profile)


@functools.lru_cache(maxsize=None)
def operations():
    """Every public operation some driver offers (the others answer NotSupported)."""
    names = set()
    for driver in DRIVERS:
        cls = driver_class(driver)
        names.update(n for n in dir(cls) if not n.startswith("_") and callable(getattr(cls, n)))
    return frozenset(names)
