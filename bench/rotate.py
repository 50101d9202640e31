"""Benchmark: rotating N VMs with ``orch.rotate`` (batch 1, 2, 5...) against the naive
loop of ``orch.replace_vm`` one VM at a time, in the same run, on the local cloud.

Every pass replaces all N VMs (the VMs of one pass are the next pass's old VMs), with a
real salt-master (the demo's, see tests/harness/demo.py) and the test hypervisor's
minions.  Reports each pass's wall time, the time per VM and the speed-up over the loop.

Usage (after `make demo` or `make test` installed things):
    /var/tmp/vmops/venv/bin/python bench/rotate.py --vms 10 --batches 1,2,5
Prints a table and writes $VMOPS_HOME/bench-rotate.json.
"""

import argparse
import json
import os
import pathlib
import subprocess
import sys
import time

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent.parent / "tests" / "harness"))
import demo  # noqa: E402  pylint: disable=wrong-import-position,import-error

PREFIX = "brot"


def _parallel(tool, argsets):
    """``salt-run`` (or another tool) once per argument list, all at once; fail loudly."""
    procs = [
        subprocess.Popen(  # noqa: S603
            [str(demo.BIN / tool), "-c", str(demo.DEMO / "etc"), "--out=json", "--log-level=quiet"]
            + list(args),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for args in argsets
    ]
    for proc, args in zip(procs, argsets, strict=True):
        out, err = proc.communicate()
        if proc.returncode != 0:
            raise SystemExit("bench: %s %s failed: %s %s" % (tool, args, out[-2000:], err[-500:]))


def make_vms(names):
    _parallel("salt-run", [("vmops.create", n, "level=staging") for n in names])
    _parallel("salt-run", [("vmops.accept_minion", n, "wait=120") for n in names])
    demo.wait_for(
        lambda: all(
            (
                demo.salt("salt", n, "test.ping", "--timeout=5", check=False, quiet=True)[0] or {}
            ).get(n)
            is True
            for n in names
        ),
        180,
        "the minions of %s" % ", ".join(names),
    )


def cpu_busy():
    """Seconds of CPU time the whole machine spent busy so far (/proc/stat: every state but
    idle and iowait), and the number of CPUs."""
    with open("/proc/stat", encoding="ascii") as stat:
        fields = [int(x) for x in stat.readline().split()[1:]]
        cpus = sum(1 for line in stat if line.startswith("cpu"))
    hz = os.sysconf("SC_CLK_TCK")
    return (sum(fields) - fields[3] - fields[4]) / hz, cpus


def measured(fn, *args):
    """``fn(*args)``'s result, and the CPU seconds the machine was busy meanwhile."""
    before, cpus = cpu_busy()
    out = fn(*args)
    return out, cpu_busy()[0] - before, cpus


def naive(names):
    t0 = time.monotonic()
    for name in names:
        ok, states = demo.orch("orch.replace_vm", {"vm": name})
        if not ok:
            raise SystemExit("bench: replace_vm %s failed: %s" % (name, states))
    return time.monotonic() - t0


def rotation(names, batch):
    t0 = time.monotonic()
    ok, states = demo.orch("orch.rotate", {"vms": names, "batch": batch})
    took = time.monotonic() - t0
    if not ok:
        raise SystemExit("bench: rotate batch %s failed: %s" % (batch, states))
    report = next(iter(states.values()))["changes"]["return"]
    per_vm = sorted(v["duration"] for v in report["vms"].values())
    return took, per_vm


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--vms", type=int, default=10)
    parser.add_argument("--batches", default="1,2,5")
    parser.add_argument("--no-naive", action="store_true", help="skip the loop of replace_vm")
    args = parser.parse_args()
    names = ["%s-%02d" % (PREFIX, i) for i in range(1, args.vms + 1)]
    demo.VM = names[0]
    demo.shutil.rmtree(demo.DEMO, ignore_errors=True)
    ret_port, pub_port = demo.free_port(), demo.free_port()
    demo.write_config(ret_port, pub_port)
    master = demo.start_master()
    results = {"vms": args.vms, "passes": {}}
    try:
        demo.salt("salt-run", "saltutil.sync_all", quiet=True)
        for name in names:
            demo.salt("salt-run", "vmops.delete", name, check=False, quiet=True)
        t0 = time.monotonic()
        make_vms(names)
        results["create_s"] = round(time.monotonic() - t0, 1)
        print("created %d VMs in %.1fs" % (len(names), results["create_s"]), flush=True)
        if not args.no_naive:
            took, cpu, cpus = measured(naive, names)
            results["passes"]["naive loop"] = {
                "wall_s": round(took, 1),
                "cpu_s_per_vm": round(cpu / len(names), 1),
                "cpu_busy_pct": round(100 * cpu / (took * cpus)),
            }
            print("naive loop of orch.replace_vm: %.1fs" % took, flush=True)
        for batch in [b.strip() for b in args.batches.split(",") if b.strip()]:
            (took, per_vm), cpu, cpus = measured(rotation, names, batch)
            results["passes"]["rotate batch %s" % batch] = {
                "wall_s": round(took, 1),
                "cpu_s_per_vm": round(cpu / len(names), 1),
                "cpu_busy_pct": round(100 * cpu / (took * cpus)),
                "per_vm_median_s": per_vm[len(per_vm) // 2],
                "per_vm_max_s": per_vm[-1],
            }
            print("orch.rotate batch %s: %.1fs" % (batch, took), flush=True)
    finally:
        for name in names:
            demo.salt("salt-run", "vmops.delete", name, check=False, quiet=True)
        demo.stop(master)
    base = (results["passes"].get("naive loop") or {}).get("wall_s")
    print(
        "\n%-18s %7s %9s %12s %9s %11s %9s"
        % ("pass", "wall s", "s per VM", "VM median s", "speed-up", "CPU s/VM", "CPU busy")
    )
    for name, row in results["passes"].items():
        row["speedup"] = round(base / row["wall_s"], 2) if base else None
        print(
            "%-18s %7.1f %9.1f %12s %9s %11s %8s%%"
            % (
                name,
                row["wall_s"],
                row["wall_s"] / args.vms,
                row.get("per_vm_median_s", "-"),
                row["speedup"] or "-",
                row["cpu_s_per_vm"],
                row["cpu_busy_pct"],
            )
        )
    out = demo.HOME / ("bench-rotate-%d.json" % args.vms)
    out.write_text(json.dumps(results, indent=1))
    print("written to %s" % out)


if __name__ == "__main__":
    os.environ.setdefault("VMOPS_HOME", "/var/tmp/vmops")
    main()
