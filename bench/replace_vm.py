"""Benchmark: a replacement's end-to-end time against the waits it cannot avoid.

Runs ``salt-run state.orch orch.replace_vm`` N times on the local cloud, with a
real salt-master (the demo's, see tests/harness/demo.py), and compares the wall
time of each run with the sum of what no implementation can skip:

* boot: the new server to ACTIVE (incl. the key hand-over),
* minion: the new minion's start until it answers,
* highstate: the highstate run itself (from the orchestration's state),
* flip: the floating IP's move.

Usage (after `make demo` or `make test` installed things):
    /var/tmp/vmops/venv/bin/python bench/replace_vm.py --runs 3
Prints a table and writes $VMOPS_HOME/bench-replace_vm.json.
"""

import argparse
import json
import os
import pathlib
import statistics
import sys
import time

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent.parent / "tests" / "harness"))
import demo  # noqa: E402  pylint: disable=wrong-import-position,import-error

VM = "bench-app"


def _timeline(states):
    """{state id: (start, end)} in seconds since midnight, from the orchestration's return."""
    out = {}
    for key, st in states.items():
        if not st.get("start_time"):
            continue
        h, m, sec = st["start_time"].split(":")
        start = int(h) * 3600 + int(m) * 60 + float(sec)
        out[key] = (start, start + (st.get("duration") or 0) / 1000.0)
    return dict(sorted(out.items(), key=lambda kv: kv[1][0]))


def t0_offset(timeline, wall):
    """When the salt-run began, on the timeline's clock: the end of the last state minus
    the wall time (the process's exit after it is small)."""
    return max(b for _, b in timeline.values()) - wall


def one_run(flavor):
    t0 = time.monotonic()
    ok, states = demo.orch("orch.replace_vm", {"vm": VM, "flavor": flavor})
    wall = time.monotonic() - t0
    if not ok:
        raise SystemExit(
            "bench: replace_vm failed: %s" % {k: v.get("comment") for k, v in states.items()}
        )
    status, _ = demo.salt("salt-run", "vmops.replace_vm", VM, "step=status", quiet=True)
    steps = {name: took or 0 for name, _, took, _ in status["steps"]}
    highstate = states["highstate"]["duration"] / 1000.0
    unavoidable = {
        "boot": steps["boot"],
        "minion": steps["wait"],
        "highstate": highstate,
        "flip": steps["flip"],
    }
    timeline = _timeline(states)
    return {
        "wall": round(wall, 2),
        "until_flipped": round(timeline["flip_floating_ips"][1] - t0_offset(timeline, wall), 2)
        if "flip_floating_ips" in timeline
        else None,
        "timeline": {k: [round(a, 2), round(b, 2)] for k, (a, b) in timeline.items()},
        "unavoidable": {k: round(v, 2) for k, v in unavoidable.items()},
        "unavoidable_total": round(sum(unavoidable.values()), 2),
        "steps": steps,
        "ratio": round(wall / sum(unavoidable.values()), 2),
        "ratio_until_flipped": round(
            (timeline["flip_floating_ips"][1] - t0_offset(timeline, wall))
            / sum(unavoidable.values()),
            2,
        )
        if "flip_floating_ips" in timeline
        else None,
    }


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    demo.VM = VM
    demo.shutil.rmtree(demo.DEMO, ignore_errors=True)
    ret_port, pub_port = demo.free_port(), demo.free_port()
    demo.write_config(ret_port, pub_port)
    master = demo.start_master()
    results = []
    try:
        demo.salt("salt-run", "saltutil.sync_all", quiet=True)
        existing, _ = demo.salt("salt-run", "vmops.show", VM, check=False, quiet=True)
        if isinstance(existing, dict) and existing.get("id"):
            demo.salt("salt-run", "vmops.delete", VM, quiet=True)
        ok, states = demo.orch("orch.create_vm", {"vm": VM})
        if not ok:
            raise SystemExit("bench: could not create %s: %s" % (VM, states))
        fip, _ = demo.salt("salt-run", "salt.cmd", "vmops.floating_ip_allocate", quiet=True)
        demo.salt("salt-run", "vmops.flip_floating_ip", fip["address"], VM, quiet=True)
        for i in range(args.runs):
            flavor = ("m1.small", "lightspeed")[i % 2]
            results.append(one_run(flavor))
            print("run %d: %s" % (i + 1, json.dumps(results[-1])), flush=True)
    finally:
        demo.salt("salt-run", "vmops.delete", VM, check=False, quiet=True)
        if "fip" in locals():
            demo.salt(
                "salt-run",
                "salt.cmd",
                "vmops.floating_ip_release",
                fip["address"],
                "force=True",
                check=False,
                quiet=True,
            )
        demo.stop(master)
    walls = [r["wall"] for r in results]
    unav = [r["unavoidable_total"] for r in results]
    summary = {
        "runs": len(results),
        "wall_median_s": statistics.median(walls),
        "unavoidable_median_s": statistics.median(unav),
        "ratio_median": statistics.median(r["ratio"] for r in results),
        "ratio_until_flipped_median": statistics.median(
            r["ratio_until_flipped"] for r in results if r["ratio_until_flipped"]
        ),
        "results": results,
    }
    out = demo.HOME / "bench-replace_vm.json"
    out.write_text(json.dumps(summary, indent=1))
    print(
        "\nreplace_vm, %d runs: wall %.1fs (median), unavoidable waits %.1fs, ratio %.2f "
        "(until the IP moved: %.2f)"
        % (
            len(results),
            summary["wall_median_s"],
            summary["unavoidable_median_s"],
            summary["ratio_median"],
            summary["ratio_until_flipped_median"],
        )
    )
    print("written to %s" % out)


if __name__ == "__main__":
    os.environ.setdefault("VMOPS_HOME", "/var/tmp/vmops")
    main()
