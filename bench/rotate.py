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
            took = naive(names)
            results["passes"]["naive loop"] = {"wall_s": round(took, 1)}
            print("naive loop of orch.replace_vm: %.1fs" % took, flush=True)
        for batch in [b.strip() for b in args.batches.split(",") if b.strip()]:
            took, per_vm = rotation(names, batch)
            results["passes"]["rotate batch %s" % batch] = {
                "wall_s": round(took, 1),
                "per_vm_median_s": per_vm[len(per_vm) // 2],
                "per_vm_max_s": per_vm[-1],
            }
            print("orch.rotate batch %s: %.1fs" % (batch, took), flush=True)
    finally:
        for name in names:
            demo.salt("salt-run", "vmops.delete", name, check=False, quiet=True)
        demo.stop(master)
    base = (results["passes"].get("naive loop") or {}).get("wall_s")
    print("\n%-22s %8s %10s %12s %9s" % ("pass", "wall s", "s per VM", "VM median s", "speed-up"))
    for name, row in results["passes"].items():
        row["speedup"] = round(base / row["wall_s"], 2) if base else None
        print(
            "%-22s %8.1f %10.1f %12s %9s"
            % (
                name,
                row["wall_s"],
                row["wall_s"] / args.vms,
                row.get("per_vm_median_s", "-"),
                row["speedup"] or "-",
            )
        )
    out = demo.HOME / ("bench-rotate-%d.json" % args.vms)
    out.write_text(json.dumps(results, indent=1))
    print("written to %s" % out)


if __name__ == "__main__":
    os.environ.setdefault("VMOPS_HOME", "/var/tmp/vmops")
    main()
