"""The README's demo: the pack on the local cloud, driven by the real salt CLIs.

Starts a salt-master of its own (config and state under $VMOPS_HOME/demo, on
127.0.0.1, free ports) whose state tree is this repository, syncs the pack the
way an operator would, then runs the runbook step by step, printing each
command and what came back, and ends with a summary.  Stops only the master it
started (by PID) and deletes only the VM it booted.
"""

import json
import os
import pathlib
import shutil
import signal
import socket
import subprocess
import sys
import time

import yaml

REPO = pathlib.Path(__file__).resolve().parent.parent.parent
HOME = pathlib.Path(os.environ.get("VMOPS_HOME", "/var/tmp/vmops"))
DEMO = HOME / "demo"
BIN = pathlib.Path(sys.executable).parent
VM = os.environ.get("VMOPS_DEMO_VM", "app2")

STEPS = []


def free_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def say(text):
    print("\n== %s" % text, flush=True)


def last_json(text):
    """The last JSON document of salt's output (salt-run prints progress events first)."""
    decoder, pos, data = json.JSONDecoder(), 0, None
    text = text.strip()
    while pos < len(text):
        try:
            data, end = decoder.raw_decode(text, pos)
        except ValueError:
            return data if data is not None else text
        pos = end
        while pos < len(text) and text[pos].isspace():
            pos += 1
    return data


def salt(tool, *args, check=True, quiet=False):
    """Run a salt CLI against the demo master; return its parsed JSON output."""
    cmd = [str(BIN / tool), "-c", str(DEMO / "etc"), "--out=json", "--log-level=quiet", *args]
    shown = " ".join([tool, *args])
    if not quiet:
        print("   $ %s" % shown, flush=True)
    t0 = time.monotonic()
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    took = time.monotonic() - t0
    data = last_json(proc.stdout)
    if check and proc.returncode != 0:
        print(proc.stdout, proc.stderr, file=sys.stderr)
        raise SystemExit("demo: `%s` failed (exit %s)" % (shown, proc.returncode))
    return data, took


def step(name, fn):
    t0 = time.monotonic()
    detail = fn()
    took = time.monotonic() - t0
    STEPS.append((name, took, detail))
    print("   -> %s (%.1fs)" % (detail, took), flush=True)


def write_config(ret_port, pub_port):
    etc = DEMO / "etc"
    etc.mkdir(parents=True, exist_ok=True)
    master = {
        "root_dir": str(DEMO),
        "interface": "127.0.0.1",
        "ret_port": ret_port,
        "publish_port": pub_port,
        "user": "root",
        "file_roots": {"base": [str(REPO), str(REPO / "tests" / "integration" / "files" / "state")]},
        "vmops": {
            "default_cloud": "local",
            "clouds": {
                "local": {
                    "driver": "openstack",
                    "cloud": "local-admin",
                    "client_config_file": str(HOME / "cloud" / "clouds.yaml"),
                }
            },
            "master": {"address": "127.0.0.1", "port": ret_port},
            "defaults": {
                "image": "fake-image",
                "flavor": "m1.fake",
                "networks": ["private"],
                "security_groups": ["default"],
                "minion_config": {"acceptance_wait_time": 1},
            },
            "vms": {VM: {"flavor": "m1.small", "level": "staging"}},
        },
    }
    (etc / "master").write_text(yaml.safe_dump(master))


def start_master():
    log = open(DEMO / "master.out", "ab")  # pylint: disable=consider-using-with
    proc = subprocess.Popen(  # pylint: disable=consider-using-with
        [str(BIN / "salt-master"), "-c", str(DEMO / "etc"), "--log-level=quiet"],
        stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True,
    )
    (DEMO / "master.pid").write_text(str(proc.pid))
    deadline = time.time() + 60
    while time.time() < deadline:
        data, _ = salt("salt-run", "test.stdout_print", check=False, quiet=True)
        if data is not None:
            return proc
        time.sleep(1)
    raise SystemExit("demo: the salt-master did not come up, see %s" % (DEMO / "master.out"))


def stop(proc):
    try:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(30)
    except (ProcessLookupError, subprocess.TimeoutExpired):
        pass


def wait_for(probe, timeout, what):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = probe()
        if value:
            return value
        time.sleep(0.5)
    raise SystemExit("demo: timed out waiting for %s" % what)


def main():
    old = DEMO / "master.pid"
    if old.exists():  # a demo master left by an interrupted run: ours, by PID
        try:
            os.killpg(int(old.read_text()), signal.SIGTERM)
        except (ProcessLookupError, ValueError):
            pass
    shutil.rmtree(DEMO, ignore_errors=True)
    ret_port, pub_port = free_port(), free_port()
    write_config(ret_port, pub_port)
    say("start a salt-master on 127.0.0.1:%s whose state tree is this repository" % ret_port)
    master = start_master()
    try:
        run(ret_port)
    finally:
        say("clean up: delete %s, stop the demo master" % VM)
        salt("salt-run", "vmops.delete", VM, check=False)
        stop(master)
    print("\n== Summary")
    width = max(len(name) for name, _, _ in STEPS)
    for name, took, detail in STEPS:
        print("   %-*s %6.1fs  %s" % (width, name, took, detail))
    print("   %-*s %6.1fs" % (width, "total", sum(t for _, t, _ in STEPS)))


def run(ret_port):  # pylint: disable=unused-argument
    say("sync the pack from the state tree (salt-run saltutil.sync_all)")
    step("sync the pack", lambda: "runners: %s" % ", ".join(
        salt("salt-run", "saltutil.sync_all")[0]["runners"]) or "already synced")

    existing, _ = salt("salt-run", "vmops.show", VM, check=False, quiet=True)
    if isinstance(existing, dict) and existing.get("id"):
        salt("salt-run", "vmops.delete", VM)

    say("boot %s with the pack's user-data (cloud-init installs salt-minion)" % VM)

    def boot():
        desc, _ = salt("salt-run", "vmops.create", VM)
        return "%s %s on %s, flavor %s, fixed IPs %s" % (
            desc["name"], desc["status"], desc["host"], desc["flavor"], desc["fixed_ips"])
    step("boot %s to ACTIVE" % VM, boot)

    say("wait for %s's key to arrive pending (salt-key -L)" % VM)

    def pending():
        wait_for(lambda: VM in (salt("salt-key", "-L", quiet=True)[0] or {}).get("minions_pre", []),
                 60, "the key of %s" % VM)
        return "%s is in Unaccepted Keys" % VM
    step("key pending", pending)

    say("accept it only if the cloud vouches for it (console fingerprint = pending key)")

    def accept():
        data, _ = salt("salt-run", "vmops.accept_minion", VM)
        return "accepted %s (fingerprint %s...)" % (VM, data["fingerprint"][:23])
    step("cloud-verified accept", accept)

    say("wait for the minion to answer (salt %s test.version)" % VM)

    def answer():
        def probe():
            data, _ = salt("salt", "--timeout=5", VM, "test.version", check=False, quiet=True)
            return isinstance(data, dict) and isinstance(data.get(VM), str) and data[VM]
        return "salt-minion %s answers" % wait_for(probe, 90, "%s to answer" % VM)
    step("minion answers", answer)

    say("the runbook's sanity check: salt %s grains.get level" % VM)

    def level():
        data, _ = salt("salt", VM, "grains.item", "level", "compute_host")
        item = data[VM]
        if item.get("level") != "staging":
            raise SystemExit("demo: level grain is %r, expected 'staging'" % item.get("level"))
        return "level=%s, running on %s" % (item["level"], item["compute_host"])
    step("level grain", level)

    say("highstate %s" % VM)

    def highstate():
        data, _ = salt("salt", VM, "state.highstate")
        states = data[VM]
        ok = sum(1 for s in states.values() if s.get("result"))
        return "%d/%d states succeeded" % (ok, len(states))
    step("highstate", highstate)


if __name__ == "__main__":
    main()
