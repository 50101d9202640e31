"""The user-data the pack gives a new VM: cloud-config for cloud-init's ``salt_minion`` module.

On a real cloud cloud-init installs salt-minion, writes ``conf`` to the minion
config and ``grains`` to the grains file, then starts the minion, which makes its
own key pair.  ``runcmd`` prints the minion key's fingerprint on the console
and, for a VM the pack registered, the public key itself tagged with the
registration's nonce: the pack reads it back through the cloud's console API
and makes it the accepted key of the id (``trust.py``).  The user-data holds
no secret: whoever reads it later (the metadata service, a cloud admin, an EC2
principal with ``DescribeInstanceAttribute``) learns the master's address, the
grains and a nonce that is used up, nothing that authenticates.  The test
hypervisors consume the same document.
"""

import yaml

from .config import deep_merge
from .errors import InvalidInput
from .identity import FINGERPRINT_LINE, print_pubkey_cmd

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


def render(name, master, grains=None, minion_config=None, tag=None, cloud_config=None):
    """The cloud-config text for VM ``name``.

    ``tag``: the registration's nonce; the VM then prints its minion's public key
    on the console with it.  No key material is ever put here.
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
    extra = dict(cloud_config or {})
    for secret in ("public_key", "private_key"):
        if secret in (extra.get("salt_minion") or {}):
            raise InvalidInput(
                "cloud_config must not carry salt_minion:%s: a VM makes its own "
                "key; nothing was changed" % secret
            )
    runcmd = list(extra.pop("runcmd", []) or [])
    doc = deep_merge(extra, {"salt_minion": salt_minion})
    doc["runcmd"] = runcmd + [PRINT_FINGERPRINT] + ([print_pubkey_cmd(tag)] if tag else [])
    return "#cloud-config\n" + yaml.safe_dump(doc, default_flow_style=False, sort_keys=False)
