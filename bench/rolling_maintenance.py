"""Benchmark: a rolling maintenance of the local cloud's three computes, with servers on each.

Runs ``maintenance.Maintenance`` (what ``salt-run vmops.rolling_maintenance`` runs) in this
process against the real local cloud: every node is evacuated (live migrations by Nova,
each verified), maintained, rebooted, gated and enabled again, one batch at a time.  The
node side is emulated here, without salt-minions (the integration test has those): the
maintenance is a local command, a reboot stops the host's nova-compute
(``cloud.sh compute-stop``), waits ``--reboot-delay`` seconds, writes a new boot id and
starts nova-compute again; the run waits for the new boot id and for nova-compute's first
heartbeat after it, as it does on real hosts.

Reports the wall time and how much of it each step took (summed over the nodes).

Usage (after `make test` or `make demo` set up the cloud and the venv):
    /var/tmp/vmops/venv/bin/python bench/rolling_maintenance.py --servers 5
Writes $VMOPS_HOME/bench-rolling_maintenance-<N>.json.
"""

import argparse
import json
import os
import pathlib
import subprocess
import sys
import tempfile
import threading
import time
import uuid

ROOT = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "_utils"))

from vmopslib import evacuate, maintenance  # noqa: E402
from vmopslib import openstack as vos  # noqa: E402
from vmopslib.store import JournalStore  # noqa: E402

HOME = pathlib.Path(os.environ.get("VMOPS_HOME", "/var/tmp/vmops"))
CLOUDS = HOME / "cloud" / "clouds.yaml"
CLOUD_SH = ROOT / "tests" / "harness" / "cloud.sh"
NODES = ["cmp1", "cmp2", "cmp3"]


class EmulatedHosts:
    """The node side without minions: boot ids in files, a reboot restarts nova-compute."""

    def __init__(self, workdir, delay):
        self.workdir, self.delay = pathlib.Path(workdir), delay
        self.down = set()
        for node in NODES:
            (self.workdir / node).write_text(str(uuid.uuid4()))

    def answers(self, node):
        return node not in self.down

    def boot_id(self, node):
        return None if node in self.down else (self.workdir / node).read_text()

    def reboot(self, node):
        self.down.add(node)

        def cycle():
            subprocess.run(["bash", str(CLOUD_SH), "compute-stop", node], check=True)
            time.sleep(self.delay)
            (self.workdir / node).write_text(str(uuid.uuid4()))
            subprocess.run(["bash", str(CLOUD_SH), "compute-start", node], check=True)
            self.down.discard(node)

        threading.Thread(target=cycle, daemon=True).start()

    def apply(self, node, action, pillar):  # pylint: disable=unused-argument
        proc = subprocess.run(action["cmd"], shell=True, capture_output=True, check=False)
        return proc.returncode == 0, "exit %d" % proc.returncode


def boot(c, per_node):
    image = c.image.find_image("fake-image")
    flavor = c.compute.find_flavor("m1.fake")
    net = c.network.find_network("private")
    servers = [
        c.compute.create_server(
            name="bench-rm-%s-%02d" % (node, i),
            image_id=image.id,
            flavor_id=flavor.id,
            networks=[{"uuid": net.id}],
            availability_zone="nova:%s" % node,
        )
        for node in NODES
        for i in range(per_node)
    ]
    return [c.compute.wait_for_server(s, wait=300) for s in servers]


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--servers", type=int, default=5, help="servers per node")
    parser.add_argument("--reboot-delay", type=float, default=5)
    parser.add_argument("--concurrency", type=int, default=1)
    args = parser.parse_args()
    profile = {"name": "local", "cloud": "local-admin", "client_config_file": str(CLOUDS)}
    c = vos.connect(profile)
    prov = vos.OpenStackProvider(dict(profile, driver="openstack"), conn=c)
    for s in c.compute.servers(all_projects=True):
        if s.name.startswith("bench-rm-"):
            c.compute.delete_server(s)
    t_boot = time.monotonic()
    servers = boot(c, args.servers)
    print("booted %d servers in %.1fs" % (len(servers), time.monotonic() - t_boot), flush=True)
    work = tempfile.mkdtemp(prefix="bench-rm-")
    evac = evacuate.Evacuation(
        prov,
        JournalStore(os.path.join(work, "evacuate"), "evacuation"),
        evacuate.options({}, {"concurrency": args.concurrency}),
    )
    run = maintenance.Maintenance(
        prov,
        JournalStore(os.path.join(work, "maintenance"), "maintenance"),
        evac,
        EmulatedHosts(work, args.reboot_delay),
        maintenance.options(
            {}, {"maintenance": {"cmd": "true"}, "reboot": True, "poll_interval": 1}
        ),
    )
    t0 = time.monotonic()
    report = run.run(NODES)
    wall = time.monotonic() - t0
    steps = {}
    for node in report["nodes"]:
        for step, took in node["durations"].items():
            steps[step] = round(steps.get(step, 0) + took, 1)
    out = {
        "servers_per_node": args.servers,
        "reboot_delay": args.reboot_delay,
        "result": report["result"],
        "wall": round(wall, 1),
        "steps": steps,
        "per_node": {n["node"]: n["durations"] for n in report["nodes"]},
    }
    print(json.dumps(out, indent=1))
    (HOME / ("bench-rolling_maintenance-%d.json" % args.servers)).write_text(
        json.dumps(out, indent=1)
    )
    for s in servers:
        c.compute.delete_server(s)
    return 0 if report["result"] else 1


if __name__ == "__main__":
    sys.exit(main())
