"""The test hypervisor's guest: a real salt-minion started from a server's user-data.

Shared by the Nova compute driver (``saltminion_driver.py``, run by Debian's
python3 inside nova-compute) and the EC2 watcher (``ec2_hypervisor.py``, run
beside moto).  Standard library and PyYAML only, so it imports in both.

What a "VM" is here: a directory ``<vms_dir>/<server id>/`` holding

* ``etc/salt/minion`` and ``etc/salt/grains``: written from the ``salt_minion``
  section of the cloud-config exactly as cloud-init's ``cc_salt_minion`` does
  (``conf`` -> minion config, ``grains`` -> grains file, ``public_key`` /
  ``private_key`` -> ``<pki_dir>/minion.pub`` / ``minion.pem`` with 0644 / 0400);
* ``minion.pid``: the salt-minion's PID (its own session, so it outlives the
  compute process that started it, as a guest outlives a nova-compute restart);
* ``console.log``: what cloud-init would have printed, including the minion's
  public key fingerprint (``ci-info: salt-minion key fingerprint (sha256): ...``)
  and, when a ``runcmd`` of the user-data prints it (the pack's does), the public
  key itself tagged with the run's nonce (``ci-info: salt-minion public key [<tag>]: ...``).

User-data that is not cloud-config, or has no ``salt_minion`` section, gives a
VM without a minion (console output only).
"""

import base64
import binascii
import hashlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time

import yaml

VMS_DIR = os.environ.get("VMOPS_FAKEVM_DIR", "/var/tmp/vmops/vms")
SALT_MINION = os.environ.get("VMOPS_SALT_MINION", "/var/tmp/vmops/bin/salt-minion")
FINGERPRINT_PREFIX = "ci-info: salt-minion key fingerprint (sha256): "
# the pack's user-data prints the minion's public key, tagged with its run's nonce (identity.py)
PUBKEY_MARKER = "ci-info: salt-minion public key ["
_PUBKEY_TAG = re.compile(re.escape(PUBKEY_MARKER) + r"([0-9a-f]{8,64})\]: ")


def decode_user_data(user_data):
    """Return user-data as text: accepts base64 (Nova, EC2 describe) or plain text."""
    if not user_data:
        return ""
    if isinstance(user_data, bytes):
        user_data = user_data.decode("utf-8", "replace")
    text = user_data.strip()
    if text.startswith("#"):
        return user_data
    try:
        return base64.b64decode(text, validate=True).decode("utf-8", "replace")
    except (binascii.Error, ValueError):
        return user_data


def parse_cloud_config(user_data):
    """Return the cloud-config dict, or None when user-data is not cloud-config."""
    text = decode_user_data(user_data)
    if not text.lstrip().startswith("#cloud-config"):
        return None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError:
        return None
    return data if isinstance(data, dict) else None


def key_fingerprint(pub_pem):
    """The fingerprint ``salt-key -F`` shows: sha256 over the PEM body lines, colon separated."""
    lines = [line for line in pub_pem.splitlines(True) if line.strip()][1:-1]
    digest = hashlib.sha256("".join(lines).replace("\r\n", "\n").encode()).hexdigest()
    return ":".join(digest[i : i + 2] for i in range(0, len(digest), 2))


def launch_template(name, master_port, level="staging"):
    """User-data an operator's autoscaler would give a server outside the pack:
    cloud-init's salt_minion module (README, "Reactor: admitting new minions")."""
    doc = {
        "salt_minion": {
            # rejected_retry: a minion whose key the master refuses keeps trying
            "conf": {
                "master": "127.0.0.1",
                "master_port": master_port,
                "id": name,
                "rejected_retry": True,
                "acceptance_wait_time": 1,
                "acceptance_wait_time_max": 2,
            },
            "grains": {"level": level},
        },
        "runcmd": [
            'echo "%s$(salt-call --local --out=newline_values_only key.finger)"'
            % FINGERPRINT_PREFIX
        ],
    }
    return "#cloud-config\n" + yaml.safe_dump(doc)


def vm_dir(server_id):
    return os.path.join(VMS_DIR, server_id)


def _read(path, default=None):
    try:
        with open(path, encoding="utf-8") as fh:
            return fh.read()
    except OSError:
        return default


def _write(path, text, mode=0o644):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        fh.write(text)
    os.chmod(path, mode)


def _console(root, line):
    with open(os.path.join(root, "console.log"), "a", encoding="utf-8") as fh:
        fh.write(line.rstrip("\n") + "\n")


def sock_dir(server_id):
    """A short per-guest socket dir: AF_UNIX paths are limited to ~107 bytes."""
    tag = hashlib.sha1(server_id.encode()).hexdigest()[:10]
    return os.path.join(os.path.dirname(VMS_DIR.rstrip("/")), "s", tag)


def exists(server_id):
    return os.path.isdir(vm_dir(server_id))


def minion_pid(server_id):
    pid = _read(os.path.join(vm_dir(server_id), "minion.pid"))
    if not pid:
        return None
    try:
        pid = int(pid)
        os.kill(pid, 0)
    except (ValueError, ProcessLookupError, PermissionError):
        return None
    # a zombie (our own child that died) is not running
    stat = _read("/proc/%d/stat" % pid, "")
    if stat and stat.rsplit(")", 1)[-1].split()[0] == "Z":
        return None
    return pid


def boot(server_id, user_data, name=None, host=None, extra_grains=None):
    """Boot the guest: write cloud-init's files and start salt-minion if asked for.

    Returns a dict describing what was done.  Idempotent: a guest whose minion
    already runs is left as it is (apart from the host grain).
    """
    root = vm_dir(server_id)
    if minion_pid(server_id):
        if host:
            set_host(server_id, host)
        return {"minion": True, "already_running": True}
    os.makedirs(root, exist_ok=True)
    _write(os.path.join(root, "meta.json"), json.dumps({"id": server_id, "name": name}))
    _console(root, "Cloud-init v. 23.1.2 running 'init' at %s." % time.strftime("%c"))
    cfg = parse_cloud_config(user_data)
    salt_cfg = (cfg or {}).get("salt_minion")
    if not isinstance(salt_cfg, dict):
        _console(root, "ci-info: no salt_minion configuration in user-data")
        return {"minion": False}
    etc = os.path.join(root, "etc", "salt")
    conf = dict(salt_cfg.get("conf") or {})
    conf.setdefault("id", name)
    _write(os.path.join(etc, "minion"), yaml.safe_dump(conf, default_flow_style=False))
    grains = dict(salt_cfg.get("grains") or {})
    grains.update(extra_grains or {})
    if host:
        grains["compute_host"] = host
    _write(os.path.join(etc, "grains"), yaml.safe_dump(grains, default_flow_style=False))
    # Where this hypervisor keeps the guest.  No root_dir: Salt would prefix it to
    # sock_dir, and AF_UNIX paths are limited to ~107 bytes.
    _write(
        os.path.join(etc, "minion.d", "zz-fakevm.conf"),
        yaml.safe_dump(
            {
                "conf_file": os.path.join(etc, "minion"),
                "pki_dir": os.path.join(etc, "pki", "minion"),
                "cachedir": os.path.join(root, "cache"),
                "sock_dir": sock_dir(server_id),
                "pidfile": os.path.join(root, "run", "salt-minion.pid"),
                "log_file": os.path.join(root, "minion.log"),
                "log_level_logfile": "info",
                "user": "root",
                # the guest's init system: what ``minion.restart`` (and the pack's
                # vmops_minion.reidentify) restarts the minion with
                "minion_restart_command": [
                    sys.executable,
                    os.path.abspath(__file__),
                    "restart",
                    root,
                ],
            }
        ),
    )
    pki = os.path.join(root, "etc", "salt", "pki", "minion")
    if salt_cfg.get("public_key") and salt_cfg.get("private_key"):
        _write(os.path.join(pki, "minion.pub"), salt_cfg["public_key"], 0o644)
        _write(os.path.join(pki, "minion.pem"), salt_cfg["private_key"], 0o400)
    # runcmd, as far as this hypervisor understands it: the lines that print the key
    runcmd = [c for c in (cfg.get("runcmd") or []) if isinstance(c, str)]
    _start_minion(server_id, root, etc, pki, runcmd)
    return {"minion": True, "id": conf.get("id")}


def _start_minion(server_id, root, etc, pki, runcmd=()):
    log = open(os.path.join(root, "minion.out"), "ab")  # pylint: disable=consider-using-with
    env = dict(os.environ)
    env.pop("PYTHONPATH", None)
    # what a command run on this guest can tell it apart by (its own disk, as on a real VM)
    env["VMOPS_GUEST_DIR"] = root
    proc = subprocess.Popen(  # pylint: disable=consider-using-with
        [SALT_MINION, "-c", etc, "--log-level=quiet"],
        stdin=subprocess.DEVNULL,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
        close_fds=True,
        env=env,
        cwd=root,
    )
    log.close()
    _write(os.path.join(root, "minion.pid"), str(proc.pid))
    _console(root, "ci-info: salt-minion started (pid %d)" % proc.pid)
    # The minion writes minion.pub on its first start when none was given.
    pub_path = os.path.join(pki, "minion.pub")
    deadline = time.time() + 30
    while time.time() < deadline and not os.path.exists(pub_path):
        if proc.poll() is not None:
            _console(root, "ci-info: salt-minion exited with %s" % proc.returncode)
            return
        time.sleep(0.1)
    pub = _read(pub_path)
    if pub:
        _console(root, FINGERPRINT_PREFIX + key_fingerprint(pub))
        for cmd in runcmd:
            match = _PUBKEY_TAG.search(cmd)
            if match:
                _console(
                    root,
                    "%s%s]: %s"
                    % (PUBKEY_MARKER, match.group(1), base64.b64encode(pub.encode()).decode()),
                )
    _console(root, "Cloud-init v. 23.1.2 finished.")


def set_host(server_id, host):
    """Record a new compute host (after a migration) in the guest's grains file."""
    path = os.path.join(vm_dir(server_id), "etc", "salt", "grains")
    text = _read(path)
    if text is None:
        return
    grains = yaml.safe_load(text) or {}
    grains["compute_host"] = host
    _write(path, yaml.safe_dump(grains, default_flow_style=False))
    _console(vm_dir(server_id), "ci-info: now running on %s" % host)


def power_off(server_id):
    """Stop the minion but keep the guest's disk (its directory)."""
    pid = minion_pid(server_id)
    if pid:
        _kill(pid)
        _console(vm_dir(server_id), "reboot: Power down")


def power_on(server_id):
    """Start the minion of a stopped guest again, with the files it already has."""
    root = vm_dir(server_id)
    etc = os.path.join(root, "etc", "salt")
    if minion_pid(server_id) or not os.path.exists(os.path.join(etc, "minion")):
        return
    _start_minion(server_id, root, etc, os.path.join(etc, "pki", "minion"))


def destroy(server_id):
    """Pull the plug and delete the guest's disk.  A hypervisor's destroy is a hard power
    off (libvirt's virDomainDestroy; Nova's graceful shutdown belongs to stop, not to
    delete): the guest's processes get SIGKILL at once, no grace period."""
    pid = minion_pid(server_id)
    if pid:
        _kill(pid, timeout=0)
    for other in _guest_pids(vm_dir(server_id)):  # every process of the guest
        try:
            os.kill(other, signal.SIGKILL)
        except ProcessLookupError:
            pass
    shutil.rmtree(vm_dir(server_id), ignore_errors=True)
    shutil.rmtree(sock_dir(server_id), ignore_errors=True)


def console(server_id):
    return _read(os.path.join(vm_dir(server_id), "console.log"), "")


def _signal_group(pid, sig):
    """Signal the guest's process group (its minion and what it runs); False: gone."""
    try:
        os.killpg(pid, sig)
    except ProcessLookupError:
        return False
    except PermissionError:
        os.kill(pid, sig)
    return True


def _kill(pid, timeout=2):
    if not _signal_group(pid, signal.SIGTERM):
        return
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return
        # reap it if it is our own child
        try:
            os.waitpid(pid, os.WNOHANG)
        except ChildProcessError:
            pass
        stat = _read("/proc/%d/stat" % pid, "")
        if stat and stat.rsplit(")", 1)[-1].split()[0] == "Z":
            break  # dead, its parent (another process) has not reaped it yet
        time.sleep(0.1)
    try:
        os.killpg(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def running_guests():
    """Server ids whose minion runs now."""
    try:
        names = os.listdir(VMS_DIR)
    except FileNotFoundError:
        return []
    return [n for n in names if minion_pid(n)]


def power_loss(host):
    """A compute host loses power: the minions of the guests it runs die at once (their
    disks stay).  Returns the server ids hit."""
    hit = []
    for server_id in running_guests():
        grains = (
            yaml.safe_load(
                _read(os.path.join(vm_dir(server_id), "etc", "salt", "grains"), "") or ""
            )
            or {}
        )
        if grains.get("compute_host") != host:
            continue
        pid = minion_pid(server_id)
        if pid:
            _signal_group(pid, signal.SIGKILL)
            hit.append(server_id)
    return hit


def stop_all():
    """Stop every guest's minion (used when the whole test cloud stops)."""
    for server_id in running_guests():
        power_off(server_id)


def _guest_pids(root):
    """The live processes of guest ``root`` (every process the guest's minion started
    carries VMOPS_GUEST_DIR), except this one and its parents."""
    mine = {os.getpid(), os.getppid()}
    marker = ("VMOPS_GUEST_DIR=%s" % root).encode()
    # Salt's process titles (setproctitle) write over a process's environ and argv area:
    # a minion's child can lose the marker, but its command line still names the guest's
    # config directory (salt-minion -c <root>/etc/salt ...)
    conf = os.path.join(root, "etc", "salt").encode()
    pids = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) in mine:
            continue
        try:
            with open("/proc/%s/environ" % entry, "rb") as fh:
                if marker not in fh.read().split(b"\0"):
                    with open("/proc/%s/cmdline" % entry, "rb") as cmd:
                        if conf not in cmd.read():
                            continue
            stat = _read("/proc/%s/stat" % entry, "")
        except OSError:
            continue
        if stat and stat.rsplit(")", 1)[-1].split()[0] != "Z":
            pids.append(int(entry))
    return pids


def restart(root, salt_minion=None):
    """The guest's ``systemctl restart salt-minion``: the minion's process tree stops and
    a new minion starts with the guest's (possibly changed) configuration and keys."""
    global VMS_DIR, SALT_MINION  # pylint: disable=global-statement
    VMS_DIR = os.path.dirname(root.rstrip("/"))
    server_id = os.path.basename(root.rstrip("/"))
    pid = minion_pid(server_id)
    if pid:
        cmdline = _read("/proc/%d/cmdline" % pid, "").split("\0")
        found = [c for c in cmdline if os.path.basename(c) == "salt-minion"]
        SALT_MINION = salt_minion or (found[0] if found else SALT_MINION)
        _signal_group(pid, signal.SIGTERM)
    # as systemd does: every process of the unit is gone before it starts again
    # (SIGTERM, then after TimeoutStopSec -- 5 s here -- SIGKILL)
    for sig, wait in ((signal.SIGTERM, 5), (signal.SIGKILL, 5)):
        deadline = time.time() + wait
        while _guest_pids(root) and time.time() < deadline:
            for other in _guest_pids(root):
                try:
                    os.kill(other, sig)
                except ProcessLookupError:
                    pass
            time.sleep(0.2)
    # its pid files name dead processes now (a zombie's pid may still "exist" to Salt's
    # check, which would refuse to start: "An instance is already running")
    for name in ("salt-minion.pid", "process_responsibility_salt-minion.pid"):
        try:
            os.unlink(os.path.join(root, "run", name))
        except FileNotFoundError:
            pass
    etc = os.path.join(root, "etc", "salt")
    _console(root, "systemd[1]: Restarting salt-minion.service")
    _start_minion(server_id, root, etc, os.path.join(etc, "pki", "minion"))


if __name__ == "__main__":
    if len(sys.argv) >= 3 and sys.argv[1] == "restart":
        restart(sys.argv[2])
