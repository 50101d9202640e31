"""
Execution module of saltext-vmops: one call per cloud concept, on OpenStack
(openstacksdk) and EC2 (boto3).

Works with ``salt-call`` on any minion that holds cloud credentials, and on the
master from runners and orchestration.  Configuration is the ``vmops`` key,
looked up with ``config.get`` (minion config, grains, pillar, master config);
see ``pillar.example/vmops.sls``.  Credentials never appear in a return value.

:depends: openstacksdk (OpenStack clouds), boto3 (EC2)
"""

import logging
import os
import sys

try:
    import vmopslib
except ImportError:  # synced from the state tree: the core sits in <extension_modules>/utils
    _ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    sys.path.extend(os.path.join(_ROOT, sub) for sub in ("utils", "_utils"))
    import vmopslib  # pylint: disable=ungrouped-imports

from vmopslib import minions, saltglue

log = logging.getLogger(__name__)

__virtualname__ = "vmops"


def __virtual__():
    try:
        import openstack  # pylint: disable=unused-import,import-outside-toplevel
    except ImportError:
        try:
            import boto3  # pylint: disable=unused-import,import-outside-toplevel
        except ImportError:
            return (False, "the vmops module needs openstacksdk or boto3")
    return __virtualname__


def _conf():
    return {"vmops": __salt__["config.get"]("vmops", default={}, merge="recurse")}


def _provider(cloud):
    return saltglue.provider(_conf(), None, cloud)


def server_show(name, cloud=None):
    """
    Describe the server ``name`` (or id): status, compute host, flavor, image,
    key pair, security groups, networks and fixed IPs, floating IPs, volumes,
    metadata, creation time.  Two servers with that name are an error: give the id.

    CLI Example:

    .. code-block:: bash

        salt-call vmops.server_show app2
    """
    return saltglue.run_module(lambda: _provider(cloud)[1].describe(name))


def server_list(name, cloud=None):
    """
    Every server called ``name`` (none, one, or several during a replacement).

    CLI Example:

    .. code-block:: bash

        salt-call vmops.server_list app2
    """
    return saltglue.run_module(lambda: _provider(cloud)[1].servers_named(name))


def server_create(name, cloud=None, wait=True, **overrides):
    """
    Boot VM ``name`` with the pack's user-data (a salt-minion pointed at the
    configured master) from ``vmops:defaults`` and ``vmops:vms:<name>``, with
    keyword overrides (``flavor``, ``image``, ``networks``...), and wait until
    it is ACTIVE.  A server that goes to ERROR fails with Nova's fault message.

    CLI Example:

    .. code-block:: bash

        salt-call vmops.server_create app2 flavor=lightspeed
    """
    overrides = {k: v for k, v in overrides.items() if not k.startswith("__")}

    def _create():
        conf, prov = _provider(cloud)
        return minions.create_vm(conf, prov, name, overrides, wait=wait)

    return saltglue.run_module(_create)


def server_delete(name, cloud=None, wait=True):
    """
    Delete the server ``name`` (or id) and wait until it is gone.

    CLI Example:

    .. code-block:: bash

        salt-call vmops.server_delete app2-old
    """
    return saltglue.run_module(lambda: _provider(cloud)[1].delete(name, wait=wait))


def console_output(name, cloud=None):
    """
    The console output of server ``name`` (or id).

    CLI Example:

    .. code-block:: bash

        salt-call vmops.console_output app2
    """
    return saltglue.run_module(lambda: _provider(cloud)[1].console_output(name))


def flip_floating_ip(address, server, fixed_ip=None, cloud=None):
    """
    Move floating IP ``address`` to ``server`` (name or id) in one
    re-association, so it is never unassigned in between, and verify it.
    A no-op when it already points there.

    CLI Example:

    .. code-block:: bash

        salt-call vmops.flip_floating_ip 203.0.113.7 app2
    """
    return saltglue.run_module(
        lambda: _provider(cloud)[1].flip_ip(address, server, fixed_ip=fixed_ip)
    )
