"""
The guest side of saltext-vmops: what a replaced server's own minion does for the pack.

No cloud library is needed here (this module runs on any minion).

:depends: nothing beyond Salt

``reidentify`` moves a minion to another id with a key of its own, so that the old
server of a replacement stays under Salt's control (``<vm>-old``) while the new server
takes ``<vm>``: the pack stops the old server's services, unmounts its data volumes and,
on a rollback, starts them again, through it.  The private key is made on the minion and
never leaves it; the master learns the public key from the minion's own (authenticated)
job return and pre-seeds it, so the moved minion is accepted the moment it restarts.
"""

import logging
import os
import shutil
import subprocess

import salt.crypt
import salt.utils.files
import salt.utils.yaml

log = logging.getLogger(__name__)

__virtualname__ = "vmops_minion"

DROPIN = "zz-vmops-id.conf"


def __virtual__():
    return __virtualname__


def _keys_dir(ident):
    return os.path.join(__opts__["pki_dir"], "vmops-%s" % ident)


def _read(path):
    with salt.utils.files.fopen(path, "r") as fh:
        return fh.read()


def _restart_command():
    cmd = __opts__.get("minion_restart_command")
    if cmd:
        return [str(c) for c in cmd]
    return ["systemctl", "restart", "salt-minion"]


def reidentify(new_id, commit=False, delay=1):
    """
    Move this minion to the id ``new_id``, with a key of its own.

    Two calls, so that a run interrupted between them resumes safely:

    - ``commit=False`` (default): make (or find again) the key pair this minion will use
      under ``new_id`` and return its public key; nothing else changes.  When this
      minion held ``new_id`` before (a move being undone), its old key pair is the one.
    - ``commit=True``: keep the current key pair aside (under the current id), put the
      staged one in place, set ``id: new_id`` in ``minion.d/zz-vmops-id.conf`` and
      restart the minion ``delay`` seconds after this job returned (with
      ``minion_restart_command`` when the minion config sets one, else
      ``systemctl restart salt-minion``).  The master must have accepted the public key
      under ``new_id`` first.

    - ``new_id``: the id to move to.
    - ``commit``: switch now (after the master accepted the key) instead of staging.
    - ``delay``: seconds between the return and the restart.

    The private key never leaves the minion; the return holds the public key only.

    CLI Example:

    .. code-block:: bash

        salt app2 vmops_minion.reidentify app2-old
        salt app2 vmops_minion.reidentify app2-old commit=True
    """
    current = __opts__["id"]
    pki = __opts__["pki_dir"]
    staged = _keys_dir(new_id)
    if new_id == current:
        return {"id": current, "pub": _read(os.path.join(pki, "minion.pub")), "changed": False}
    if not os.path.exists(os.path.join(staged, "minion.pub")):
        os.makedirs(staged, mode=0o700, exist_ok=True)
        keysize = __opts__.get("keysize", 2048)
        if hasattr(salt.crypt, "write_keys"):  # Salt 3007+
            salt.crypt.write_keys(staged, "minion", keysize)
        else:  # pragma: no cover - older Salt
            salt.crypt.gen_keys(staged, "minion", keysize)
    pub = _read(os.path.join(staged, "minion.pub"))
    if not commit:
        return {"id": new_id, "from": current, "pub": pub, "changed": False}
    kept = _keys_dir(current)
    os.makedirs(kept, mode=0o700, exist_ok=True)
    for name in ("minion.pem", "minion.pub"):
        shutil.copy2(os.path.join(pki, name), os.path.join(kept, name))
    for name in ("minion.pem", "minion.pub"):
        tmp = os.path.join(pki, name + ".vmops")
        shutil.copy2(os.path.join(staged, name), tmp)
        os.replace(tmp, os.path.join(pki, name))
    shutil.rmtree(staged, ignore_errors=True)
    confdir = os.path.join(os.path.dirname(__opts__["conf_file"]), "minion.d")
    os.makedirs(confdir, exist_ok=True)
    with salt.utils.files.fopen(os.path.join(confdir, DROPIN), "w") as fh:
        salt.utils.yaml.safe_dump({"id": new_id}, fh, default_flow_style=False)
    cmd = _restart_command()
    # detached, after this job's return reached the master
    subprocess.Popen(  # pylint: disable=consider-using-with
        ["sh", "-c", 'sleep "$0"; exec "$@"', str(int(delay))] + cmd,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
        close_fds=True,
    )
    log.warning("vmops: this minion moves from id %s to %s (restarting)", current, new_id)
    return {"id": new_id, "from": current, "pub": pub, "changed": True, "restart": cmd}
