"""``salt-run state.orch orch.rotate``: a role replaced batch by batch, end to end.

Real master, local OpenStack, minions started by the test hypervisor; every VM is
replaced by a real ``orch.replace_vm`` of its own (hand-over, highstate, flip, retire).
The decisions (quota, stop on failure, resume) are also in tests/unit/test_rotate.py.
"""

import json
import subprocess
import time
import uuid

import pytest

from tests.conftest import record
from tests.integration.conftest import orch_states, wait_until

pytestmark = pytest.mark.usefixtures("synced")


def _started(salt_run_cli, *args):
    return subprocess.Popen(  # noqa: S603
        salt_run_cli.cmdline(*args),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=dict(salt_run_cli.environ),
    )


def _vms(salt_run_cli, salt_cli, event_listener, salt_master, cleanup, prefix, count, *extra):
    names = ["%s-%d" % (prefix, i) for i in range(1, count + 1)]
    cleanup.extend(names)
    t0 = time.time()
    # made at once, as an operator's shell would (each salt-run is a process of its own)
    created = [
        _started(salt_run_cli, "vmops.create", name, "level=staging", *extra) for name in names
    ]
    for proc in created:
        out, err = proc.communicate(timeout=300)
        assert proc.returncode == 0, (out, err)
    accepted = [
        _started(salt_run_cli, "vmops.accept_minion", name, "wait=60", *extra) for name in names
    ]
    for proc in accepted:
        out, err = proc.communicate(timeout=300)
        assert proc.returncode == 0 and '"accepted": true' in out, (out, err)
    assert event_listener.wait_for_events(
        [(salt_master.id, "salt/minion/%s/start" % n) for n in names], after_time=t0, timeout=90
    ).found_all_events
    # the master's grains cache (what a grain target matches) is filled by each minion's
    # pillar request at start
    wait_until(
        lambda: all(
            salt_run_cli.run("cache.grains", tgt=n).data.get(n, {}).get("level") == "staging"
            for n in names
        ),
        60,
        what="the grains of %s in the master's cache" % ", ".join(names),
    )
    return names


def _orch_rotate(salt_run_cli, pillar, *extra):
    return salt_run_cli.run("state.orch", "orch.rotate", "pillar=%s" % json.dumps(pillar), *extra)


def test_a_role_rotated_by_a_grain_target_stops_on_a_failure_and_resumes(
    salt_run_cli, salt_cli, os_conn, event_listener, salt_master, cleanup, tmp_path
):
    """Three VMs matched by a grain target, two at a time.  The plan (test=True) shows the
    batches and the peak and changes nothing.  In batch 1 the second VM's deploy fails on
    its new server: that replacement rolls back, the first one completes, batch 2 never
    starts, and the report says so.  Fixed and re-run: the same run resumes, the done VM is
    not replaced again, the rest are; the floating IP follows its VM."""
    prefix = "rot%s" % uuid.uuid4().hex[:4]
    names = _vms(salt_run_cli, salt_cli, event_listener, salt_master, cleanup, prefix, 3)
    old = {n: salt_run_cli.run("vmops.show", n).data["id"] for n in names}
    public = os_conn.network.find_network("public")
    fip = os_conn.network.create_ip(floating_network_id=public.id)
    flag = tmp_path / "deploy-fails"
    flag.write_text("")
    # the deploy runs on each new server (a test guest: a process here, its files under
    # $VMOPS_GUEST_DIR): it fails on the second VM while the flag exists
    cmd = '! grep -q \'"name": "%s"\' "$VMOPS_GUEST_DIR/meta.json" || test ! -e %s' % (
        names[1],
        flag,
    )
    try:
        ret = salt_run_cli.run("vmops.flip_floating_ip", fip.floating_ip_address, names[0])
        assert ret.returncode == 0, ret
        pillar = {
            "target": "G@level:staging and %s-*" % prefix,
            "tgt_type": "compound",
            "batch": 2,
            "flavor": "m1.small",
            "deploy": {"cmd": cmd},
        }
        # test=True: the plan, batch by batch, and nothing changes
        ret = _orch_rotate(salt_run_cli, pillar, "test=True")
        assert ret.returncode == 0, ret
        (plan,) = orch_states(ret).values()
        text = plan["comment"]
        assert "would rotate 3 VM(s) on cloud local in 2 batch(es) of up to 2" in text, text
        assert "batch 1: %s, %s; batch 2: %s" % tuple(names) in text, text
        assert "at the peak 2 extra server(s)" in text, text
        assert {n: salt_run_cli.run("vmops.show", n).data["id"] for n in names} == old

        t0 = time.time()
        ret = _orch_rotate(salt_run_cli, pillar)
        assert ret.returncode != 0, ret
        (state,) = orch_states(ret).values()
        report = state["changes"]["return"]
        assert report["done"] == names[:1] and report["rolled_back"] == names[1:2], report
        assert report["untouched"] == names[2:], report
        assert "re-run the same command to resume" in report["comment"]
        for name in names[1:]:  # the rolled-back VM and the untouched one: old, serving
            assert [s.id for s in os_conn.compute.servers(name="^%s$" % name)] == [old[name]]
            assert salt_cli.run("--timeout=10", "test.ping", minion_tgt=name).data is True
        first = report["vms"][names[0]]["new"]
        assert [s.id for s in os_conn.compute.servers(name="^%s$" % names[0])] == [first]
        port = os_conn.network.get_ip(fip.id).port_id
        assert os_conn.network.get_port(port).device_id == first
        run = report["run"]
        stopped = sorted(
            event_listener.get_events([(salt_master.id, "vmops/rotate/%s/*" % run)], after_time=t0),
            key=lambda e: e.stamp,
        )
        assert [e.tag.rsplit("/", 1)[1] for e in stopped][-1] == "stopped"

        flag.unlink()
        t1 = time.time()
        started = time.monotonic()
        ret = _orch_rotate(salt_run_cli, pillar)
        record("rotate: the resumed run (2 VMs, one per batch)", time.monotonic() - started)
        assert ret.returncode == 0, ret
        (state,) = orch_states(ret).values()
        again = state["changes"]["return"]
        assert again["result"] is True and again["run"] == run and again["done"] == names, again
        # the first VM was not replaced a second time
        assert [s.id for s in os_conn.compute.servers(name="^%s$" % names[0])] == [first]
        for name in names:
            servers = list(os_conn.compute.servers(name="^%s$" % name))
            assert len(servers) == 1 and servers[0].id == again["vms"][name]["new"], name
            assert os_conn.compute.find_server(old[name]) is None
            assert salt_run_cli.run("vmops.show", name).data["flavor"] == "m1.small"
            assert salt_cli.run("--timeout=10", "test.ping", minion_tgt=name).data is True
        # the bus heard it: resumed, batch 1 (the VM that failed) before batch 2, then done
        events = sorted(
            event_listener.get_events([(salt_master.id, "vmops/rotate/%s/*" % run)], after_time=t1),
            key=lambda e: e.stamp,
        )
        whats = [(e.tag.rsplit("/", 1)[1], e.data.get("batch"), e.stamp) for e in events]
        assert [w for w, _, _ in whats][0] == "resume" and [w for w, _, _ in whats][-1] == "done"
        second = next(at for w, b, at in whats if w == "batch" and b == 2)
        redone = [at for w, b, at in whats if w == "vm" and b == 1]
        assert len(redone) == 1 and redone[0] <= second
    finally:
        os_conn.network.delete_ip(fip.id, ignore_missing=True)


def test_the_same_command_rotates_ec2_instances(
    salt_run_cli, salt_cli, moto_cloud, event_listener, salt_master, cleanup
):
    """cloud: aws, a list target, the whole role at once ("100%"): each instance replaced
    (EC2's naming: <vm>-new until the cut-over), the old ones terminated, the minions
    answer under their ids."""
    prefix = "roe%s" % uuid.uuid4().hex[:4]
    names = _vms(
        salt_run_cli, salt_cli, event_listener, salt_master, cleanup, prefix, 2, "cloud=aws"
    )
    cleanup.extend("%s-%s" % (n, s) for n in names for s in ("new", "old"))
    old = {n: salt_run_cli.run("vmops.show", n, "cloud=aws").data["id"] for n in names}
    pillar = {"target": ",".join(names), "tgt_type": "list", "batch": "100%", "cloud": "aws"}
    ret = _orch_rotate(salt_run_cli, pillar, "test=True")
    assert ret.returncode == 0, ret
    (plan,) = orch_states(ret).values()
    assert "would rotate 2 VM(s) on cloud aws in 1 batch(es) of up to 2" in plan["comment"]
    ret = _orch_rotate(salt_run_cli, pillar)
    assert ret.returncode == 0, ret
    (state,) = orch_states(ret).values()
    report = state["changes"]["return"]
    assert report["result"] is True and report["done"] == names, report
    ec2 = moto_cloud.client()
    for name in names:
        new = salt_run_cli.run("vmops.show", name, "cloud=aws").data
        assert new["id"] == report["vms"][name]["new"] != old[name]
        gone = ec2.describe_instances(InstanceIds=[old[name]])["Reservations"][0]["Instances"]
        assert gone[0]["State"]["Name"] in ("shutting-down", "terminated")
        assert salt_cli.run("--timeout=10", "test.ping", minion_tgt=name).data is True
