"""The user-data the pack gives a new VM: cloud-config for cloud-init's ``salt_minion`` module.

On a real cloud cloud-init installs salt-minion, writes ``conf`` to the minion
config, ``grains`` to the grains file and (when the pack pre-seeds the identity)
the key pair to the minion's pki dir, then starts the minion.  A ``runcmd``
prints the minion key's fingerprint to the console, where the pack can compare
it with the key that reaches the master.  The test hypervisors consume the same
document.
"""

import yaml

from .config import deep_merge
from .errors import InvalidInput
from .identity import FINGERPRINT_LINE

PRINT_FINGERPRINT = (
    'echo "%s$(salt-call --local --out=newline_values_only key.finger)"' % FINGERPRINT_LINE
)


def master_conf(master):
    """The minion settings that point a new VM at this master."""
    master = master or {}
    if not master.get("address"):
        raise InvalidInput(
            "vmops:master:address is not set: a new VM would not know where its salt "
            "master is; nothing was changed"
        )
    conf = {"master": master["address"]}
    if master.get("port"):
        conf["master_port"] = int(master["port"])
    return conf


def render(name, master, grains=None, minion_config=None, keypair=None, cloud_config=None):
    """The cloud-config text for VM ``name``.

    ``keypair`` is ``(public PEM, private PEM)`` to pre-seed the minion's
    identity; the private half is only ever written here, never logged or
    returned by the pack.
    """
    # A minion whose key the master refuses keeps retrying instead of exiting: during a
    # replacement the old minion is refused until a rollback gives its key back.
    conf = {"rejected_retry": True}
    conf.update(minion_config or {})
    conf.update(master_conf(master))
    conf["id"] = name
    salt_minion = {"pkg_name": "salt-minion", "service_name": "salt-minion", "conf": conf}
    if grains:
        salt_minion["grains"] = dict(grains)
    if keypair:
        salt_minion["public_key"], salt_minion["private_key"] = keypair
    extra = dict(cloud_config or {})
    runcmd = list(extra.pop("runcmd", []) or [])
    doc = deep_merge(extra, {"salt_minion": salt_minion})
    doc["runcmd"] = runcmd + [PRINT_FINGERPRINT]
    return "#cloud-config\n" + yaml.safe_dump(doc, default_flow_style=False, sort_keys=False)
