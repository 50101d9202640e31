"""Benchmark: a burst of servers booted outside the pack, admitted and highstated by the reactor.

Starts a salt-master of its own (the demo's, see tests/harness/demo.py) with
the pack's reactor configuration and an auto-provisioning rule, boots N
servers on the local cloud straight through openstacksdk (as an autoscaler
would, with the opt-in metadata and a launch template's user-data), and
times each one from its boot request to ``vmops/provision/<id>/done``.
Nobody touches salt-key.

Then the same burst with what a user would otherwise set up (``--mode both``, the
default, runs them back to back): the master's ``auto_accept: True`` and a one-line
reactor that highstates every ``salt/minion/*/start``, timed to each highstate's return.
The pack's admission reads each server's console through the cloud API and checks its
registration before it accepts; the naive setup accepts any key that knocks.

Usage (after `make demo` or `make test` installed things):
    /var/tmp/vmops/venv/bin/python bench/reactor_burst.py --servers 10
Prints first/median/last and writes $VMOPS_HOME/bench-reactor_burst.json.
"""

import argparse
import json
import os
import pathlib
import statistics
import sys
import time
import uuid

import yaml

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent.parent / "tests" / "harness"))
import demo  # noqa: E402  pylint: disable=wrong-import-position,import-error
import fakevm  # noqa: E402  pylint: disable=wrong-import-position,import-error

MARK = {"vmops-autoprovision": "bench"}


NAIVE_REACTOR = """highstate_every_new_minion:
  local.state.highstate:
    - tgt: {{ data['id'] }}
"""


def configure(ret_port, pub_port, mode="pack"):
    demo.write_config(ret_port, pub_port)
    path = demo.DEMO / "etc" / "master"
    master = yaml.safe_load(path.read_text())
    if mode == "naive":
        # what a user would otherwise run: every key accepted, every minion start highstated
        sls = demo.DEMO / "naive_highstate.sls"
        sls.write_text(NAIVE_REACTOR)
        master["auto_accept"] = True
        master["reactor"] = [{"salt/minion/*/start": [str(sls)]}]
        path.write_text(yaml.safe_dump(master))
        return
    snippet = yaml.safe_load((demo.REPO / "pillar.example" / "master.d" / "vmops.conf").read_text())
    master["reactor"] = snippet["reactor"]
    master["vmops"]["autoprovision"] = {
        "bench": {
            "cloud": "local",
            "metadata": MARK,
            "minion_id": "burst-[0-9a-f]+",
            "max_age": 900,
            "level": "staging",
        }
    }
    path.write_text(yaml.safe_dump(master))


def watch(done, mode="pack"):
    """Collect the end of each server's provisioning (minion -> (time, result)): the pack's
    vmops/provision/*/done, or (naive) the return of each minion's highstate job."""

    def seen(tag, data):  # pylint: disable=unused-argument
        if mode == "pack":
            done[data["minion"]] = (time.time(), data["result"])
        elif data.get("fun") == "state.highstate" and data.get("id"):
            done[data["id"]] = (time.time(), data.get("retcode") == 0)

    return demo.event_stream(
        "vmops/provision/*/done" if mode == "pack" else "salt/job/*/ret/*", seen
    )


def trace(events):
    """Every event on the master's bus, as (time, tag, data): for the per-server milestones."""
    return demo.event_stream("*", lambda tag, data: events.append((time.time(), tag, data)), 0)


def milestones(events, name, booted):
    """Seconds from the boot request to each step of one server's way in."""
    seen = {}

    def mark(what, when):
        seen.setdefault(what, round(when - booted, 2))

    jids = set()
    for when, tag, data in events:
        if tag == "salt/auth" and data.get("id") == name:
            mark("auth_%s" % data.get("act"), when)
        elif tag.startswith("vmops/key/%s/" % name):
            mark("key_" + tag.rsplit("/", 1)[1], when)
        elif tag == "salt/minion/%s/start" % name:
            mark("minion_start", when)
        elif tag.startswith("vmops/provision/%s/" % name):
            mark("provision_" + tag.rsplit("/", 1)[1], when)
        elif tag.startswith("salt/run/") and tag.endswith("/new"):
            arg = json.dumps(data.get("fun_args") or [])
            if name in arg:
                mark("runner_%s" % data.get("fun"), when)
        elif tag.startswith("salt/job/") and tag.endswith("/new"):
            if data.get("fun") == "state.highstate" and name in (data.get("minions") or []):
                jids.add(data.get("jid"))
                mark("highstate_published", when)
        elif tag.startswith("salt/job/") and "/ret/%s" % name in tag:
            if data.get("jid") in jids:
                mark("highstate_returned", when)
    return dict(sorted(seen.items(), key=lambda kv: kv[1]))


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--servers", type=int, default=10)
    parser.add_argument("--timeout", type=int, default=600)
    parser.add_argument(
        "--trace",
        action="store_true",
        help="also record every event and report each server's milestones (median per step)",
    )
    parser.add_argument(
        "--mode",
        choices=("pack", "naive", "both"),
        default="both",
        help="the pack's vouching admission, the naive auto_accept + highstate reactor, or "
        "both back to back (default)",
    )
    args = parser.parse_args()
    modes = ("pack", "naive") if args.mode == "both" else (args.mode,)
    results = {mode: burst(mode, args.servers, args.timeout, args.trace) for mode in modes}
    out = demo.HOME / "bench-reactor_burst.json"
    out.write_text(json.dumps(results, indent=1))
    print(
        "\n%-6s %8s %8s %8s %8s %22s"
        % ("mode", "servers", "first", "median", "last", "first boot->last done")
    )
    for mode, summary in results.items():
        print(
            "%-6s %8s %8s %8s %8s %22s"
            % (
                mode,
                summary["highstated"],
                summary["first_s"],
                summary["median_s"],
                summary["last_s"],
                summary["first_boot_to_last_done_s"],
            )
        )
    if len(results) == 2 and all(r["first_boot_to_last_done_s"] for r in results.values()):
        print(
            "pack / naive: burst %.2f x, median per server %.2f x"
            % (
                results["pack"]["first_boot_to_last_done_s"]
                / results["naive"]["first_boot_to_last_done_s"],
                results["pack"]["median_s"] / results["naive"]["median_s"],
            )
        )
    print("written to %s" % out)
    failed = [n for r in results.values() for n in r["failed"]]
    if failed:
        raise SystemExit("not provisioned: %s" % ", ".join(failed))


def burst(mode, servers, timeout, traced=False):
    sys.path.insert(0, str(demo.REPO / "_utils"))
    from vmopslib import openstack as vos  # pylint: disable=import-outside-toplevel,import-error

    demo.shutil.rmtree(demo.DEMO, ignore_errors=True)
    ret_port, pub_port = demo.free_port(), demo.free_port()
    configure(ret_port, pub_port, mode)
    master = demo.start_master()
    conn = vos.connect(
        {
            "name": "local",
            "cloud": "local-admin",
            "client_config_file": str(demo.HOME / "cloud" / "clouds.yaml"),
        }
    )
    names = ["burst-%s" % uuid.uuid4().hex[:6] for _ in range(servers)]
    booted_at, ids, done, events = {}, {}, {}, []
    watcher = tracer = None
    try:
        demo.salt("salt-run", "saltutil.sync_all", quiet=True)
        watcher = watch(done, mode)
        if traced:
            tracer = trace(events)
        image = conn.image.find_image("fake-image")
        flavor = conn.compute.find_flavor("m1.fake")
        net = conn.network.find_network("private")
        for name in names:
            booted_at[name] = time.time()
            ids[name] = conn.compute.create_server(
                name=name,
                image_id=image.id,
                flavor_id=flavor.id,
                networks=[{"uuid": net.id}],
                metadata=MARK,
                user_data=vos.encode_user_data(fakevm.launch_template(name, ret_port)),
            ).id
        deadline = time.time() + timeout
        while len(done) < len(names) and time.time() < deadline:
            time.sleep(0.5)
    finally:
        for server_id in ids.values():
            conn.compute.delete_server(server_id)
        for name in names:
            demo.salt("salt-key", "-d", name, "-y", check=False, quiet=True)
        if watcher:
            demo.stop(watcher)
        if tracer:
            demo.stop(tracer)
        demo.stop(master)
    took = {n: done[n][0] - booted_at[n] for n in names if n in done}
    failed = [n for n in names if n not in done or not done[n][1]]
    summary = {
        "servers": len(names),
        "highstated": len(names) - len(failed),
        "failed": failed,
        "first_s": round(min(took.values()), 2) if took else None,
        "median_s": round(statistics.median(took.values()), 2) if took else None,
        "last_s": round(max(took.values()), 2) if took else None,
        "first_boot_to_last_done_s": round(
            max(d[0] for d in done.values()) - min(booted_at.values()), 2
        )
        if done
        else None,
        "per_server_s": {n: round(t, 2) for n, t in sorted(took.items(), key=lambda kv: kv[1])},
    }
    if traced:
        per = {n: milestones(events, n, booted_at[n]) for n in names}
        steps = sorted(
            {k for m in per.values() for k in m},
            key=lambda k: statistics.median(m[k] for m in per.values() if k in m),
        )
        summary["milestones_median_s"] = {
            k: round(statistics.median(m[k] for m in per.values() if k in m), 2) for k in steps
        }
        summary["milestones"] = per
        print("%s milestones (median s after the boot request):" % mode)
        for k, v in summary["milestones_median_s"].items():
            print("   %-28s %6.2f" % (k, v))
    print(
        "%s: burst of %d: %d highstated; boot -> highstated first %ss, median %ss, last %ss; "
        "first boot -> last done %ss"
        % (
            mode,
            summary["servers"],
            summary["highstated"],
            summary["first_s"],
            summary["median_s"],
            summary["last_s"],
            summary["first_boot_to_last_done_s"],
        ),
        flush=True,
    )
    return summary


if __name__ == "__main__":
    os.environ.setdefault("VMOPS_HOME", "/var/tmp/vmops")
    main()
