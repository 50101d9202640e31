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
        # the replacement's identity hand-over waits for the master's AES key rotation,
        # which happens every loop_interval seconds (default 60)
        "loop_interval": 5,
        "file_roots": {
            "base": [str(REPO), str(REPO / "tests" / "integration" / "files" / "state")]
        },
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
        stdout=log,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        start_new_session=True,
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
        say("clean up: delete %s and its floating IP, stop the demo master" % VM)
        salt("salt-run", "vmops.delete", VM, check=False)
        for address in ADDRESS:
            salt(
                "salt-run",
                "salt.cmd",
                "vmops.floating_ip_release",
                address,
                "force=True",
                check=False,
            )
        stop(master)
    print("\n== Summary")
    width = max(len(name) for name, _, _ in STEPS)
    for name, took, detail in STEPS:
        print("   %-*s %6.1fs  %s" % (width, name, took, detail))
    print("   %-*s %6.1fs" % (width, "total", sum(t for _, t, _ in STEPS)))


def orch(sls, pillar, *extra):
    """Run an orchestration; return (ok, {step id: state})."""
    data, _ = salt(
        "salt-run", "state.orch", sls, "pillar=%s" % json.dumps(pillar), *extra, check=False
    )
    states = next(iter((data or {}).get("data", {}).values()), {})
    if isinstance(states, list):  # a render error
        raise SystemExit("demo: %s did not render: %s" % (sls, states))
    ok = bool(states) and all(st.get("result") is not False for st in states.values())
    return ok, {key.split("_|-")[1]: st for key, st in states.items()}


def event_stream(tagmatch, on_event, settle=2):
    """A ``salt-run state.event`` process for ``tagmatch`` on the demo master;
    ``on_event(tag, data)`` is called for each event, in a thread of its own (lines that are
    not events, e.g. the watcher's own exit, are skipped).  Returns the process: ``stop`` it."""
    proc = subprocess.Popen(  # pylint: disable=consider-using-with
        [
            str(BIN / "salt-run"),
            "-c",
            str(DEMO / "etc"),
            "--log-level=quiet",
            "state.event",
            "tagmatch=%s" % tagmatch,
            "count=-1",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        start_new_session=True,
    )

    def pump():
        for line in proc.stdout:
            tag, _, payload = line.partition("\t")
            try:
                data = json.loads(payload)
            except ValueError:
                continue
            on_event(tag.strip(), data)

    import threading  # pylint: disable=import-outside-toplevel

    threading.Thread(target=pump, daemon=True).start()
    time.sleep(settle)  # let it subscribe
    return proc


def watch_events(tag):
    """Print the pack's events for ``tag`` as they arrive (a salt-run state.event process)."""
    return event_stream(
        tag,
        lambda tag_, data: print(
            "   [event] %-34s %s" % (tag_, data.get("message", "")), flush=True
        ),
    )


def run(ret_port):  # pylint: disable=unused-argument
    say("sync the pack from the state tree (salt-run saltutil.sync_all)")
    step(
        "sync the pack",
        lambda: (
            "runners: %s" % ", ".join(salt("salt-run", "saltutil.sync_all")[0]["runners"])
            or "already synced"
        ),
    )

    existing, _ = salt("salt-run", "vmops.show", VM, check=False, quiet=True)
    if isinstance(existing, dict) and existing.get("id"):
        salt("salt-run", "vmops.delete", VM)

    say(
        "the VM in service today: %s, booted and highstated by orch.create_vm, with a floating IP"
        % VM
    )

    def create():
        ok, states = orch("orch.create_vm", {"vm": VM})
        if not ok:
            raise SystemExit("demo: orch.create_vm failed: %s" % states)
        return "%d steps: %s" % (len(states), ", ".join(states))

    step("orch.create_vm %s" % VM, create)

    def floating_ip():
        fip, _ = salt("salt-run", "salt.cmd", "vmops.floating_ip_allocate")
        salt("salt-run", "vmops.flip_floating_ip", fip["address"], VM)
        ADDRESS.append(fip["address"])
        return "%s -> %s" % (fip["address"], VM)

    step("floating IP", floating_ip)
    old, _ = salt("salt-run", "vmops.show", VM, quiet=True)

    say("what would a replacement do? (test=True changes nothing)")

    def plan():
        _, states = orch("orch.replace_vm", {"vm": VM, "flavor": "lightspeed"}, "test=True")
        (state,) = states.values()
        return state["comment"]

    step("replace_vm plan", plan)

    say(
        "replace %s with a bigger one, same name, no downtime; the pack's events as they happen"
        % VM
    )
    watcher = watch_events("vmops/replace/%s/*" % VM)
    try:

        def replace():
            ok, states = orch("orch.replace_vm", {"vm": VM, "flavor": "lightspeed"})
            failed = [k for k, st in states.items() if st.get("result") is False]
            if not ok:
                raise SystemExit("demo: replace_vm failed at %s" % failed)
            return "%d orchestration steps succeeded" % len(states)

        step("orch.replace_vm %s" % VM, replace)
    finally:
        time.sleep(1)
        os.killpg(watcher.pid, signal.SIGTERM)

    say("after: one %s, the new one, with the floating IP; the old one is gone" % VM)

    def after():
        new, _ = salt("salt-run", "vmops.show", VM)
        if new["id"] == old["id"] or new["floating_ips"] != ADDRESS:
            raise SystemExit("demo: unexpected result %s" % new)
        answer, _ = salt("salt", VM, "grains.item", "level", "compute_host")
        return "%s (%s, %s on %s) has %s; minion answers, level=%s; old %s deleted" % (
            VM,
            new["id"][:8],
            new["flavor"],
            new["host"],
            ", ".join(new["floating_ips"]),
            answer[VM].get("level"),
            old["id"][:8],
        )

    step("check", after)
    status, _ = salt("salt-run", "vmops.replace_vm", VM, "step=status", quiet=True)
    print("\n== The replacement, step by step (from its journal)")
    for name, _, took, comment in status["steps"]:
        print("   %-8s %6.1fs  %s" % (name, took or 0, comment))


ADDRESS = []


if __name__ == "__main__":
    main()
