"""Benchmark: the Copr flow's outage window against the parts it cannot avoid.

Runs ``salt-run state.orch orch.replace_vm pillar='{vm: copr-bench, data_volumes: move}'``
N times on the local cloud (Cinder volumes), with a real salt-master (the demo's, see
tests/harness/demo.py), on a VM holding ``--volumes`` data volumes and a floating IP.
Each run moves the volumes from the VM to its replacement in an outage window; the
journal times every part of it.  Reported per run:

* window: from the window's start (after the new server passed highstate and deploy) to
  the health gate that closes it (the length the report and the final event state);
* the unavoidable parts, as issue #13 counts them: detach, attach, the new server's
  cut-over state, the IP move; and the old server's stop state, which the runbook cannot
  skip either (its services stop before their disks go);
* ratio: window / (every detach + every attach + cut-over + flip), the issue's measure;
  the volumes' detaches run at once, then their attaches, so with several volumes the
  window can be shorter than that sum;
* ratio_to_path: window / the critical path (stop + slowest detach + slowest attach +
  cut-over + flip): what is left is the pack's own overhead (journal writes, the health
  gate's reads).

Usage (after `make demo` or `make test` installed things):
    /var/tmp/vmops/venv/bin/python bench/copr_window.py --runs 3 --volumes 2
Prints a table and writes $VMOPS_HOME/bench-copr_window.json.
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

VM = "copr-bench"
ISSUE_PARTS = ("detach", "attach", "cutover", "flip")


def one_run():
    t0 = time.monotonic()
    ok, states = demo.orch("orch.replace_vm", {"vm": VM, "data_volumes": "move"})
    wall = time.monotonic() - t0
    if not ok:
        raise SystemExit(
            "bench: replace_vm failed: %s" % {k: v.get("comment") for k, v in states.items()}
        )
    status, _ = demo.salt("salt-run", "vmops.replace_vm", VM, "step=status", quiet=True)
    window = status["window"]
    parts, ops = window["parts"], window.get("ops") or {}
    # the issue's sum: every detach and attach (each volume's own time), the cut-over
    # state, the flip
    issue = sum(ops.get(p, parts.get(p, 0)) for p in ("detach", "attach")) + sum(
        parts.get(p, 0) for p in ("cutover", "flip")
    )
    # the critical path: the old server's stop state, the slowest detach and attach (they
    # run at once), the cut-over state, the flip
    path = sum(parts.get(p, 0) for p in ("stop",) + ISSUE_PARTS)
    return {
        "wall": round(wall, 2),
        "window": window["length"],
        "parts": parts,
        "ops": ops,
        "unavoidable": round(issue, 2),
        "critical_path": round(path, 2),
        "ratio": round(window["length"] / issue, 3),
        "ratio_to_path": round(window["length"] / path, 3),
    }


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--volumes", type=int, default=2)
    args = parser.parse_args()
    demo.VM = VM
    demo.shutil.rmtree(demo.DEMO, ignore_errors=True)
    ret_port, pub_port = demo.free_port(), demo.free_port()
    demo.write_config(ret_port, pub_port)
    master = demo.start_master()
    results, vols = [], []
    try:
        demo.salt("salt-run", "saltutil.sync_all", quiet=True)
        existing, _ = demo.salt("salt-run", "vmops.show", VM, check=False, quiet=True)
        if isinstance(existing, dict) and existing.get("id"):
            demo.salt("salt-run", "vmops.delete", VM, quiet=True)
        ok, states = demo.orch("orch.create_vm", {"vm": VM})
        if not ok:
            raise SystemExit("bench: could not create %s: %s" % (VM, states))
        for i in range(args.volumes):
            name = "%s-data%d" % (VM, i)
            demo.salt("salt-run", "salt.cmd", "vmops.volume_create", name, "size=1", quiet=True)
            vols.append(name)
            demo.salt("salt-run", "salt.cmd", "vmops.volume_attach", VM, name, quiet=True)
        fip, _ = demo.salt("salt-run", "salt.cmd", "vmops.floating_ip_allocate", quiet=True)
        demo.salt("salt-run", "vmops.flip_floating_ip", fip["address"], VM, quiet=True)
        for i in range(args.runs):
            results.append(one_run())
            print("run %d: %s" % (i + 1, json.dumps(results[-1])), flush=True)
    finally:
        demo.salt("salt-run", "vmops.delete", VM, check=False, quiet=True)
        for name in vols:
            for _ in range(30):  # the server's deletion detaches them
                data, _ = demo.salt(
                    "salt-run", "salt.cmd", "vmops.volume_delete", name, check=False, quiet=True
                )
                if isinstance(data, dict) and data.get("deleted"):
                    break
                time.sleep(2)
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
    summary = {
        "runs": len(results),
        "volumes": args.volumes,
        "window_median_s": statistics.median(r["window"] for r in results),
        "unavoidable_median_s": statistics.median(r["unavoidable"] for r in results),
        "ratio_median": statistics.median(r["ratio"] for r in results),
        "critical_path_median_s": statistics.median(r["critical_path"] for r in results),
        "ratio_to_path_median": statistics.median(r["ratio_to_path"] for r in results),
        "results": results,
    }
    out = demo.HOME / "bench-copr_window.json"
    out.write_text(json.dumps(summary, indent=1))
    print(
        "\ncopr window, %d runs, %d volumes: window %.2fs (median); every detach+attach+"
        "cutover+flip %.2fs: ratio %.3f; critical path (stop, slowest detach, slowest attach, "
        "cutover, flip) %.2fs: ratio %.3f"
        % (
            len(results),
            args.volumes,
            summary["window_median_s"],
            summary["unavoidable_median_s"],
            summary["ratio_median"],
            summary["critical_path_median_s"],
            summary["ratio_to_path_median"],
        )
    )
    print("written to %s" % out)


if __name__ == "__main__":
    os.environ.setdefault("VMOPS_HOME", "/var/tmp/vmops")
    main()
