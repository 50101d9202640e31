"""Emulate a compute host's reboot for the test world (see compute_modules/system.py).

Runs detached from the minion that asked for it: stops that minion (its process tree) and the
host's nova-compute (cloud.sh compute-stop), waits, writes a new boot id, starts
nova-compute again, then a new salt-minion with the same configuration.  The new minion's
PID goes to <config-dir>/restarted.pid so the fixture that owns the host stops it by PID.
"""

import argparse
import os
import subprocess
import sys
import time
import uuid

import psutil


def _stop(pid):
    """Stop the minion as a power cut would: its whole process tree (the keepalive
    parent included, so nothing respawns it), from its main process ``pid`` up."""
    try:
        proc = psutil.Process(pid)
    except psutil.Error:
        return
    top = proc
    while True:
        parent = top.parent()
        try:
            if parent is None or "salt-minion" not in " ".join(parent.cmdline()):
                break
        except psutil.Error:
            break
        top = parent
    procs = [top] + top.children(recursive=True)
    for each in procs:
        try:
            each.kill()  # a power cut: no clean shutdown
        except psutil.Error:
            pass
    psutil.wait_procs(procs, timeout=10)


def main():
    parser = argparse.ArgumentParser()
    for opt in ("host", "run-dir", "config-dir", "boot-id-file", "cloud-sh", "salt-minion"):
        parser.add_argument("--" + opt, required=True)
    parser.add_argument("--pid", type=int, required=True)
    parser.add_argument("--delay", type=float, default=3)
    args = parser.parse_args()
    time.sleep(0.5)  # let the minion return the reboot job first, as a real reboot would
    print("%s rebooting %s" % (time.strftime("%H:%M:%S"), args.host), flush=True)
    _stop(args.pid)
    # /run is a tmpfs: a reboot starts without the old pid files (the killed minion is a
    # zombie until the test process reaps it, and Salt would take it for a live instance)
    for name in os.listdir(args.run_dir):
        if name.endswith(".pid"):
            os.unlink(os.path.join(args.run_dir, name))
    subprocess.run(["bash", args.cloud_sh, "compute-stop", args.host], check=False)
    time.sleep(args.delay)
    with open(args.boot_id_file + ".tmp", "w", encoding="utf-8") as fh:
        fh.write(str(uuid.uuid4()) + "\n")
    os.replace(args.boot_id_file + ".tmp", args.boot_id_file)
    subprocess.run(["bash", args.cloud_sh, "compute-start", args.host], check=False)
    log = open(os.path.join(args.config_dir, "minion-restarted.log"), "ab")  # noqa: SIM115
    proc = subprocess.Popen(  # pylint: disable=consider-using-with
        [args.salt_minion, "-c", args.config_dir],
        stdout=log,
        stderr=log,
        stdin=subprocess.DEVNULL,
        start_new_session=True,
    )
    with open(os.path.join(args.config_dir, "restarted.pid"), "w", encoding="utf-8") as fh:
        fh.write(str(proc.pid))
    print(
        "%s %s back (minion pid %d)" % (time.strftime("%H:%M:%S"), args.host, proc.pid), flush=True
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
