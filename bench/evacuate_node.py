"""Benchmark: emptying a compute node three ways, on the same local cloud, in one run.

(A) the Ops Guide's loop: ``openstack server migrate --live-migration --wait <id>``
    per server, one after the other;
(B) ``nova host-evacuate-live <node>``, then polling until the node is empty
    (it returns as soon as the requests are accepted and verifies nothing);
(C) the pack: ``Evacuation.run`` (what ``salt-run vmops.evacuate_node`` runs),
    which also disables the node, checks capacity in Placement, and verifies
    every move (host changed, migration record completed, state as before).

For each, N fresh servers are booted on the node first.  Also reported:

* the cloud API requests (C) makes per evacuated server (keystoneauth's
  requests, counted in-process, token requests included);
* Nova's own busy time: from the first migration record's creation to the last
  one's completion.  Nova runs one live migration per source host at a time
  (``max_concurrent_live_migrations = 1``), so this span is the floor no client
  can beat on this cloud; the table says how close each way gets to it.

Usage (after `make test` or `make demo` set up the cloud and the venv):
    /var/tmp/vmops/venv/bin/python bench/evacuate_node.py --servers 8
    /var/tmp/vmops/venv/bin/python bench/evacuate_node.py --servers 20 --concurrency 1 3
Writes $VMOPS_HOME/bench-evacuate_node-<N>.json.
"""

import argparse
import datetime
import json
import os
import pathlib
import subprocess
import sys
import time
import uuid

ROOT = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "_utils"))

import keystoneauth1.session  # noqa: E402

from vmopslib import evacuate  # noqa: E402
from vmopslib import openstack as vos  # noqa: E402
from vmopslib.store import JournalStore  # noqa: E402

HOME = pathlib.Path(os.environ.get("VMOPS_HOME", "/var/tmp/vmops"))
CLOUDS = HOME / "cloud" / "clouds.yaml"
NODE = "cmp1"


class Counter:
    """Counts every HTTP request keystoneauth sends in this process."""

    def __init__(self):
        self.count = 0
        self._orig = keystoneauth1.session.Session.request
        counter = self

        def request(session, url, method, *args, **kwargs):
            counter.count += 1
            return counter._orig(session, url, method, *args, **kwargs)

        keystoneauth1.session.Session.request = request


def conn():
    return vos.connect({"name": "local", "cloud": "local-admin", "client_config_file": str(CLOUDS)})


def cli_env():
    env = dict(
        os.environ,
        OS_AUTH_URL="http://127.0.0.1:5000/v3",
        OS_USERNAME="admin",
        OS_PASSWORD=os.environ.get("PW", "secret"),
        OS_PROJECT_NAME="admin",
        OS_USER_DOMAIN_NAME="Default",
        OS_PROJECT_DOMAIN_NAME="Default",
        OS_REGION_NAME="RegionOne",
        OS_IDENTITY_API_VERSION="3",
        OS_COMPUTE_API_VERSION="2.25",
        PYTHONWARNINGS="ignore",
    )
    for key in ("OS_CLOUD", "OS_CLIENT_CONFIG_FILE"):
        env.pop(key, None)
    return env


def boot(c, n, tag):
    image = c.image.find_image("fake-image")
    flavor = c.compute.find_flavor("m1.fake")
    net = c.network.find_network("private")
    servers = [
        c.compute.create_server(
            name="bench-ev-%s-%02d" % (tag, i),
            image_id=image.id,
            flavor_id=flavor.id,
            networks=[{"uuid": net.id}],
            availability_zone="nova:%s" % NODE,
        )
        for i in range(n)
    ]
    out = []
    for server in servers:
        out.append(c.compute.wait_for_server(server, wait=300))
    return out


def on_node(c):
    return [
        s
        for s in c.compute.servers(all_projects=True, compute_host=NODE)
        if s.name.startswith("bench-ev-")
    ]


def settle(c, ids, timeout=600):
    """Wait until none of ``ids`` is busy; True when all left the node."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        servers = [c.compute.get_server(i) for i in ids]
        if all(not s.task_state for s in servers):
            return all(s.compute_host != NODE for s in servers)
        time.sleep(0.2)
    return False


def nova_span(c, ids, since):
    migs = [
        m
        for m in c.compute.migrations(host=NODE, changes_since=since)
        if m.server_id in ids and m.migration_type == "live-migration"
    ]
    if not migs:
        return None

    def ts(value):
        return datetime.datetime.fromisoformat(value.replace("Z", "")).timestamp()

    return round(max(ts(m.updated_at) for m in migs) - min(ts(m.created_at) for m in migs), 2)


def cleanup(c):
    for server in c.compute.servers(all_projects=True, name="^bench-ev-"):
        c.compute.delete_server(server)
    for svc in c.compute.services(binary="nova-compute"):
        if svc.status == "disabled" and (svc.disabled_reason or "").startswith("vmops-evacuate"):
            c.compute.enable_service(svc, host=svc.host, binary="nova-compute")


def way_a(c, servers):
    env = cli_env()
    for server in servers:
        subprocess.run(
            ["openstack", "server", "migrate", "--live-migration", "--wait", server.id],
            check=True,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )


def way_b(c, servers):
    subprocess.run(
        ["nova", "host-evacuate-live", NODE],
        check=True,
        env=cli_env(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    settle(c, [s.id for s in servers])


def way_c(c, servers, concurrency, counter):
    del servers
    prov = vos.OpenStackProvider({"name": "local", "driver": "openstack"}, conn=c)
    store = JournalStore(str(HOME / "bench-evacuate"), what="evacuation")
    before = counter.count
    report = evacuate.Evacuation(
        prov, store, evacuate.options({}, {"concurrency": concurrency}), who="bench"
    ).run(NODE, "bench")
    if not report["result"]:
        raise SystemExit("bench: the pack's evacuation failed: %s" % report["comment"])
    moved = report["counts"].get("moved", 0)
    return counter.count - before, moved, report


def measure(c, n, label, fn, *args):
    cleanup(c)
    servers = boot(c, n, label.lower().replace(" ", "")[:6] + uuid.uuid4().hex[:4])
    ids = {s.id for s in servers}
    since = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() - 5))
    t0 = time.monotonic()
    extra = fn(c, servers, *args)
    wall = round(time.monotonic() - t0, 2)
    left = [s.name for s in on_node(c) if s.id in ids]
    span = nova_span(c, ids, since)
    cleanup(c)
    return {
        "way": label,
        "wall": wall,
        "nova_span": span,
        "left_on_node": len(left),
        "extra": extra,
    }


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--servers", type=int, default=8)
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 3])
    parser.add_argument("--skip-a", action="store_true", help="leave out the slow loop (A)")
    args = parser.parse_args()
    counter = Counter()
    c = conn()
    rows = []
    if not args.skip_a:
        rows.append(measure(c, args.servers, "A openstack migrate --wait loop", way_a))
    rows.append(measure(c, args.servers, "B nova host-evacuate-live + poll", way_b))
    for conc in args.concurrency:
        row = measure(
            c, args.servers, "C vmops.evacuate_node concurrency=%d" % conc, way_c, conc, counter
        )
        requests, moved, _ = row.pop("extra")
        row["requests"] = requests
        row["requests_per_server"] = round(requests / max(moved, 1), 2)
        rows.append(row)
    for row in rows:
        row.pop("extra", None)
    b_wall = next(r["wall"] for r in rows if r["way"].startswith("B"))
    a_wall = next((r["wall"] for r in rows if r["way"].startswith("A")), None)
    print("\nEmptying %s of %d servers (local cloud, fake hypervisor):\n" % (NODE, args.servers))
    print(
        "%-40s %8s %10s %8s %8s %10s %6s"
        % ("way", "wall s", "nova span", "xB", "A/x", "req/srv", "left")
    )
    for row in rows:
        print(
            "%-40s %8.2f %10s %8.2f %8s %10s %6d"
            % (
                row["way"],
                row["wall"],
                row["nova_span"],
                row["wall"] / b_wall,
                "%.2f" % (a_wall / row["wall"]) if a_wall else "-",
                row.get("requests_per_server", "-"),
                row["left_on_node"],
            )
        )
    out = HOME / ("bench-evacuate_node-%d.json" % args.servers)
    out.write_text(json.dumps({"servers": args.servers, "rows": rows}, indent=1))
    print("\nwritten to %s" % out)


if __name__ == "__main__":
    main()
